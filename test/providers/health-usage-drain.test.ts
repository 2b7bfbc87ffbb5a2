/**
 * The `usage-drain` gate with the real OpenAI issuer (real SDK) against the loopback Admin API fake:
 * `last_used_at` of the old key advancing or not, the new key used since promotion or not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { createGate, createIssuer, healthConfigSchema, issuerConfigSchema } from '../../providers/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { HealthGate, Issuer, ProviderContext } from '../../src/core/ports.ts';
import { silentLogger } from '../../src/app/log.ts';
import { startOpenAIFake, type FakeKey, type OpenAIFake } from '../fakes/openai-admin.ts';
import { gateContext, pollGate } from '../fakes/consumer.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

let fake: OpenAIFake;
let skewed: OpenAIFake;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  fake = await startOpenAIFake();
  // an issuer whose clock runs an hour behind ours
  skewed = await startOpenAIFake({ now: () => Date.now() - 3_600_000 });
});
afterAll(async () => {
  await fake?.close();
  await skewed?.close();
});

function providerCtx(env: NodeJS.ProcessEnv): ProviderContext {
  const dir = tempDir('usage-drain');
  return {
    keyName: 'app',
    stateDir: path.join(dir, '.keyrotor'),
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env,
    providerState: { get: () => undefined, set: async () => {} },
  };
}

async function setup(f: OpenAIFake = fake, gateCfg: Record<string, unknown> = {}) {
  const sa = f.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`);
  const owner = { type: 'service_account' as const, serviceAccountId: sa.id };
  const old = f.state.plantKey({ owner, name: 'keyrotor.app.rot-20261101t000000z-00000001' });
  const neu = f.state.plantKey({ owner, name: 'keyrotor.app.rot-20261123t151500z-0a1b2c3d' });
  const ctx = providerCtx({ OPENAI_ADMIN_KEY: f.adminKey });
  const issuer: Issuer = await createIssuer(
    issuerConfigSchema.parse({
      type: 'openai',
      project: f.project,
      serviceAccount: sa.id,
      baseURL: f.baseURL,
      timeout: '5s',
    }),
    ctx,
  );
  const cfg = healthConfigSchema.parse({
    type: 'usage-drain',
    quiet: '1500ms',
    interval: '100ms',
    timeout: '6s',
    ...gateCfg,
  });
  const gate: HealthGate = await createGate(cfg, ctx, { issuer, index: 0 });
  const gctx = gateContext({
    newKeyId: neu.id,
    oldKeyId: old.id,
    promotedAt: new Date(Date.now() - 5_000).toISOString(),
  });
  return { f, old, neu, gate, gctx };
}

/** a consumer using a key right now, as the issuer records it (unix seconds, issuer clock) */
const use = (f: OpenAIFake, k: FakeKey) => {
  k.lastUsedAt = f.state.now();
};

