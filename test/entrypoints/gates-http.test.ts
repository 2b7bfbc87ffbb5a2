/**
 * End to end, the CLI spawned: a rotation with an `http` gate over two loopback consumers (OpenAI
 * issuer on the loopback Admin API fake, file store). It revokes only after both consumers report the
 * new fingerprint; with one consumer stuck on the old key it rolls back at the deadline (exit 1) and
 * the old key still works.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { runCli, treeText, workspace } from './cli-helpers.ts';
import { useOpenAICliWorld } from './openai-cli-world.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { startFakeConsumer, stuck, switchLate, type FakeConsumer } from '../fakes/consumer.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { CANARY } from '../canary.ts';

const world = useOpenAICliWorld({ masterKey: 'ef'.repeat(32) });
const { env, results, live } = world;
const consumers: FakeConsumer[] = [];
afterAll(async () => {
  await Promise.all(consumers.map((c) => c.close()));
});

/** bootstrap without gates, then switch the config to the `health` built from the old and new keys' fingerprints */
async function bootstrap(health: (oldFp: string, newFp: () => string | null) => Promise<string>, name: string) {
  const { dir, old, newKey } = await world.bootstrap(name);
  const oldFp = fingerprint(old.value);
  // the key this rotation issues, once it exists (what a consumer would load after promotion)
  const newFp = () => {
    const k = newKey();
    return k ? fingerprint(k.value) : null;
  };
  writeFileSync(path.join(dir, 'rotation.config.yaml'), world.config(await health(oldFp, newFp)));
  return { dir, old, oldFp, newFp };
}

async function consumer(...a: Parameters<typeof startFakeConsumer>) {
  const c = await startFakeConsumer(...a);
  consumers.push(c);
  return c;
}

describe('CLI: http gate over two loopback consumers', () => {
  it('completes only after both consumers report the new fingerprint', async () => {
    let a!: FakeConsumer;
    let b!: FakeConsumer;
    const { dir, old } = await bootstrap(async (oldFp, newFp) => {
      a = await consumer(switchLate(oldFp, newFp, 0));
      b = await consumer(switchLate(oldFp, newFp, 1500)); // reloads its key late
      return `\n      - { type: http, name: consumers, urls: [${a.url}, ${b.url}], interval: 100ms, requestTimeout: 1s, timeout: 8s }`;
    }, 'gates-http-ok');
    let revokedAt = 0;
    const stop = world.fake.onRequest((e) => {
      if (e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old.id}`)) revokedAt ||= Date.now();
    });
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'gates-http-ok' });
    stop();
    expect(r.code, r.stderr).toBe(0);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id });
    const newFp = fingerprint(world.fake.state.keyById(res.newKeyId!)!.value);
    const bSwitched = b.firstServed(newFp)!;
    expect(a.firstServed(newFp)).toBeDefined();
    expect(bSwitched).toBeDefined();
    expect(revokedAt).toBeGreaterThan(bSwitched);
    expect(live(old.id)).toBe(false);
    expect(live(res.newKeyId)).toBe(true);
    // waiting was visible in the logs: the lagging consumer named, with the key it still had
    expect(r.stderr).toContain('health gate passed');
    const text = r.stdout + r.stderr + treeText(path.join(dir, '.keyrotor'));
    expect(text).not.toContain(CANARY);
  });

  it('one consumer stuck on the old key: rolls back at the deadline (exit 1), the old key still works', async () => {
    let stuckOne!: FakeConsumer;
    const t0 = Date.now();
    const { dir, old, oldFp } = await bootstrap(async (oldFp, newFp) => {
      const good = await consumer(switchLate(oldFp, newFp, 0));
      stuckOne = await consumer(stuck(oldFp));
      return `\n      - { type: http, name: consumers, urls: [${good.url}, ${stuckOne.url}], interval: 100ms, requestTimeout: 1s, timeout: 2s }`;
    }, 'gates-http-stuck');
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'gates-http-stuck' });
    expect(r.code, r.stderr).toBe(1);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({
      outcome: 'rolled_back',
      oldKeyId: old.id,
      error: { code: 'GATE_TIMEOUT', stage: 'confirm' },
    });
    expect(res.error!.message).toBe(
      `health gate "consumers" did not pass: 1/2 endpoint(s) report the new key ${fingerprint(world.fake.state.keyById(res.newKeyId!)!.value)}; ${stuckOne.url}: still the old key ${oldFp}`,
    );
    // the gate waited for its deadline, not less
    expect(Date.now() - t0).toBeGreaterThan(2000);
    // the new key is gone, the old one is alive, current in the store, and works at the issuer
    expect(live(res.newKeyId)).toBe(false);
    expect(live(old.id)).toBe(true);
    const models = await new OpenAI({ apiKey: old.value, baseURL: world.fake.baseURL, maxRetries: 0 }).models.list();
    expect(models.data.length).toBeGreaterThan(0);
    const rec = await createFileStateStore(path.join(dir, '.keyrotor')).read('app');
    expect(rec).toMatchObject({ currentKeyId: old.id, active: null, last: { outcome: 'rolled_back' } });
  });

  it('a missing header env var is a config error before anything changes (exit 2)', async () => {
    const dir = workspace(
      world.config(
        `\n      - { type: http, urls: ['http://127.0.0.1:9/fp'], headers: { Authorization: CONSUMER_TOKEN } }`,
      ),
      'gates-http-env',
    );
    const before = world.fake.log.length;
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'gates-http-env' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/CONFIG_ENV_MISSING: .*CONSUMER_TOKEN/);
    expect(world.fake.log.length).toBe(before); // not even a preflight call
  });
});
