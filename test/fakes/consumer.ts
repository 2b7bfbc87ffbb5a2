/**
 * Loopback consumers for the `http` gate: tiny servers on 127.0.0.1 that report a fingerprint the way
 * `keyrotor/consumer` does (or misbehave on purpose), plus an address nobody listens on.
 *
 *   const c = await startFakeConsumer(stuck(oldFp));            // never switches
 *   const c = await startFakeConsumer(switchLate(oldFp, () => newFp, 500));
 *   const c = await startFakeConsumer(flap(oldFp, newFp));       // alternates per request
 *   const c = await startFakeConsumer(garbage());                // 200 with an HTML page
 *   const c = await startFakeConsumer(hang());                   // accepts, never answers
 *   const url = await unreachableUrl();                          // connection refused
 *   c.url, c.requests, c.answers, c.behave(other), await c.close()
 *
 * Fakes only ever hold fingerprints, never key values. Also: a GateContext builder and a poll loop
 * that drives a gate like the confirm stage does, for the gate tests.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import type { GateContext, GateObservation, HealthGate } from '../../src/core/ports.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { Secret } from '../../src/core/secret.ts';
import { CANARY } from '../canary.ts';

export type Answer =
  | { fingerprint: string | null; format?: 'json' | 'text' }
  | { status: number; body?: string; contentType?: string }
  | { hang: true };

/** n = 1-based request number */
export type Behaviour = (n: number) => Answer;

export interface FakeConsumer {
  /** `http(s)://127.0.0.1:<port>/keyrotor/fingerprint` */
  url: string;
  requests: number;
  /** what was answered, in order (hangs are not listed) */
  answers: { at: number; fingerprint?: string | null; status: number }[];
  /** when it first answered with this fingerprint */
  firstServed(fp: string): number | undefined;
  behave(b: Behaviour): void;
  close(): Promise<void>;
}

export const stuck =
  (fp: string | null): Behaviour =>
  () => ({ fingerprint: fp });

/** `initial` until `next()` yields another fingerprint, then that one once `delayMs` have passed since it appeared */
export function switchLate(
  initial: string | null | (() => string | null),
  next: () => string | null,
  delayMs: number,
): Behaviour {
  let seen: { fp: string; at: number } | undefined;
  return () => {
    const from = typeof initial === 'function' ? initial() : initial;
    const to = next();
    if (to && to !== from) {
      if (seen?.fp !== to) seen = { fp: to, at: Date.now() };
      if (Date.now() - seen.at >= delayMs) return { fingerprint: to };
    }
    return { fingerprint: from };
  };
}

export const flap =
  (a: string | null, b: string | null): Behaviour =>
  (n) => ({ fingerprint: n % 2 === 1 ? a : b });
export const garbage = (): Behaviour => () => ({
  status: 200,
  body: '<html><body>It works!</body></html>',
  contentType: 'text/html',
});
export const hang = (): Behaviour => () => ({ hang: true });

export interface FakeConsumerOptions {
  tls?: { key: string; cert: string };
  path?: string;
  /** answer 401 unless these request headers carry exactly these values */
  requireHeaders?: Record<string, string>;
}

export async function startFakeConsumer(behaviour: Behaviour, opts: FakeConsumerOptions = {}): Promise<FakeConsumer> {
  let b = behaviour;
  const sockets = new Set<Socket>();
  const answers: FakeConsumer['answers'] = [];
  const first = new Map<string, number>();
  const state = { requests: 0 };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    state.requests += 1;
    for (const [h, v] of Object.entries(opts.requireHeaders ?? {})) {
      if (req.headers[h.toLowerCase()] !== v) {
        answers.push({ at: Date.now(), status: 401 });
        res.writeHead(401, { 'content-type': 'text/plain' });
        res.end('unauthorized');
        return;
      }
    }
    const a = b(state.requests);
    if ('hang' in a) return; // keep the socket open, never answer
    if ('status' in a) {
      answers.push({ at: Date.now(), status: a.status });
      res.writeHead(a.status, { 'content-type': a.contentType ?? 'text/plain' });
      res.end(a.body ?? '');
      return;
    }
    const status = a.fingerprint ? 200 : 503;
    answers.push({ at: Date.now(), fingerprint: a.fingerprint, status });
    if (a.fingerprint && !first.has(a.fingerprint)) first.set(a.fingerprint, Date.now());
    if (a.format === 'text') {
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(a.fingerprint ? `${a.fingerprint}\n` : '');
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(
      JSON.stringify({
        format: 'keyrotor-fingerprint/1',
        fingerprint: a.fingerprint,
        loadedAt: new Date().toISOString(),
      }),
    );
  };
  const server: Server = opts.tls
    ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, handle)
    : createHttpServer(handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.unref();
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}${opts.path ?? '/keyrotor/fingerprint'}`,
    get requests() {
      return state.requests;
    },
    answers,
    firstServed: (fp) => first.get(fp),
    behave(nb) {
      b = nb;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback URL on a port that was just free and is closed again: connection refused. */
export async function unreachableUrl(): Promise<string> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return `http://127.0.0.1:${port}/keyrotor/fingerprint`;
}

// ------------------------------------------------------------------ gate test helpers

/** the values behind OLD_FP / NEW_FP (contain the canary: they must never show up in output) */
export const OLD_VALUE = `${CANARY}-consumer-old`;
export const NEW_VALUE = `${CANARY}-consumer-new`;
export const OLD_FP = fingerprint(OLD_VALUE);
export const NEW_FP = fingerprint(NEW_VALUE);

/** A GateContext as the confirm stage builds it. */
export function gateContext(over: Partial<GateContext> = {}): GateContext {
  return {
    rotationId: 'rot-20261123t151500z-0a1b2c3d',
    keyName: 'app',
    newKeyId: 'key_new',
    oldKeyId: 'key_old',
    newFingerprint: NEW_FP,
    oldFingerprint: OLD_FP,
    promotedAt: new Date().toISOString(),
    readNewSecret: async () => Secret.of(NEW_VALUE),
    signal: new AbortController().signal,
    ...over,
  };
}

export interface PollOutcome {
  outcome: 'pass' | 'rejected' | 'timeout';
  observations: string[];
  last: string;
  ms: number;
}

/** Poll a gate like the confirm stage does (interval, x1.5 backoff up to 4x, absolute deadline). */
export async function pollGate(
  gate: HealthGate,
  ctx: GateContext,
  o: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<PollOutcome> {
  const t0 = Date.now();
  const deadline = t0 + (o.timeoutMs ?? gate.timeoutMs);
  const interval = o.intervalMs ?? gate.intervalMs;
  let delay = interval;
  const observations: string[] = [];
  for (;;) {
    let r: GateObservation;
    try {
      r = await gate.check(ctx);
    } catch (e) {
      r = { pass: false, observation: `error: ${(e as Error).message}` };
    }
    observations.push(r.observation);
    const done = (outcome: PollOutcome['outcome']): PollOutcome => ({
      outcome,
      observations,
      last: r.observation,
      ms: Date.now() - t0,
    });
    if (r.pass) return done('pass');
    if (r.final) return done('rejected');
    const left = deadline - Date.now();
    if (left <= 0) return done('timeout');
    await new Promise((res) => setTimeout(res, Math.min(delay, left)));
    delay = Math.min(delay * 1.5, interval * 4);
  }
}
