/**
 * The OpenAI issuer's shared rate limiter: the token bucket and in-flight cap on their own, then over
 * the wire with the real `openai` SDK against the loopback Admin API fake with its server-side limit.
 * Timing assertions are lower bounds only (the limiter must never send early); nothing asserts speed.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { Issuer, Logger, ProviderContext } from '../../src/core/ports.ts';
import { issuedKeyName, newRotationId } from '../../src/core/ids.ts';
import { systemClock } from '../../src/core/clock.ts';
import { openaiIssuerSchema } from '../../providers/issuers/openai/openai.schema.ts';
import { createOpenAIIssuer } from '../../providers/issuers/openai/index.ts';
import {
  RateLimiter,
  limiterKey,
  resetSharedLimiters,
  retryAfterMs,
  sharedLimiter,
  sharedLimiterStats,
} from '../../providers/issuers/openai/openai.ratelimit.ts';
import { startOpenAIFake, type FakeRoute, type FakeServiceAccount, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { linesLogger } from '../helpers/logger.ts';

const logLines: string[] = [];
const seen: unknown[] = [];

const recordingLogger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);

let fake: OpenAIFake;
let sa: FakeServiceAccount;

async function make(over: Record<string, unknown> = {}, keyName = 'app'): Promise<Issuer> {
  const data: Record<string, string> = {};
  const ctx: ProviderContext = {
    keyName,
    stateDir: tempDir('openai-ratelimit-state'),
    configDir: tempDir('openai-ratelimit-config'),
    logger: recordingLogger(),
    clock: systemClock,
    env: { KR_OPENAI_ADMIN: fake.adminKey },
    providerState: { get: (k) => data[k], set: async (k, v) => void (data[k] = v) },
  };
  const cfg = openaiIssuerSchema.parse({
    type: 'openai',
    project: fake.project,
    serviceAccount: sa.id,
    adminKeyEnv: 'KR_OPENAI_ADMIN',
    baseURL: fake.baseURL,
    timeout: '10s',
    ...over,
  });
  return createOpenAIIssuer(cfg, ctx);
}

const req = (keyName = 'app') => {
  const rotationId = newRotationId();
  return { name: issuedKeyName(keyName, rotationId), rotationId };
};

/** arrival time (performance.now) of every request at the fake, by route */
function arrivals(): { route: FakeRoute; at: number }[] {
  const out: { route: FakeRoute; at: number }[] = [];
  fake.onRequest((e) => out.push({ route: e.route, at: performance.now() }));
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** lower bounds get 15 ms of slack for timer granularity */
const SLACK = 15;

beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
  capture('openai-ratelimit.log.jsonl', logLines.join('\n'));
  capture('openai-ratelimit.errors.txt', seen.map((e) => inspect(e, { depth: 6 })).join('\n---\n'));
  capture('openai-ratelimit.fake-log.json', JSON.stringify(fake?.log ?? []));
  capture('openai-ratelimit.stats.json', JSON.stringify(sharedLimiterStats()));
});
beforeEach(() => {
  resetSharedLimiters();
  fake.resetFaults();
  fake.setRateLimit(null);
  sa = fake.state.addServiceAccount(`svc-rl-${Math.random().toString(16).slice(2, 8)}`);
});

// ------------------------------------------------------------------ the limiter on its own

