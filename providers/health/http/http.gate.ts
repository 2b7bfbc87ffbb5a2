/**
 * The `http` gate: polls consumer endpoints that report the fingerprint of the key they have loaded
 * (format in src/core/fingerprint-format.ts) and passes once every endpoint reports the new key's fingerprint in
 * `consecutive` rounds in a row.
 *
 * - TLS is always verified (a private CA can be trusted with `caFile`); redirects are not followed.
 * - Header values come from environment variables named in the config, resolved when the gate is
 *   built (a missing one is a configuration error before anything changes) and never logged.
 * - A consumer's answer is never echoed: observations say what was seen in our own words, with the
 *   URL reduced to origin + path (a query string may carry a token).
 */
import http from 'node:http';
import https from 'node:https';
import type { GateContext, GateObservation, HealthGate } from '../../../src/core/ports.ts';
import type { Secret } from '../../../src/core/secret.ts';
import { scrubText } from '../../../src/core/secret.ts';
import { MAX_FINGERPRINT_BODY, parseFingerprintBody } from '../../../src/core/fingerprint-format.ts';
import type { HttpGateConfig } from './http.schema.ts';

export interface HttpGateOptions {
  cfg: HttpGateConfig;
  name: string;
  /** resolved header values (from the environment) */
  headers: Record<string, Secret>;
  /** PEM text of `caFile` */
  ca?: string | undefined;
  /**
   * Where the streak of `consecutive` rounds is kept between checks made by different processes (a
   * parked rotation is continued by any worker). Without it, memory only.
   */
  memory?: StreakMemory | undefined;
}

export interface StreakMemory {
  load(rotationId: string): Promise<number | undefined>;
  save(rotationId: string, streak: number): Promise<void>;
}

/** What one endpoint answered in one round. */
export type EndpointProbe =
  { url: string; kind: 'fingerprint'; fingerprint: string } | { url: string; kind: 'problem'; detail: string };

/** `https://host:port/path` without credentials, query or fragment. */
export function displayUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|ERR_SSL|EPROTO/;

function describeError(e: unknown, timeoutMs: number): string {
  const err = e as NodeJS.ErrnoException & { code?: string };
  const code = typeof err?.code === 'string' ? err.code : undefined;
  if (code === 'KEYROTOR_TIMEOUT') return `no answer within ${timeoutMs}ms`;
  if (code === 'KEYROTOR_TOO_LARGE') return `answer larger than ${MAX_FINGERPRINT_BODY} bytes`;
  if (code === 'ABORT_ERR') return 'aborted';
  if (code === 'ECONNREFUSED') return 'unreachable (connection refused)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `unreachable (host not found: ${code})`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'connection reset before an answer';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT') return `unreachable (${code})`;
  if (code && TLS_CODES.test(code)) return `TLS verification failed (${code})`;
  const msg = e instanceof Error ? e.message : String(e);
  return `request failed (${code ?? scrubText(msg).slice(0, 120)})`;
}