describe('usage-drain gate (OpenAI last_used_at)', () => {
  it('blocks while the old key is still used and passes once it has been quiet for `quiet`', async () => {
    const { f, old, neu, gate, gctx } = await setup();
    use(f, neu);
    const seen: string[] = [];
    // 1.5 s of traffic on the old key: never passes
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      use(f, old);
      const o = await gate.check(gctx);
      seen.push(o.observation);
      expect(o.pass).toBe(false);
      await sleep(100);
    }
    expect(seen.at(-1)).toMatch(/the new key was used .*; the old key was used .*: needs \d+s quiet/);
    const stopped = Date.now();
    const r = await pollGate(gate, gctx, { intervalMs: 100 });
    capture('usage-drain-block.txt', [...seen, ...r.observations].join('\n'));
    expect(r.outcome).toBe('pass');
    // quiet is measured from the last recorded use (second granularity on the wire)
    expect(Date.now() - stopped).toBeGreaterThanOrEqual(1500 - 1000);
    expect(r.last).toMatch(/the old key was last used .* ago \(quiet \d+s reached\)/);
  });

  it('does not pass while the new key has not been used since promotion (unless requireNewKeyUse: false)', async () => {
    const { f, neu, gate, gctx } = await setup();
    neu.lastUsedAt = Math.floor(Date.now() / 1000) - 60; // used before promotion (e.g. keyrotor's own verify)
    const o = await gate.check(gctx);
    expect(o).toEqual({
      pass: false,
      observation: 'the new key was not used since promotion; the old key was never used',
    });
    use(f, neu);
    await sleep(1100); // the next second
    use(f, neu);
    expect(await gate.check(gctx)).toMatchObject({ pass: true });

    const lax = await setup(fake, { requireNewKeyUse: false });
    expect(await lax.gate.check(lax.gctx)).toEqual({
      pass: true,
      observation: 'new key use not required; the old key was never used',
    });
  });

  it('an old key that is gone from the list, or no old key at all (bootstrap), is quiet', async () => {
    const { f, old, neu, gate, gctx } = await setup();
    use(f, neu);
    use(f, old);
    expect((await gate.check(gctx)).pass).toBe(false);
    f.state.deleteKey(old);
    expect(await gate.check(gctx)).toMatchObject({
      pass: true,
      observation: expect.stringContaining(`the old key ${old.id} is no longer listed`),
    });
    const boot = await setup();
    use(boot.f, boot.neu);
    expect(await boot.gate.check({ ...boot.gctx, oldKeyId: undefined, oldFingerprint: undefined })).toMatchObject({
      pass: true,
      observation: expect.stringContaining('no old key'),
    });
  });

  it('the new key missing from the list is not a pass', async () => {
    const { gate, gctx } = await setup();
    const o = await gate.check({ ...gctx, newKeyId: 'key_unknown' });
    expect(o).toMatchObject({
      pass: false,
      observation: expect.stringContaining('the new key key_unknown is not in the issuer'),
    });
  });

  it('with an issuer clock far behind ours, an advancing last_used_at still blocks for `quiet` on our clock', async () => {
    const { f, old, gate, gctx } = await setup(skewed, { requireNewKeyUse: false });
    use(f, old); // looks an hour old by our clock
    expect((await gate.check(gctx)).pass).toBe(true); // nothing moved yet: the timestamp is all we have
    await sleep(1000);
    use(f, old); // the value moves while we watch
    const o = await gate.check(gctx);
    expect(o.pass).toBe(false);
    expect(o.observation).toMatch(/needs \d+s quiet/);
    const t = Date.now();
    const r = await pollGate(gate, gctx, { intervalMs: 100 });
    expect(r.outcome).toBe('pass');
    expect(Date.now() - t).toBeGreaterThanOrEqual(1300);
  });

  it('admin API trouble is an error the confirm stage records as an observation (and retries)', async () => {
    const { gate, gctx } = await setup();
    fake.failNext('projects.apiKeys.list', { status: 500, times: 3 });
    const err = await gate.check(gctx).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ISSUER_UNAVAILABLE', retryable: true });
    fake.resetFaults();
  });

  it('is refused for an issuer that does not report key usage, and needs timeout > quiet', async () => {
    const ctx = providerCtx({});
    const local = await createIssuer(issuerConfigSchema.parse({ type: 'local' }), ctx);
    await expect(
      createGate(healthConfigSchema.parse({ type: 'usage-drain' }), ctx, { issuer: local, index: 0 }),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining('the local issuer does not report when keys were last used'),
    });
    expect(healthConfigSchema.safeParse({ type: 'usage-drain', quiet: '10m', timeout: '5m' }).success).toBe(false);
    expect(healthConfigSchema.parse({ type: 'usage-drain' })).toMatchObject({
      quiet: 900_000,
      timeout: 7_200_000,
      interval: 60_000,
      requireNewKeyUse: true,
    });
  });
});
