/**
 * The `usage-drain` gate with the real OpenAI issuer (real SDK) against the loopback Admin API fake:
 * `last_used_at` of the old key advancing or not, the new key used since promotion or not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { createGate, createIssuer, healthConfigSchema, issuerConfigSchema } from '../../providers/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { HealthGate, Issuer, ProviderContext, StateStore } from '../../src/core/ports.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
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

function providerCtx(env: NodeJS.ProcessEnv, state?: StateStore): ProviderContext {
  const dir = tempDir('usage-drain');
  return {
    keyName: 'app',
    stateDir: path.join(dir, '.keyrotor'),
    configDir: dir,
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

async function setup(f: OpenAIFake = fake, gateCfg: Record<string, unknown> = {}, state?: StateStore) {
  const sa = f.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`);
  const owner = { type: 'service_account' as const, serviceAccountId: sa.id };
  const old = f.state.plantKey({ owner, name: 'keyrotor.app.rot-20261101t000000z-00000001' });
  const neu = f.state.plantKey({ owner, name: 'keyrotor.app.rot-20261123t151500z-0a1b2c3d' });
  const ctx = providerCtx({ OPENAI_ADMIN_KEY: f.adminKey }, state);
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
  /** the same gate as built by another process (nothing in memory), sharing the state store */
  const again = () => createGate(cfg, providerCtx({ OPENAI_ADMIN_KEY: f.adminKey }, state), { issuer, index: 0 });
  return { f, old, neu, gate, gctx, again };
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

  it('durable waits: what one process saw is remembered in the state store for the next one', async () => {
    // an issuer clock an hour behind ours: the timestamp alone always looks quiet, only a move seen
    // between two checks blocks — and a parked rotation's checks are made by different processes
    const state = createFileStateStore(tempDir('usage-drain-state'));
    const { f, old, gate, gctx, again } = await setup(skewed, { requireNewKeyUse: false }, state);
    use(f, old);
    expect((await gate.check(gctx)).pass).toBe(true); // nothing moved yet (first look)
    expect(JSON.parse((await state.read('app'))!.providerState['usage-drain.usage-drain']!)).toMatchObject({
      rotationId: gctx.rotationId,
      movedAt: null,
    });
    await sleep(1000);
    use(f, old); // moves while no process watches (the rotation is parked)
    const second = await again(); // the worker that continues it
    const o = await second.check(gctx);
    expect(o.pass).toBe(false);
    expect(o.observation).toMatch(/needs \d+s quiet/);
    // and a third process still counts the quiet from that move, not from scratch
    const third = await again();
    expect((await third.check(gctx)).pass).toBe(false);
    const r = await pollGate(await again(), gctx, { intervalMs: 100 });
    expect(r.outcome).toBe('pass');
    // without the state store (memory only) a new process would have passed at once
    const { f: f2, old: old2, gate: g2, gctx: c2 } = await setup(skewed, { requireNewKeyUse: false });
    use(f2, old2);
    expect((await g2.check(c2)).pass).toBe(true);
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
