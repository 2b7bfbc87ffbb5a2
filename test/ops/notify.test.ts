/**
 * Webhook notifications against a loopback receiver (real fetch over HTTP): retry with backoff,
 * give-up rules, Slack body, headers from env, bounded drain, and a slow receiver that must not delay
 * a real rotation's result. The durable outbox: a CLI killed (SIGKILL) while a delivery is pending and
 * a receiver that was down are delivered by the next run, once, with the same Idempotency-Key.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createNotifier } from '../../src/app/notify/index.ts';
import { webhookConfigSchema, type WebhookConfig } from '../../src/app/notify/schema.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, type KeyResult } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { flushObservers } from '../../src/app/observers.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { CLI, LOCAL_CONFIG, runCli, workspace, childEnv } from '../entrypoints/cli-helpers.ts';

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
}
type Answer = number | 'hold' | { status: number; headers: Record<string, string> };

interface Receiver {
  url: string;
  received: Received[];
  /** answers for the next requests, in order; then 200 */
  answers: Answer[];
  held: ServerResponse[];
  release(status?: number): void;
  close(): Promise<void>;
}

const receivers: Receiver[] = [];
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

async function startReceiver(answers: Answer[] = []): Promise<Receiver> {
  const r: Receiver = {
    url: '',
    received: [],
    answers,
    held: [],
    release(status = 200) {
      for (const res of r.held.splice(0)) res.writeHead(status).end();
    },
    close: () =>
      new Promise<void>((resolve) => {
        r.release();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      r.received.push({ headers: req.headers, body });
      capture('webhook-body.json', body);
      const a = r.answers.shift() ?? 200;
      if (a === 'hold') r.held.push(res);
      else if (typeof a === 'number') res.writeHead(a).end(a >= 400 ? 'nope' : 'ok');
      else res.writeHead(a.status, a.headers).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/T000/SECRETPATH`;
  receivers.push(r);
  return r;
}

const hook = (o: Record<string, unknown>): WebhookConfig => webhookConfigSchema.parse(o);

const rolledBack: KeyResult = {
  key: 'app',
  rotationId: 'rot-20261123t120000z-0badc0de',
  outcome: 'rolled_back',
  oldKeyId: 'key_old',
  newKeyId: 'key_new',
  stage: 'verify',
  error: {
    code: 'KEY_INVALID',
    message: 'the new key key_new does not work at the issuer',
    stage: 'verify',
    retryable: false,
  },
  startedAt: '2026-11-23T12:00:00.000Z',
  finishedAt: '2026-11-23T12:00:05.000Z',
};

function logSink() {
  const lines: string[] = [];
  const logger = {
    debug: (o: object, m?: string) => void lines.push(`${m} ${JSON.stringify(o)}`),
    info: (o: object, m?: string) => void lines.push(`${m} ${JSON.stringify(o)}`),
    warn: (o: object, m?: string) => void lines.push(`${m} ${JSON.stringify(o)}`),
    error: (o: object, m?: string) => void lines.push(`${m} ${JSON.stringify(o)}`),
    child: () => logger,
  };
  return { logger, lines };
}

describe('webhook notifications', () => {
  it('a receiver that fails twice then succeeds gets the generic JSON three times; headers from env; the URL is never logged', async () => {
    const rx = await startReceiver([500, 503]);
    const { logger, lines } = logSink();
    const n = createNotifier({
      webhooks: [
        hook({ url: rx.url, headersFromEnv: { Authorization: 'HOOK_AUTH' }, backoff: '20ms', name: 'ops-hook' }),
      ],
      env: { HOOK_AUTH: 'Bearer hook-token-1' },
      logger,
      actor: 'cli',
      host: 'runner-1',
    });
    void n.onResult!(rolledBack);
    expect(n.pending).toBe(1);
    expect(await n.drain(10_000)).toEqual({ delivered: 1, failed: 0, abandoned: 0 });
    expect(rx.received).toHaveLength(3);
    const bodies = rx.received.map((x) => JSON.parse(x.body) as Record<string, unknown>);
    expect(new Set(rx.received.map((x) => x.body)).size).toBe(1); // the same payload each time
    expect(bodies[0]).toMatchObject({
      source: 'keyrotor',
      event: 'rolled_back',
      events: ['rolled_back'],
      key: 'app',
      rotationId: rolledBack.rotationId,
      outcome: 'rolled_back',
      oldKeyId: 'key_old',
      newKeyId: 'key_new',
      stage: 'verify',
      error: { code: 'KEY_INVALID', stage: 'verify' },
      host: 'runner-1',
      actor: 'cli',
      text: expect.stringMatching(/^keyrotor: app ROLLED BACK .* at verify: KEY_INVALID/),
    });
    expect(rx.received[0]!.headers.authorization).toBe('Bearer hook-token-1');
    expect(rx.received[0]!.headers['content-type']).toBe('application/json');
    const logged = lines.join('\n');
    expect(logged).toMatch(/notification delivered/);
    expect(logged).not.toContain('SECRETPATH');
    expect(logged).not.toContain('hook-token-1');
  });

  it('Slack format: { text, blocks } with leftovers; a leaked success goes to a hook that wants leaked', async () => {
    const rx = await startReceiver();
    const n = createNotifier({
      webhooks: [hook({ url: rx.url, format: 'slack', on: ['leaked'] })],
      logger: silentLogger(),
      host: 'h',
    });
    void n.onResult!({ ...rolledBack, outcome: 'rotated', error: undefined, leaked: true, oldKeyLastUsedAt: null }); // leaked: sent
    void n.onResult!({ ...rolledBack, outcome: 'rotated', error: undefined }); // plain success: not asked for
    void n.onResult!({ ...rolledBack, outcome: 'needs_attention', leftovers: ['delete <key_old> by hand'] }); // not asked for either
    await n.drain(5000);
    expect(rx.received).toHaveLength(1);
    const b = JSON.parse(rx.received[0]!.body) as {
      text: string;
      blocks: Array<{ type: string; text?: { text: string } }>;
    };
    expect(b.text).toMatch(/keyrotor: LEAKED key app rotated: key_old → key_new/);
    expect(b.blocks[0]!.type).toBe('section');
    expect(b.blocks[0]!.text!.text).toMatch(/old key last used: never/);

    const rx2 = await startReceiver();
    const n2 = createNotifier({
      webhooks: [hook({ url: rx2.url, format: 'slack' })],
      logger: silentLogger(),
      host: 'h',
    });
    void n2.onResult!({ ...rolledBack, outcome: 'needs_attention', leftovers: ['delete <key_old> & check'] });
    await n2.drain(5000);
    const b2 = JSON.parse(rx2.received[0]!.body) as { blocks: Array<{ text?: { text: string } }> };
    expect(b2.blocks[0]!.text!.text).toContain('• delete &lt;key_old&gt; &amp; check');
  });

  it('a 4xx answer is not retried; attempts are bounded; Retry-After is honoured', async () => {
    const rx = await startReceiver([404]);
    const n = createNotifier({ webhooks: [hook({ url: rx.url, backoff: '10ms' })], logger: silentLogger() });
    void n.onResult!(rolledBack);
    expect(await n.drain(5000)).toMatchObject({ delivered: 0, failed: 1 });
    expect(rx.received).toHaveLength(1);

    const rx2 = await startReceiver([500, 500, 500, 500]);
    const n2 = createNotifier({
      webhooks: [hook({ url: rx2.url, backoff: '10ms', attempts: 3 })],
      logger: silentLogger(),
    });
    void n2.onResult!(rolledBack);
    expect(await n2.drain(5000)).toMatchObject({ delivered: 0, failed: 1 });
    expect(rx2.received).toHaveLength(3);

    const rx3 = await startReceiver([{ status: 429, headers: { 'retry-after': '0' } }]);
    const n3 = createNotifier({ webhooks: [hook({ url: rx3.url, backoff: '10ms' })], logger: silentLogger() });
    void n3.onResult!(rolledBack);
    expect(await n3.drain(5000)).toMatchObject({ delivered: 1 });
    expect(rx3.received).toHaveLength(2);
  });

  it('an unreachable webhook is retried, then given up; drain is bounded and abandons what is left', async () => {
    const rx = await startReceiver();
    const dead = rx.url;
    await rx.close();
    receivers.length = 0;
    const n = createNotifier({ webhooks: [hook({ url: dead, backoff: '10ms', attempts: 2 })], logger: silentLogger() });
    void n.onResult!(rolledBack);
    expect(await n.drain(5000)).toMatchObject({ delivered: 0, failed: 1 });

    const hold = await startReceiver(['hold']);
    const n2 = createNotifier({ webhooks: [hook({ url: hold.url, timeout: '1m' })], logger: silentLogger() });
    void n2.onResult!(rolledBack);
    const report = await n2.drain(100);
    expect(report).toMatchObject({ delivered: 0, abandoned: 1 });
    expect(n2.pending).toBe(0);
  });

  it('a missing env var for the URL or a header is a config error (exit 2) before anything runs', () => {
    expect(() =>
      createNotifier({ webhooks: [hook({ urlEnv: 'SLACK_URL' })], env: {}, logger: silentLogger() }),
    ).toThrow(expect.objectContaining({ code: 'CONFIG_ENV_MISSING', message: expect.stringMatching(/SLACK_URL/) }));
    expect(() =>
      createNotifier({
        webhooks: [hook({ url: 'https://x.example/h', headersFromEnv: { 'X-Token': 'TOK' } })],
        env: {},
        logger: silentLogger(),
      }),
    ).toThrow(expect.objectContaining({ code: 'CONFIG_ENV_MISSING' }));
    expect(() => hook({ url: 'https://x.example/h', urlEnv: 'A' })).toThrow(/exactly one of url or urlEnv/);
  });

  it('a slow receiver does not delay the rotation result; flushObservers delivers it afterwards', async () => {
    const rx = await startReceiver(['hold']);
    const dir = tempDir('ops-notify-slow');
    const cfg = parseConfig(LOCAL_CONFIG, path.join(dir, 'rotation.config.yaml'), {});
    const stateStore = createFileStateStore(cfg.stateDir);
    const notifier = createNotifier({
      webhooks: [hook({ url: rx.url, on: ['rotated', 'rolled_back'] })],
      logger: silentLogger(),
    });
    const base = { config: cfg, stateStore, logger: silentLogger(), env: {}, now: true, observers: [notifier] };
    // the receiver holds every request open until released: if onResult waited for it, this would hang
    const r = await rotateKey(cfg.keys[0]!, base);
    expect(r.outcome).toBe('rotated');
    expect(notifier.pending).toBe(1);
    // the request is (or is about to be) at the receiver, unanswered
    await new Promise<void>((resolve) => {
      const t = setInterval(() => rx.received.length && (clearInterval(t), resolve()), 5);
    });
    expect(rx.held).toHaveLength(1);
    rx.release(204);
    expect(await flushObservers([notifier], 10_000)).toEqual({ delivered: 1, failed: 0, abandoned: 0 });
    const body = rx.received[0]!.body;
    expect(JSON.parse(body)).toMatchObject({
      outcome: 'rotated',
      key: 'demo',
      rotationId: r.rotationId,
      newKeyId: r.newKeyId,
    });
    expect(body).not.toContain(CANARY);
  });
});

const until = (cond: () => boolean, ms = 30_000) =>
  new Promise<void>((resolve, reject) => {
    const end = Date.now() + ms;
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      } else if (Date.now() > end) {
        clearInterval(t);
        reject(new Error('timed out waiting'));
      }
    }, 10);
  });

describe('durable webhook outbox', () => {
  it('the CLI is killed (SIGKILL) while a delivery is pending: the next run delivers it exactly once, same body and Idempotency-Key', async () => {
    const rx = await startReceiver(['hold']); // the first request is never answered
    const cfg = `${LOCAL_CONFIG}notifications:\n  - { name: ops, urlEnv: HOOK_URL, on: [rotated], timeout: 1m }\n`;
    const dir = workspace(cfg, 'ops-notify-outbox-kill');
    const outboxDir = path.join(dir, '.keyrotor', 'outbox');
    const entries = () => readdirSync(outboxDir).filter((n) => n.endsWith('.json'));
    const child = spawn(process.execPath, [CLI, 'rotate', '--now', 'demo'], {
      cwd: dir,
      env: childEnv({ HOOK_URL: rx.url }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_c, sig) => resolve(sig)));
    await until(() => rx.received.length === 1); // the delivery is at the receiver, unanswered
    expect(entries()).toHaveLength(1); // written before it was sent
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    capture('outbox-kill-rotate.out', out);
    const stored = readFileSync(path.join(outboxDir, entries()[0]!), 'utf8');
    capture('outbox-entry.json', stored);
    expect(stored).not.toContain('SECRETPATH'); // the URL is resolved from the config at delivery time
    expect(stored).not.toContain(CANARY);
    expect(JSON.parse(stored)).toMatchObject({
      format: 'keyrotor-outbox/1',
      entry: { webhook: 0, webhookName: 'ops' },
    });

    // the next run of the CLI (here `resume`, which has nothing to resume) delivers the pending entry
    const next = await runCli(['resume'], { cwd: dir, env: { HOOK_URL: rx.url }, name: 'outbox-resume' });
    expect(next.code, next.stderr).toBe(0);
    expect(rx.received).toHaveLength(2);
    const [first, second] = rx.received as [Received, Received];
    expect(second.body).toBe(first.body);
    const key = second.headers['idempotency-key'];
    expect(key).toMatch(/^rot-\d{8}t\d{6}z-[0-9a-f]{8}\.rotated\.w0\.[0-9a-f]{8}$/);
    expect(first.headers['idempotency-key']).toBe(key);
    expect(JSON.parse(second.body)).toMatchObject({ key: 'demo', outcome: 'rotated', idempotencyKey: key });
    expect(next.stderr).toMatch(/delivering a notification left pending by an earlier run/);
    expect(next.stderr).toMatch(/notification delivered/);
    expect(next.stderr).not.toContain('SECRETPATH');
    expect(entries()).toEqual([]);

    // and never again
    const again = await runCli(['resume'], { cwd: dir, env: { HOOK_URL: rx.url }, name: 'outbox-resume-2' });
    expect(again.code, again.stderr).toBe(0);
    expect(rx.received).toHaveLength(2);
    for (const r of rx.received) expect(r.body).not.toContain(CANARY);
    expect(out + next.stderr + next.stdout).not.toContain(CANARY);
  });

  it('a receiver that is down keeps the entry pending; the next notifier delivers it to the URL the config names now; limits drop entries with a warning', async () => {
    const dir = tempDir('ops-notify-outbox-down');
    const store = createFileStateStore(dir);
    const down = await startReceiver();
    const deadUrl = down.url;
    await down.close();
    receivers.length = 0;
    const { logger, lines } = logSink();
    const n1 = createNotifier({
      webhooks: [hook({ name: 'ops', url: deadUrl, backoff: '10ms', attempts: 2 })],
      logger,
      outbox: store,
    });
    await n1.onResult!(rolledBack);
    expect(await n1.drain(5000)).toMatchObject({ delivered: 0, failed: 1 });
    const pending = await store.outboxPending!();
    expect(pending).toEqual([expect.objectContaining({ webhook: 0, webhookName: 'ops', attempts: 2 })]);
    expect(pending[0]!.body).not.toContain('SECRETPATH');
    expect(lines.join('\n')).toMatch(/stays in the outbox for the next run/);

    const rx = await startReceiver();
    const n2 = createNotifier({ webhooks: [hook({ name: 'ops', url: rx.url })], logger, outbox: store });
    expect(await n2.drain(5000)).toMatchObject({ delivered: 1, failed: 0 });
    expect(rx.received).toHaveLength(1);
    expect(rx.received[0]!.headers['idempotency-key']).toBe(pending[0]!.id);
    expect(JSON.parse(rx.received[0]!.body)).toMatchObject({
      rotationId: rolledBack.rotationId,
      outcome: 'rolled_back',
    });
    expect(await store.outboxPending!()).toEqual([]);
    const n3 = createNotifier({ webhooks: [hook({ name: 'ops', url: rx.url })], logger, outbox: store });
    expect(await n3.drain(5000)).toMatchObject({ delivered: 0 });
    expect(rx.received).toHaveLength(1);

    // limits: too many attempts, too old, a webhook no longer configured: dropped, never sent
    const base = { webhookName: 'ops', body: '{}', createdAt: new Date().toISOString(), attempts: 0, webhook: 0 };
    await store.outboxAdd!({ ...base, id: 'tired', attempts: 3 });
    await store.outboxAdd!({ ...base, id: 'old', createdAt: new Date(Date.now() - 3_600_000).toISOString() });
    await store.outboxAdd!({ ...base, id: 'gone', webhook: 1 });
    await store.outboxAdd!({ ...base, id: 'renamed', webhookName: 'other' });
    const n4 = createNotifier({
      webhooks: [hook({ name: 'ops', url: rx.url })],
      logger,
      outbox: store,
      outboxMaxAttempts: 3,
      outboxMaxAgeMs: 60_000,
    });
    expect(await n4.drain(5000)).toMatchObject({ delivered: 0 });
    expect(rx.received).toHaveLength(1);
    expect(await store.outboxPending!()).toEqual([]);
    const logged = lines.join('\n');
    expect(logged).toMatch(/dropped from the outbox: it had 3 attempt/);
    expect(logged).toMatch(/dropped from the outbox: it is older than 1 min/);
    expect(logged.match(/dropped from the outbox: its webhook is no longer configured/g)).toHaveLength(2);

    // a permanent rejection (404) removes the entry; a retryable one that runs out keeps it
    const rx404 = await startReceiver([404]);
    const n5 = createNotifier({ webhooks: [hook({ name: 'ops', url: rx404.url })], logger, outbox: store });
    await n5.onResult!(rolledBack);
    expect(await n5.drain(5000)).toMatchObject({ failed: 1 });
    expect(await store.outboxPending!()).toEqual([]);
    const rx503 = await startReceiver([503]);
    const n6 = createNotifier({
      webhooks: [hook({ name: 'ops', url: rx503.url, attempts: 1 })],
      logger,
      outbox: store,
    });
    await n6.onResult!(rolledBack);
    expect(await n6.drain(5000)).toMatchObject({ failed: 1 });
    expect(await store.outboxPending!()).toEqual([expect.objectContaining({ attempts: 1 })]);
    expect(logged + lines.join('\n')).not.toContain('SECRETPATH');
  });
});
