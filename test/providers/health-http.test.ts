/**
 * The `http` gate against loopback consumers: switch late, never switch, flap, garbage, time out,
 * unreachable, TLS, headers from env. Built through the registry from a parsed config, as compose does.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createGate, healthConfigSchema } from '../../providers/index.ts';
import { parseFingerprintBody } from '../../src/core/fingerprint-format.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { HealthGate, Issuer, ProviderContext, StateStore } from '../../src/core/ports.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createSelfSignedCert } from '../fakes/self-signed-cert.ts';
import {
  NEW_FP,
  OLD_FP,
  flap,
  garbage,
  gateContext,
  hang,
  pollGate,
  startFakeConsumer,
  stuck,
  unreachableUrl,
  type FakeConsumer,
} from '../fakes/consumer.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

const started: FakeConsumer[] = [];
afterAll(async () => {
  await Promise.all(started.map((c) => c.close()));
});
async function consumer(...a: Parameters<typeof startFakeConsumer>): Promise<FakeConsumer> {
  const c = await startFakeConsumer(...a);
  started.push(c);
  return c;
}

const noIssuer = { type: 'none' } as unknown as Issuer;
function providerCtx(
  env: NodeJS.ProcessEnv = {},
  configDir = tempDir('http-gate'),
  state?: StateStore,
): ProviderContext {
  return {
    keyName: 'app',
    stateDir: path.join(configDir, '.keyrotor'),
    configDir,
    logger: silentLogger(),
    clock: systemClock,
    env,
    // remembered facts in a real state store (as compose.ts wires them), or nowhere
    providerState: state
      ? {
          get: () => undefined,
          set: (k, v) => state.setProviderState('app', k, v),
          fresh: async (k) => (await state.read('app'))?.providerState[k],
        }
      : { get: () => undefined, set: async () => {} },
  };
}
async function gate(
  cfg: Record<string, unknown>,
  env: NodeJS.ProcessEnv = {},
  configDir?: string,
  state?: StateStore,
): Promise<HealthGate> {
  const parsed = healthConfigSchema.parse({
    type: 'http',
    interval: '40ms',
    requestTimeout: '300ms',
    timeout: '2s',
    ...cfg,
  });
  return createGate(parsed, providerCtx(env, configDir, state), { issuer: noIssuer, index: 0 });
}
const keep = (name: string, obs: string[]) => capture(`health-http-${name}.txt`, obs.join('\n'));

describe('http gate: the response format', () => {
  it('accepts the JSON document and plain text; nothing else', () => {
    expect(parseFingerprintBody(JSON.stringify({ format: 'keyrotor-fingerprint/1', fingerprint: NEW_FP }))).toBe(
      NEW_FP,
    );
    expect(parseFingerprintBody(`${NEW_FP}\n`)).toBe(NEW_FP);
    expect(parseFingerprintBody('{"fingerprint":"fp_XYZ"}')).toBeUndefined();
    expect(parseFingerprintBody('{"fingerprint":null}')).toBeUndefined();
    expect(parseFingerprintBody('<html>fp_0123456789ab</html>')).toBeUndefined();
    expect(parseFingerprintBody('[]')).toBeUndefined();
    expect(parseFingerprintBody('')).toBeUndefined();
  });
});

describe('http gate against loopback consumers', () => {
  it('passes once every consumer reports the new fingerprint, `consecutive` rounds in a row', async () => {
    const a = await consumer(stuck(NEW_FP));
    const b = await consumer(() => ({ fingerprint: NEW_FP, format: 'text' }));
    const g = await gate({ urls: [a.url, b.url] });
    expect(g).toMatchObject({ type: 'http', name: 'http', timeoutMs: 2000, intervalMs: 40 });
    const ctx = gateContext();
    const first = await g.check(ctx);
    expect(first).toMatchObject({ pass: false });
    expect(first.observation).toContain('1/2 rounds');
    const second = await g.check(ctx);
    expect(second.pass).toBe(true);
    expect(second.observation).toContain(`all 2 endpoint(s) report the new key ${NEW_FP}`);
  });

  it('durable waits: the `consecutive` streak survives a new process (a parked rotation continued elsewhere)', async () => {
    const a = await consumer(stuck(NEW_FP));
    const state = createFileStateStore(tempDir('http-gate-state'));
    const ctx = gateContext();
    const perProcess = async () => (await gate({ urls: [a.url], consecutive: 3 }, {}, undefined, state)).check(ctx);
    // one check per process, as a rotation parked between its checks is continued by any worker
    expect((await perProcess()).observation).toContain('1/3 rounds');
    expect((await perProcess()).observation).toContain('2/3 rounds');
    expect(await perProcess()).toMatchObject({ pass: true });
    // memory only: every new process starts counting again and never gets there
    const memoryOnly = async () => (await gate({ urls: [a.url], consecutive: 3 })).check(ctx);
    for (let i = 0; i < 3; i++) expect((await memoryOnly()).observation).toContain('1/3 rounds');
  });

  it('a consumer that switches late: waits, then passes after it switched', async () => {
    // the late consumer answers with the old key for its first 3 requests (a count, not a clock, so
    // a loaded machine cannot skip the old-key rounds); generous request timeouts for the same reason
    let servedOld = 0;
    const late = await consumer(() =>
      servedOld < 3 ? (servedOld++, { fingerprint: OLD_FP }) : { fingerprint: NEW_FP },
    );
    const onTime = await consumer(stuck(NEW_FP));
    const g = await gate({ urls: [onTime.url, late.url], requestTimeout: '2s', timeout: '20s' });
    const r = await pollGate(g, gateContext());
    keep('late', r.observations);
    expect(r.outcome).toBe('pass');
    expect(servedOld).toBe(3);
    expect(
      r.observations.some(
        (o) =>
          o.includes(`1/2 endpoint(s) report the new key`) && o.includes(`${late.url}: still the old key ${OLD_FP}`),
      ),
    ).toBe(true);
    expect(late.firstServed(NEW_FP)).toBeDefined();
  });

  it('a consumer that never switches: times out naming it and the key it still uses', async () => {
    const good = await consumer(stuck(NEW_FP));
    const bad = await consumer(stuck(OLD_FP));
    const g = await gate({ urls: [good.url, bad.url], timeout: '500ms' });
    const r = await pollGate(g, gateContext());
    keep('never', r.observations);
    expect(r.outcome).toBe('timeout');
    expect(r.last).toBe(`1/2 endpoint(s) report the new key ${NEW_FP}; ${bad.url}: still the old key ${OLD_FP}`);
  });

  it('a flapping consumer never passes with consecutive: 2 (it would with 1)', async () => {
    const f = await consumer(flap(NEW_FP, OLD_FP));
    const g = await gate({ urls: [f.url], timeout: '600ms' });
    const r = await pollGate(g, gateContext());
    keep('flap', r.observations);
    expect(r.outcome).toBe('timeout');
    expect(r.observations.some((o) => o.includes('1/2 rounds in a row'))).toBe(true);
    const f1 = await consumer(flap(NEW_FP, OLD_FP));
    const once = await gate({ urls: [f1.url], consecutive: 1 });
    expect((await once.check(gateContext())).pass).toBe(true);
  });

  it('garbage, an empty store (503), a redirect and an unknown key are failures that never echo the body', async () => {
    const junk = await consumer(garbage());
    const empty = await consumer(stuck(null));
    const redirect = await consumer(() => ({ status: 302, body: 'see other' }));
    const other = await consumer(stuck('fp_0123456789ab'));
    const g = await gate({ urls: [junk.url, empty.url, redirect.url, other.url] });
    const o = await g.check(gateContext());
    keep('garbage', [o.observation]);
    expect(o.pass).toBe(false);
    expect(o.observation).toContain(
      `${junk.url}: answered something that is not a fingerprint (35 bytes, content-type text/html)`,
    );
    expect(o.observation).toContain(`${empty.url}: HTTP 503`);
    expect(o.observation).toContain(`${redirect.url}: HTTP 302 (redirects are not followed)`);
    expect(o.observation).toContain(`${other.url}: an unknown key fp_0123456789ab`);
    expect(o.observation).not.toContain('It works');
  });

  it('a consumer that never answers costs one request timeout, not the whole wait', async () => {
    const slow = await consumer(hang());
    const g = await gate({ urls: [slow.url], requestTimeout: '200ms' });
    const t0 = Date.now();
    const o = await g.check(gateContext());
    expect(Date.now() - t0).toBeLessThan(10_000); // the consumer never answers: only the 200 ms timeout ends it
    expect(o).toEqual({
      pass: false,
      observation: `0/1 endpoint(s) report the new key ${NEW_FP}; ${slow.url}: no answer within 200ms`,
    });
  });

  it('an unreachable consumer is reported as such', async () => {
    const url = await unreachableUrl();
    const g = await gate({ urls: [url] });
    const o = await g.check(gateContext());
    expect(o.observation).toContain(`${url}: unreachable (connection refused)`);
  });

  it('cancelling the wait aborts requests in flight', async () => {
    const slow = await consumer(hang());
    const g = await gate({ urls: [slow.url], requestTimeout: '20s' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    const o = await g.check(gateContext({ signal: ac.signal }));
    expect(Date.now() - t0).toBeLessThan(10_000); // far below the 20 s request timeout
    expect(o.observation).toContain('aborted');
  });

  it('headers come from env vars named in the config; a missing one fails when the gate is built', async () => {
    const token = 'Bearer health-token-1234';
    const c = await consumer(stuck(NEW_FP), { requireHeaders: { authorization: token } });
    const g = await gate(
      { urls: [c.url], headers: { Authorization: 'HEALTH_TOKEN' }, consecutive: 1 },
      { HEALTH_TOKEN: token },
    );
    expect((await g.check(gateContext())).pass).toBe(true);
    const without = await gate({ urls: [c.url], consecutive: 1 });
    expect((await without.check(gateContext())).observation).toContain('HTTP 401');
    const err = await gate({ urls: [c.url], headers: { Authorization: 'HEALTH_TOKEN' } }, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyrotorError);
    expect(err).toMatchObject({ code: 'CONFIG_ENV_MISSING' });
    expect((err as Error).message).toContain('HEALTH_TOKEN');
  });

  it('TLS is verified: a self-signed consumer fails unless its CA is trusted with caFile', async () => {
    const cert = createSelfSignedCert();
    const c = await consumer(stuck(NEW_FP), { tls: cert });
    const untrusted = await gate({ urls: [c.url] });
    const o = await untrusted.check(gateContext());
    expect(o.observation).toMatch(/TLS verification failed \(/);
    const dir = tempDir('http-gate-ca');
    writeFileSync(path.join(dir, 'ca.pem'), cert.cert);
    const trusted = await gate({ urls: [c.url], caFile: 'ca.pem', consecutive: 1 }, {}, dir);
    expect((await trusted.check(gateContext())).pass).toBe(true);
    await expect(gate({ urls: [c.url], caFile: 'missing.pem' }, {}, dir)).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
    });
  });

  it('observations show origin and path only (a query string may carry a token)', async () => {
    const url = await unreachableUrl();
    const g = await gate({ urls: [`${url}?token=s3cr3t-query-token`] });
    const o = await g.check(gateContext());
    expect(o.observation).toContain(url);
    expect(o.observation).not.toContain('s3cr3t');
  });

  it('config: credentials in a URL, an empty list and unknown fields are refused', () => {
    const bad = (cfg: Record<string, unknown>) => healthConfigSchema.safeParse({ type: 'http', ...cfg }).success;
    expect(bad({ urls: ['https://user:pw@example.com/fp'] })).toBe(false);
    expect(bad({ urls: [] })).toBe(false);
    expect(bad({ urls: ['ftp://example.com/fp'] })).toBe(false);
    expect(bad({ urls: ['https://example.com/fp'], insecure: true })).toBe(false);
    expect(bad({ urls: ['https://example.com/fp'], headers: { 'Bad Header': 'X' } })).toBe(false);
    expect(bad({ urls: ['https://example.com/fp'], headers: { Authorization: 'not-an-env name' } })).toBe(false);
    expect(healthConfigSchema.parse({ type: 'http', urls: ['https://example.com/fp'] })).toMatchObject({
      timeout: 15 * 60_000,
      interval: 10_000,
      requestTimeout: 5_000,
      consecutive: 2,
      headers: {},
    });
  });
});