describe('RateLimiter: token bucket, in-flight cap, 429 pause', () => {
  it('lets a burst through at once, then spaces requests at the rate', async () => {
    const l = new RateLimiter({ requestsPerSecond: 50, burst: 5 });
    const t0 = performance.now();
    // all 15 asked for at once (in one synchronous loop, so no token refills meanwhile however busy the
    // machine is): the burst goes through, the other 10 wait their turn (FIFO)
    const at: number[] = [];
    await Promise.all(
      Array.from({ length: 15 }, async () => {
        const release = await l.acquire();
        at.push(performance.now() - t0);
        release();
      }),
    );
    // 10 requests beyond the burst need 10 tokens at 50/s: never sooner than 200 ms
    expect(at[14]!).toBeGreaterThanOrEqual(200 - SLACK);
    expect(l.stats).toMatchObject({ requests: 15 });
    expect(l.stats.waited).toBeGreaterThanOrEqual(10);
    expect(l.burst).toBe(5);
  });

  it('defaults the burst to half a second of requests', () => {
    expect(new RateLimiter({ requestsPerSecond: 50 }).burst).toBe(25);
    expect(new RateLimiter({ requestsPerSecond: 1 }).burst).toBe(1);
    expect(() => new RateLimiter({ requestsPerSecond: 0 })).toThrow(RangeError);
  });

  it('keeps at most maxInFlight requests open; a release lets the next one go', async () => {
    const l = new RateLimiter({ requestsPerSecond: 1000, maxInFlight: 2 });
    const r1 = await l.acquire();
    const r2 = await l.acquire();
    let third = false;
    const p3 = l.acquire().then((r) => {
      third = true;
      return r;
    });
    await sleep(30);
    expect(third).toBe(false);
    expect(l.inFlight).toBe(2);
    expect(l.queued).toBe(1);
    r1();
    r1(); // a second call of the same release changes nothing
    const r3 = await p3;
    expect(third).toBe(true);
    expect(l.inFlight).toBe(2);
    r2();
    r3();
    expect(l.inFlight).toBe(0);
  });

  it('a 429 pauses the bucket for retry-after-ms; without a header it backs off exponentially; an answer that is not 429 resets', async () => {
    const l = new RateLimiter({ requestsPerSecond: 1000 });
    l.observe(429, new Headers({ 'retry-after-ms': '120' }));
    expect(l.pausedForMs).toBeGreaterThan(100);
    const t0 = performance.now();
    (await l.acquire())();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(120 - SLACK);

    const l2 = new RateLimiter({ requestsPerSecond: 1000 });
    l2.observe(429, undefined);
    expect(l2.pausedForMs).toBeGreaterThan(400);
    expect(l2.pausedForMs).toBeLessThanOrEqual(500);
    l2.observe(429, undefined);
    expect(l2.pausedForMs).toBeGreaterThan(900);
    l2.observe(200, undefined);
    const l3 = new RateLimiter({ requestsPerSecond: 1000 });
    l3.observe(429, new Headers({ 'retry-after': '2' }));
    expect(l3.pausedForMs).toBeGreaterThan(1900);
    expect(l2.stats).toMatchObject({ rateLimited: 2, pauses: 2 });
  });

  it('an aborted waiter leaves the queue with an AbortError and frees its place', async () => {
    const l = new RateLimiter({ requestsPerSecond: 1000 });
    l.observe(429, new Headers({ 'retry-after-ms': '5000' }));
    const ac = new AbortController();
    const p = l.acquire(ac.signal);
    expect(l.queued).toBe(1);
    ac.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(l.queued).toBe(0);
    const pre = new AbortController();
    pre.abort();
    await expect(l.acquire(pre.signal)).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('parses retry-after-ms, retry-after seconds and dates; ignores garbage', () => {
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '250' }))).toBe(250);
    expect(retryAfterMs(new Headers({ 'retry-after': '3' }))).toBe(3000);
    const d = retryAfterMs(new Headers({ 'retry-after': new Date(Date.now() + 10_000).toUTCString() }))!;
    expect(d).toBeGreaterThan(8000);
    expect(retryAfterMs(new Headers({ 'retry-after': 'soon' }))).toBeUndefined();
    expect(retryAfterMs(new Headers())).toBeUndefined();
    expect(retryAfterMs(undefined)).toBeUndefined();
  });

  it('one limiter per base URL + admin key; the key is a digest; the strictest settings win', () => {
    const k1 = limiterKey('http://127.0.0.1:1/v1', `${CANARY}-admin-x`);
    const k1b = limiterKey('http://127.0.0.1:1/v1/', `${CANARY}-admin-x`);
    const k2 = limiterKey('http://127.0.0.1:1/v1', `${CANARY}-admin-y`);
    const k3 = limiterKey('http://127.0.0.1:2/v1', `${CANARY}-admin-x`);
    expect(k1).toBe(k1b);
    expect(new Set([k1, k2, k3]).size).toBe(3);
    expect(k1).not.toContain(CANARY);
    expect(k1).not.toContain('admin-x');
    const a = sharedLimiter(k1, { requestsPerSecond: 50, maxInFlight: 16 });
    const b = sharedLimiter(k1, { requestsPerSecond: 10, maxInFlight: 32 });
    expect(b).toBe(a);
    expect(a).toMatchObject({ requestsPerSecond: 10, burst: 5, maxInFlight: 16 });
    expect(sharedLimiter(k2, { requestsPerSecond: 50 })).not.toBe(a);
    expect(JSON.stringify(sharedLimiterStats())).not.toContain(CANARY);
  });
});

