/**
 * Durable waits on the shared backends (real PostgreSQL 15, DynamoDB on moto): worker A parks a
 * rotation at its manual gate and is gone; `keyrotor confirm` runs as a process on another "host"
 * (its own directory and state dir; only the database is shared) and wakes it; worker B — another
 * state-store instance, nothing in memory — continues it and finishes it. And a parked rotation is
 * not "due" to a worker before its wake time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, rotateKeys, resumableAt } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { isLease } from '../../src/core/ports.ts';
import { runCli, workspace } from '../entrypoints/cli-helpers.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { keyConfig } from '../helpers/config.ts';

const MASTER = '6a'.repeat(32);
const AWS = {
  AWS_ACCESS_KEY_ID: 'testing-access-key',
  AWS_SECRET_ACCESS_KEY: 'testing-secret-key',
  AWS_EC2_METADATA_DISABLED: 'true',
};

const configText = (state: string, health: string): string =>
  keyConfig({ state, health, defaults: ['park: { after: 1s }'] });

async function scenario(name: string, state: string, env: NodeJS.ProcessEnv) {
  const fullEnv = { ...env, KEYROTOR_MASTER_KEY: MASTER };
  const gate = '\n      - { type: manual, name: ops, timeout: 60s, interval: 20s }';
  const hostA = workspace(configText(state, gate), `${name}-a`);
  const hostB = workspace(configText(state, gate), `${name}-b`);
  const file = path.join(hostA, 'rotation.config.yaml');
  const cfg = parseConfig(readFileSync(file, 'utf8'), file, fullEnv);
  const setup = createStateStore(cfg, fullEnv);
  await setup.init?.();
  const boot = parseConfig(configText(state, ' []'), file, fullEnv);
  const first = await rotateKey(boot.keys[0]!, {
    config: boot,
    stateStore: setup,
    logger: silentLogger(),
    env: fullEnv,
    now: true,
  });
  expect(first.outcome).toBe('rotated');

  // worker A parks it and is gone
  const a = createStateStore(cfg, fullEnv);
  const parked = await rotateKey(cfg.keys[0]!, {
    config: cfg,
    stateStore: a,
    logger: silentLogger(),
    env: fullEnv,
    now: true,
    park: true,
  });
  expect(parked).toMatchObject({ outcome: 'waiting', stage: 'confirm', oldKeyId: first.newKeyId });
  await a.close?.();
  const rec = await setup.read('app');
  expect(rec?.active).toMatchObject({ rotationId: parked.rotationId, wakeAt: parked.wakeAt });
  expect(resumableAt(rec)).toBe(Date.parse(parked.wakeAt!));
  const probe = await setup.acquire('app', 'probe', 1000);
  expect(isLease(probe)).toBe(true); // nobody holds it
  if (isLease(probe)) await probe.release();

  // a worker before the wake time leaves it alone
  const b = createStateStore(cfg, fullEnv);
  const early = await rotateKeys(cfg.keys, {
    config: cfg,
    stateStore: b,
    logger: silentLogger(),
    env: fullEnv,
    park: true,
  });
  expect(early[0]).toMatchObject({ outcome: 'waiting', untouched: true, rotationId: parked.rotationId });

  // `keyrotor confirm` from another host wakes it
  const c = await runCli(['confirm', 'app', '--json'], { cwd: hostB, env: fullEnv, name: `${name}-confirm` });
  expect(c.code, c.stderr).toBe(0);
  expect(JSON.parse(c.stdout)).toMatchObject({ rotationId: parked.rotationId, decision: 'confirm', woken: true });
  expect((await setup.read('app'))?.active?.wakeAt).toBeUndefined();

  // worker B (another store instance, nothing in memory) continues it and finishes it
  const done = await rotateKeys(cfg.keys, {
    config: cfg,
    stateStore: b,
    logger: silentLogger(),
    env: fullEnv,
    park: true,
  });
  expect(done[0]).toMatchObject({ outcome: 'rotated', rotationId: parked.rotationId, oldKeyId: first.newKeyId });
  const after = await setup.read('app');
  expect(after).toMatchObject({ active: null, currentKeyId: done[0]!.newKeyId, last: { outcome: 'rotated' } });
  await b.close?.();
  await setup.close?.();
}

const PG = postgresSupportOrSkip('durable waits on PostgreSQL');
describe.skipIf(!PG)('durable waits: PostgreSQL', () => {
  const db = usePostgresDatabase('waits');
  it('a rotation parked by one worker is continued by another', async () => {
    await scenario('waits-pg', 'state: { type: postgres, schema: waits }', { KEYROTOR_DATABASE_URL: db.url() });
  }, 60_000);
});

const MOTO = motoSupportOrSkip('durable waits on DynamoDB');
describe.skipIf(!MOTO)('durable waits: DynamoDB (moto)', () => {
  let moto: Moto;
  const saved: Record<string, string | undefined> = {};
  beforeAll(async () => {
    moto = await startMoto({ serial: true });
    // the SDK's default credential chain reads this process's environment
    for (const [k, v] of Object.entries(AWS)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  afterAll(async () => {
    await moto?.close();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  it('a rotation parked by one worker is continued by another', async () => {
    await scenario(
      'waits-ddb',
      `state: { type: dynamodb, table: waits-state, region: us-east-1, endpoint: '${moto.endpoint}' }`,
      { ...AWS },
    );
  }, 60_000);
});