/** One GET; resolves with what the endpoint reported (never rejects). */
export function probeEndpoint(
  url: string,
  opts: { headers: Record<string, string>; timeoutMs: number; ca?: string | undefined; signal: AbortSignal },
): Promise<EndpointProbe> {
  const shown = displayUrl(url);
  return new Promise<EndpointProbe>((resolve) => {
    let settled = false;
    const done = (p: EndpointProbe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal.removeEventListener('abort', onAbort);
      resolve(p);
    };
    const problem = (detail: string) => done({ url: shown, kind: 'problem', detail });
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return problem('invalid URL');
    }
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, {
      method: 'GET',
      agent: false, // one connection per probe: nothing lingers between rounds
      headers: { accept: 'application/json, text/plain;q=0.9', 'user-agent': 'keyrotor-http-gate/1', ...opts.headers },
      ...(u.protocol === 'https:' ? { rejectUnauthorized: true, ...(opts.ca ? { ca: opts.ca } : {}) } : {}),
    });
    const fail = (code: string) => {
      problem(describeError({ code }, opts.timeoutMs));
      req.destroy();
    };
    const timer = setTimeout(() => fail('KEYROTOR_TIMEOUT'), opts.timeoutMs);
    const onAbort = () => fail('ABORT_ERR');
    if (opts.signal.aborted) onAbort();
    else opts.signal.addEventListener('abort', onAbort, { once: true });

    req.on('error', (e) => problem(describeError(e, opts.timeoutMs)));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_FINGERPRINT_BODY) {
          fail('KEYROTOR_TOO_LARGE');
          res.destroy();
          return;
        }
        chunks.push(c);
      });
      res.on('error', (e) => problem(describeError(e, opts.timeoutMs)));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const fp = parseFingerprintBody(body);
        if (status >= 300 && status < 400) return problem(`HTTP ${status} (redirects are not followed)`);
        if (status === 503 && fp === undefined) return problem('HTTP 503 (no key loaded yet?)');
        if (status !== 200) return problem(`HTTP ${status}`);
        if (fp === undefined) {
          const type = String(res.headers['content-type'] ?? 'none')
            .split(';')[0]!
            .slice(0, 40);
          return problem(`answered something that is not a fingerprint (${size} bytes, content-type ${type})`);
        }
        done({ url: shown, kind: 'fingerprint', fingerprint: fp });
      });
    });
    req.end();
  });
}

function describe(p: EndpointProbe, ctx: GateContext): string {
  if (p.kind === 'problem') return `${p.url}: ${p.detail}`;
  if (p.fingerprint === ctx.newFingerprint) return `${p.url}: new key`;
  if (ctx.oldFingerprint && p.fingerprint === ctx.oldFingerprint) return `${p.url}: still the old key ${p.fingerprint}`;
  return `${p.url}: an unknown key ${p.fingerprint}`;
}

export function createHttpGateImpl(o: HttpGateOptions): HealthGate {
  const { cfg } = o;
  /** rounds in a row in which every endpoint reported the new key, per rotation (in memory, and in
   *  `o.memory` when given: a parked rotation continued by another process keeps counting; without
   *  it a new process starts counting again, which only ever makes the gate stricter) */
  const streaks = new Map<string, number>();

  return {
    type: 'http',
    name: o.name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx: GateContext): Promise<GateObservation> {
      const headers: Record<string, string> = {};
      for (const [h, v] of Object.entries(o.headers)) headers[h] = v.reveal();
      const probes = await Promise.all(
        cfg.urls.map((url) =>
          probeEndpoint(url, { headers, timeoutMs: cfg.requestTimeout, ca: o.ca, signal: ctx.signal }),
        ),
      );
      const onNew = probes.filter((p) => p.kind === 'fingerprint' && p.fingerprint === ctx.newFingerprint).length;
      const all = onNew === probes.length;
      const before = streaks.get(ctx.rotationId) ?? (await o.memory?.load(ctx.rotationId)) ?? 0;
      const streak = all ? before + 1 : 0;
      streaks.set(ctx.rotationId, streak);
      if (o.memory && cfg.consecutive > 1 && streak !== before) await o.memory.save(ctx.rotationId, streak);
      if (all && streak >= cfg.consecutive) {
        return {
          pass: true,
          observation: `all ${probes.length} endpoint(s) report the new key ${ctx.newFingerprint} (${streak} round(s) in a row)`,
        };
      }
      if (all) {
        return {
          pass: false,
          observation: `all ${probes.length} endpoint(s) report the new key ${ctx.newFingerprint}: ${streak}/${cfg.consecutive} rounds in a row`,
        };
      }
      const lagging = probes
        .filter((p) => !(p.kind === 'fingerprint' && p.fingerprint === ctx.newFingerprint))
        .map((p) => describe(p, ctx));
      const text = `${onNew}/${probes.length} endpoint(s) report the new key ${ctx.newFingerprint}; ${lagging.join('; ')}`;
      return { pass: false, observation: text.length > 600 ? `${text.slice(0, 597)}...` : text };
    },
  };
}