// ------------------------------------------------------------------ config

describe('openai issuer config: rateLimit and maxConcurrentRequests', () => {
  const base = { type: 'openai', project: 'proj_1' };
  it('defaults to 20 requests/s and 16 in flight, accepts other values, rejects nonsense', () => {
    expect(openaiIssuerSchema.parse(base)).toMatchObject({ rateLimit: 20, maxConcurrentRequests: 16 });
    expect(openaiIssuerSchema.parse({ ...base, rateLimit: 50, maxConcurrentRequests: 4 })).toMatchObject({
      rateLimit: 50,
      maxConcurrentRequests: 4,
    });
    expect(openaiIssuerSchema.parse({ ...base, rateLimit: 0.5 }).rateLimit).toBe(0.5);
    for (const bad of [
      { rateLimit: 0 },
      { rateLimit: -1 },
      { rateLimit: '50' },
      { maxConcurrentRequests: 0 },
      { maxConcurrentRequests: 1.5 },
    ]) {
      expect(openaiIssuerSchema.safeParse({ ...base, ...bad }).success).toBe(false);
    }
  });
});

// ------------------------------------------------------------------ over the wire

describe('openai issuer: the shared limiter over the wire', () => {
  it('the fake enforces its own limit: 429 rate_limit_exceeded with retry-after, nothing applied', async () => {
    fake.setRateLimit({ requestsPerSecond: 5, burst: 2, retryAfterMs: true });
    const url = `${fake.baseURL}/organization/projects/${fake.project}/api_keys?limit=1`;
    const answers = [];
    for (let i = 0; i < 3; i++) {
      const r = await fetch(url, { headers: { authorization: `Bearer ${fake.adminKey}` } });
      answers.push({
        status: r.status,
        retryAfter: r.headers.get('retry-after'),
        retryAfterMs: r.headers.get('retry-after-ms'),
        body: (await r.json()) as { error?: { code?: string } },
      });
    }
    expect(answers.map((a) => a.status)).toEqual([200, 200, 429]);
    expect(answers[2]).toMatchObject({ retryAfter: '1', body: { error: { code: 'rate_limit_exceeded' } } });
    expect(Number(answers[2]!.retryAfterMs)).toBeGreaterThan(0);
    expect(fake.log.at(-1)).toMatchObject({ status: 429, fault: 'ratelimited' });
  });

  it('issuers of different keys on one account share one bucket: bursts from 6 issuers stay under the server limit', async () => {
    fake.setRateLimit({ requestsPerSecond: 40 });
    const issuers = await Promise.all(Array.from({ length: 6 }, (_, i) => make({ rateLimit: 40 }, `app${i}`)));
    const lists = await Promise.all(issuers.flatMap((iss) => Array.from({ length: 10 }, () => iss.list())));
    expect(lists).toHaveLength(60);
    expect(fake.log.filter((e) => e.status === 429)).toHaveLength(0);
    expect(fake.calls('projects.apiKeys.list')).toHaveLength(60);
    const [stats] = sharedLimiterStats();
    expect(stats).toMatchObject({ requestsPerSecond: 40, burst: 20, stats: { requests: 60, rateLimited: 0 } });
    expect(sharedLimiterStats()).toHaveLength(1);
  });

  it('without the limiter the same burst is rejected by the server (the test above is not vacuous)', async () => {
    fake.setRateLimit({ requestsPerSecond: 40 });
    const issuers = await Promise.all(Array.from({ length: 6 }, (_, i) => make({ rateLimit: 10_000 }, `app${i}`)));
    await Promise.allSettled(issuers.flatMap((iss) => Array.from({ length: 10 }, () => iss.list())));
    expect(fake.log.filter((e) => e.status === 429).length).toBeGreaterThan(0);
  });

  it('a 429 on list pauses every issuer of the account for retry-after; the SDK re-sends the list after it', async () => {
    const a = await make({}, 'app-a');
    const b = await make({}, 'app-b');
    const k = await a.create(req('app-a'));
    fake.resetFaults();
    const seenAt = arrivals();
    fake.failNext('projects.apiKeys.list', {
      status: 429,
      code: 'rate_limit_exceeded',
      headers: { 'retry-after-ms': '400' },
    });
    const listing = a.list();
    while (seenAt.length === 0) await sleep(5);
    await sleep(60); // the 429 is back by now
    const verified = await b.verify(k.secret);
    expect(verified).toEqual({ ok: true });
    expect((await listing).some((x) => x.keyId === k.keyId)).toBe(true);
    const first = seenAt.find((x) => x.route === 'projects.apiKeys.list')!.at;
    const check = seenAt.find((x) => x.route === 'models.list')!.at;
    const lists = fake.calls('projects.apiKeys.list').map((c) => c.status);
    expect(lists).toEqual([429, 200]);
    expect(check - first).toBeGreaterThanOrEqual(400 - SLACK);
  });

  it('create is never re-sent after a 429 (one POST, retryable error), but the next create waits out retry-after', async () => {
    const issuer = await make();
    const seenAt = arrivals();
    fake.failNext('serviceAccounts.apiKeys.create', {
      status: 429,
      code: 'rate_limit_exceeded',
      headers: { 'retry-after-ms': '300' },
    });
    const r = req();
    const e = await issuer.create(r).catch((x: unknown) => x);
    seen.push(e);
    expect(e).toBeInstanceOf(KeyrotorError);
    expect(e).toMatchObject({ code: 'ISSUER_RATE_LIMITED', retryable: true, stage: 'issue' });
    expect(fake.calls('serviceAccounts.apiKeys.create')).toHaveLength(1);
    const rejectedAt = seenAt.filter((x) => x.route === 'serviceAccounts.apiKeys.create')[0]!.at;
    const again = await issuer.create(r); // the same rotation tries again
    expect(fake.state.keysNamed(r.name).map((x) => x.id)).toEqual([again.keyId]);
    const nextAt = seenAt.filter((x) => x.at > rejectedAt)[0]!.at;
    expect(nextAt - rejectedAt).toBeGreaterThanOrEqual(300 - SLACK);
  });

  it('revoke: a 429 on delete is waited out and re-sent; verify: a 429 is a retryable answer and the next check waits', async () => {
    const issuer = await make();
    const k = await issuer.create(req());
    const seenAt = arrivals();
    fake.failNext('projects.apiKeys.delete', { status: 429, headers: { 'retry-after-ms': '250' } });
    expect(await issuer.revoke(k.keyId)).toEqual({ alreadyGone: false });
    const dels = seenAt.filter((x) => x.route === 'projects.apiKeys.delete');
    expect(dels).toHaveLength(2);
    expect(dels[1]!.at - dels[0]!.at).toBeGreaterThanOrEqual(250 - SLACK);

    const k2 = await issuer.create(req());
    fake.failNext('models.list', { status: 429, headers: { 'retry-after-ms': '250' } });
    const r1 = await issuer.verify(k2.secret);
    expect(r1).toMatchObject({ ok: false, reason: 'error', retryable: true });
    expect(JSON.stringify(r1)).not.toContain(CANARY);
    expect(await issuer.verify(k2.secret)).toEqual({ ok: true });
    const checks = seenAt.filter((x) => x.route === 'models.list');
    expect(checks).toHaveLength(2);
    expect(checks[1]!.at - checks[0]!.at).toBeGreaterThanOrEqual(250 - SLACK);
  });

  it('maxConcurrentRequests bounds what is in flight at once across issuers', async () => {
    const issuers = await Promise.all(
      Array.from({ length: 3 }, (_, i) => make({ maxConcurrentRequests: 2, rateLimit: 1000 }, `app${i}`)),
    );
    const keys = await Promise.all(issuers.map((iss, i) => iss.create(req(`app${i}`))));
    const seenAt = arrivals();
    fake.slowResponse('models.list', 150, 6);
    const results = await Promise.all(
      issuers.flatMap((iss, i) => [iss.verify(keys[i]!.secret), iss.verify(keys[i]!.secret)]),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    const at = seenAt.filter((x) => x.route === 'models.list').map((x) => x.at);
    expect(at).toHaveLength(6);
    // two at a time, each held 150 ms: the 3rd and 5th arrive a hold after the 1st and 3rd
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(150 - SLACK);
    expect(at[4]! - at[2]!).toBeGreaterThanOrEqual(150 - SLACK);
  });

  it('nothing the limiter produced holds a secret', () => {
    const text =
      JSON.stringify(sharedLimiterStats()) + logLines.join('\n') + seen.map((e) => inspect(e, { depth: 6 })).join('\n');
    expect(text).not.toContain(CANARY);
    expect(text).not.toContain(fake.adminKey);
  });
});
