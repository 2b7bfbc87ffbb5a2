/**
 * Claiming through the real run loop (`rotateKeys` on a scheduled run), on the file backend and on
 * PostgreSQL: two workers started together on one backend share the due keys (each key rotated by
 * exactly one of them, both get work); a key whose lease is granted but that another worker rotated
 * since the read is released untouched; a rotation parked at a gate (`wakeAt` ahead) is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import { rotateKeys, type KeyResult } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { isLease, type StateStore } from '../../src/core/ports.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { postgresSupportOrSkip, startPostgres, type Postgres } from '../fakes/postgres.ts';

const MASTER = '6d'.repeat(32);
const DAY = 86_400_000;

function setup(dir: string, state: string, env: NodeJS.ProcessEnv, count: number) {
  const names = Array.from({ length: count }, (_, i) => `c${String(i).padStart(2, '0')}`);
  const text = `version: 1
${state}
defaults:
  verify: { timeout: 5s, interval: 20ms }
  verifyRevoked: { timeout: 5s, interval: 20ms }
  revoke: { attempts: 2, backoff: 20ms }
  lease: { ttl: 30s }
keys:
${names.map((n) => `  - { name: ${n}, schedule: { every: 30d }, issuer: { type: local }, stores: [ { type: file } ] }`).join('\n')}
`;
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, text);
  return { cfg: parseConfig(text, file, env), names };
}

/** bootstrap every key, then date the bootstraps 31 days back: all due */
async function allDue(cfg: LoadedConfig, store: StateStore, env: NodeJS.ProcessEnv) {
  const boot = await rotateKeys(cfg.keys, { config: cfg, stateStore: store, logger: silentLogger(), env, now: true });
  expect(boot.filter((r) => r.outcome !== 'rotated')).toEqual([]);
  const longAgo = new Date(Date.now() - 31 * DAY).toISOString();
  for (const k of cfg.keys) await store.put({ ...(await store.read(k.name))!, lastRotatedAt: longAgo });
}

async function scenario(dir: string, state: string, env: NodeJS.ProcessEnv) {
  const { cfg, names } = setup(dir, state, env, 16);
  const admin = createStateStore(cfg, env);
  await admin.init?.();
  await allDue(cfg, admin, env);

  // two workers at once, each on its own store instance (own connections)
  const workers = [createStateStore(cfg, env), createStateStore(cfg, env)];
  const run = (s: StateStore) =>
    rotateKeys(cfg.keys, { config: cfg, stateStore: s, logger: silentLogger(), env, concurrency: 3 });
  const [a, b] = await Promise.all(workers.map(run));
  const rotatedBy = (rs: KeyResult[]) => rs.filter((r) => r.outcome === 'rotated').map((r) => r.key);
  expect([...rotatedBy(a!), ...rotatedBy(b!)].sort()).toEqual(names);
  expect(rotatedBy(a!).length, 'worker a got work').toBeGreaterThan(0);
  expect(rotatedBy(b!).length, 'worker b got work').toBeGreaterThan(0);
  for (const r of [...a!, ...b!]) expect(['rotated', 'skipped', 'locked']).toContain(r.outcome);
  for (const n of names) expect((await admin.read(n))?.last?.outcome).toBe('rotated');

  // nothing due: a run rotates nothing, every key skipped
  const idle = await run(workers[0]!);
  expect(idle.map((r) => r.outcome)).toEqual(names.map(() => 'skipped'));

  // a lease granted on a key another worker rotated after the read: released, not rotated again
  const longAgo = new Date(Date.now() - 31 * DAY).toISOString();
  await admin.put({ ...(await admin.read('c00'))!, lastRotatedAt: longAgo });
  const racing: StateStore = Object.create(workers[1]!) as StateStore;
  racing.claim = async (...args) => {
    await admin.put({ ...(await admin.read('c00'))!, lastRotatedAt: new Date().toISOString() }); // "another worker"
    return workers[1]!.claim!(...args);
  };
  const late = await run(racing);
  expect(late.find((r) => r.key === 'c00')).toMatchObject({ outcome: 'skipped' });
  const free = await admin.acquire('c00', 'someone-else', 1_000);
  expect(isLease(free), 'the claimed lease was released').toBe(true);
  if (isLease(free)) await free.release();

  // a rotation parked at a gate until later: nobody touches it
  const rec = (await admin.read('c01'))!;
  const parked = {
    rotationId: 'rot-20261101t000000z-0000000c',
    keyName: 'c01',
    machineVersion: 3,
    keyrotorVersion: 'test',
    updatedAt: new Date().toISOString(),
    snapshot: { status: 'active', value: 'confirm', context: {} },
    wakeAt: new Date(Date.now() + DAY).toISOString(),
  };
  await admin.put({ ...rec, active: parked });
  const again = await run(workers[0]!);
  // a parked rotation is reported `waiting` (durable waits), as the per-key path reports it
  expect(again.find((r) => r.key === 'c01')).toMatchObject({
    outcome: 'waiting',
    rotationId: parked.rotationId,
  });
  expect((await admin.read('c01'))?.active).toEqual(parked);
  for (const s of [admin, ...workers]) await s.close?.();
}

describe('claiming due keys in the run loop', () => {
  it('file backend: two workers share the due keys, each rotated once', async () => {
    await scenario(tempDir('claim-file'), '', { KEYROTOR_MASTER_KEY: MASTER });
  }, 60_000);

  const PG = postgresSupportOrSkip('claiming on PostgreSQL');
  describe.skipIf(!PG)('postgres', () => {
    let server: Postgres;
    let url = '';
    beforeAll(async () => {
      server = await startPostgres();
      url = await server.createDatabase('claim');
    }, 60_000);
    afterAll(async () => {
      await server?.close();
    });
    it('postgres backend: two workers share the due keys, each rotated once', async () => {
      await scenario(tempDir('claim-pg'), 'state: { type: postgres }', {
        KEYROTOR_MASTER_KEY: MASTER,
        KEYROTOR_DATABASE_URL: url,
      });
    }, 60_000);
  });
});
