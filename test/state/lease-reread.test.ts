/**
 * The per-key path (`rotateKey`: read, decide, acquire the lease, read again) on the file backend: when
 * another worker finishes the key's rotation between the first read and the lease, the record read
 * again under the lease decides: the key is not rotated a second time. Found by the fleet chaos test
 * (seed 296613208): a worker's end-of-run pass read a rotation in progress, got the lease right after
 * its holder finished and released it, and started a new rotation of the just-rotated key.
 */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, rotateKeys } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import type { KeyRecord, StateStore } from '../../src/core/ports.ts';
import { tempDir } from '../helpers/artifacts.ts';

const MASTER = '5e'.repeat(32);
const DAY = 86_400_000;

function setup() {
  const dir = tempDir('lease-reread');
  const env = { KEYROTOR_MASTER_KEY: MASTER };
  const text = `version: 1
defaults:
  verify: { timeout: 5s, interval: 20ms }
  verifyRevoked: { timeout: 5s, interval: 20ms }
  revoke: { attempts: 2, backoff: 20ms }
keys:
  - { name: r0, schedule: { every: 30d }, issuer: { type: local }, stores: [ { type: file } ] }
`;
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, text);
  const cfg = parseConfig(text, file, env);
  return { cfg, env, store: createStateStore(cfg, env) };
}

/** a store whose next `acquire` first lets "another worker" change the record */
function racing(store: StateStore, meanwhile: () => Promise<void>): StateStore {
  const s = Object.create(store) as StateStore;
  let once = false;
  s.acquire = async (...args) => {
    if (!once) {
      once = true;
      await meanwhile();
    }
    return store.acquire(...args);
  };
  return s;
}

describe('the record read again under the lease decides (per-key path)', () => {
  it('a due key another worker rotated before this one got the lease is skipped, not rotated again', async () => {
    const { cfg, env, store } = setup();
    const o = { config: cfg, logger: silentLogger(), env };
    const boot = await rotateKeys(cfg.keys, { ...o, stateStore: store, now: true });
    expect(boot.map((r) => r.outcome)).toEqual(['rotated']);
    const longAgo = new Date(Date.now() - 31 * DAY).toISOString();
    await store.put({ ...(await store.read('r0'))!, lastRotatedAt: longAgo });
    let after: KeyRecord | null = null;
    const s = racing(store, async () => {
      await store.put({ ...(await store.read('r0'))!, lastRotatedAt: new Date().toISOString() }); // "another worker"
      after = await store.read('r0');
    });
    const r = await rotateKey(cfg.keys[0]!, { ...o, stateStore: s });
    expect(r).toMatchObject({ key: 'r0', outcome: 'skipped' });
    expect(await store.read('r0')).toEqual(after);
  });

  it('`resume` of a rotation another worker finished before this one got the lease starts no new one', async () => {
    const { cfg, env, store } = setup();
    const o = { config: cfg, logger: silentLogger(), env };
    await rotateKeys(cfg.keys, { ...o, stateStore: store, now: true });
    const rec = (await store.read('r0'))!;
    const active = {
      rotationId: 'rot-20261101t000000z-0000000d',
      keyName: 'r0',
      machineVersion: 3,
      keyrotorVersion: 'test',
      updatedAt: new Date().toISOString(),
      snapshot: { status: 'active', value: 'confirm', context: {} },
    };
    await store.put({ ...rec, active });
    let after: KeyRecord | null = null;
    const s = racing(store, async () => {
      // "another worker" finished it
      await store.put({ ...(await store.read('r0'))!, active: null, lastRotatedAt: new Date().toISOString() });
      after = await store.read('r0');
    });
    const r = await rotateKey(cfg.keys[0]!, { ...o, stateStore: s, resumeOnly: true });
    expect(r).toMatchObject({ key: 'r0', outcome: 'skipped' });
    expect(await store.read('r0')).toEqual(after);
  });
});
