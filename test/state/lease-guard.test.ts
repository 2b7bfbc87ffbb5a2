/**
 * A worker paused past its lease (SIGSTOP, a frozen container) must not act on the issuer or the
 * stores when it wakes: the fencing token stops its state writes, but the issuer cannot check a token.
 * Found by the fleet chaos test (seed 2701569689): a worker stopped inside a resumed `issue` woke after
 * a successor had finished the rotation, and its create's lookup by name deleted the key the successor
 * had minted under the same rotation's name — the key consumers were using (`live none`).
 *
 * - `leaseGuard(lease, ttl).ensure()` on real backends (file, PostgreSQL): no write while more than
 *   half the ttl is provably left; a renewal otherwise; LEASE_LOST once someone else was granted it.
 * - The run loop: a worker that passed its `issue` barrier, then lost its lease while a successor
 *   rotated the key, deletes nothing and mints nothing (file backend, local issuer).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, rotateKeys } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { leaseGuard } from '../../src/app/state/hold.ts';
import { toKeyrotorError } from '../../src/core/errors.ts';
import { isLease, type Lease, type StateStore } from '../../src/core/ports.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { postgresSupport } from '../fakes/postgres.ts';

const MASTER = '6f'.repeat(32);
const PG = postgresSupport().available;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(stateLine = '', ttl = '1s', extraEnv: NodeJS.ProcessEnv = {}) {
  const dir = tempDir('lease-guard');
  const env = { KEYROTOR_MASTER_KEY: MASTER, ...extraEnv };
  const text = `version: 1
${stateLine}
defaults:
  verify: { timeout: 5s, interval: 20ms }
  verifyRevoked: { timeout: 5s, interval: 20ms }
  revoke: { attempts: 2, backoff: 20ms }
  lease: { ttl: ${ttl} }
keys:
  - { name: g0, issuer: { type: local }, stores: [ { type: file } ] }
`;
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, text);
  const cfg = parseConfig(text, file, env);
  return { dir, cfg, env, store: createStateStore(cfg, env) };
}

async function grant(store: StateStore, owner: string, ttlMs: number): Promise<Lease> {
  const got = await store.acquire('g0', owner, ttlMs);
  if (!isLease(got)) throw new Error(`expected a lease, ${got.owner} holds it`);
  return got;
}

/** a lease whose renewals are counted */
function counted(lease: Lease): { lease: Lease; renewals: () => number } {
  let n = 0;
  const l = Object.create(lease, {
    renew: {
      value: async () => {
        n++;
        return lease.renew();
      },
    },
  }) as Lease;
  return { lease: l, renewals: () => n };
}

function guardContract(name: string, make: () => StateStore, skip = false) {
  describe.skipIf(skip)(`leaseGuard on the ${name} backend`, () => {
    it('no write while more than half the ttl is left; a renewal after; LEASE_LOST once another worker has it', async () => {
      const store = make();
      await store.init?.();
      try {
        const ttl = 600;
        const { lease, renewals } = counted(await grant(store, 'worker-a', ttl));
        const guard = leaseGuard(lease, ttl)!;
        await guard.ensure();
        await guard.ensure();
        expect(renewals()).toBe(0);
        // more than half the ttl gone: the guard renews (the lease is still ours) and then trusts it again
        await sleep(ttl / 2 + 80);
        await guard.ensure();
        expect(renewals()).toBe(1);
        await guard.ensure();
        expect(renewals()).toBe(1);
        // paused past the lease: another worker was granted it; the guard's renewal finds that out
        await sleep(ttl + 150);
        const b = await grant(store, 'worker-b', 60_000);
        const err = await guard.ensure().then(
          () => null,
          (e: unknown) => toKeyrotorError(e),
        );
        expect(err?.code).toBe('LEASE_LOST');
        expect(renewals()).toBe(2);
        await b.release();
      } finally {
        await store.close?.();
      }
    });

    it('the monotonic clock is trusted over a wall clock that says the lease is fresh', async () => {
      const store = make();
      await store.init?.();
      try {
        const ttl = 60_000;
        const { lease, renewals } = counted(await grant(store, 'worker-c', ttl));
        let mono = 0;
        const guard = leaseGuard(lease, ttl, () => mono)!;
        await guard.ensure();
        expect(renewals()).toBe(0);
        // the process slept 40 s by its monotonic clock (the wall clock did not move, e.g. it was set back)
        mono += 40_000;
        await guard.ensure();
        expect(renewals()).toBe(1);
        await lease.release();
      } finally {
        await store.close?.();
      }
    });
  });
}

guardContract('file', () => setup().store);
describe.skipIf(!PG)('PostgreSQL', () => {
  const db = usePostgresDatabase('lease_guard');
  guardContract('postgres', () => {
    return setup('state: { type: postgres, schema: guard }', '1s', { KEYROTOR_DATABASE_URL: db.url() }).store;
  });
});

describe('a worker that lost its lease after its write-ahead barrier acts on nothing', () => {
  it('resumed at issue, paused past its lease while a successor rotated the key: the successor’s key stays live', async () => {
    const ttlMs = 1000;
    const { dir, cfg, env, store } = setup('', '1s');
    const key = cfg.keys[0]!;
    const o = { config: cfg, logger: silentLogger(), env };
    expect((await rotateKeys(cfg.keys, { ...o, stateStore: store, now: true })).map((r) => r.outcome)).toEqual([
      'rotated',
    ]);

    // a rotation stopped at its `issue` barrier (its snapshot says issue; it created nothing)
    const stop = new AbortController();
    const stopping = Object.create(store) as StateStore;
    stopping.saveActive = async (...args) => {
      await store.saveActive(...args);
      if (String((args[1].snapshot as { value?: unknown }).value) === 'issue') stop.abort();
    };
    const first = await rotateKey(key, { ...o, stateStore: stopping, now: true, signal: stop.signal });
    expect(first.outcome).toBe('in_progress');
    const rotationId = (await store.read('g0'))!.active!.rotationId;

    // worker A resumes it (its create looks the rotation's name up and deletes what it finds) and is
    // "paused" right after its issue barrier: no renewal gets through until it wakes, and meanwhile
    // its lease expires and worker B resumes and finishes the same rotation
    let frozen = false;
    let successor: Awaited<ReturnType<typeof rotateKey>> | undefined;
    const a = Object.create(store) as StateStore;
    a.acquire = async (...args) => {
      const got = await store.acquire(...args);
      if (!isLease(got)) return got;
      return Object.create(got, {
        renew: {
          value: async () => {
            while (frozen) await sleep(20);
            return got.renew();
          },
        },
      }) as Lease;
    };
    let paused = false;
    a.saveActive = async (...args) => {
      await store.saveActive(...args);
      if (paused || String((args[1].snapshot as { value?: unknown }).value) !== 'issue') return;
      paused = true;
      frozen = true;
      await sleep(ttlMs + 300);
      successor = await rotateKey(key, { ...o, stateStore: store });
      frozen = false;
    };
    const zombie = await rotateKey(key, { ...o, stateStore: a });

    expect(successor?.outcome).toBe('rotated');
    expect(successor?.rotationId).toBe(rotationId);
    expect(zombie.outcome).not.toBe('rotated');
    expect(zombie.error?.code).toBe('LEASE_LOST');
    const rec = (await store.read('g0'))!;
    expect(rec.active).toBeNull();
    expect(rec.currentKeyId).toBe(successor!.newKeyId);
    // the issuer (local registry) still holds the successor's key, and only it
    const registry = JSON.parse(readFileSync(path.join(dir, '.keyrotor', 'local-issuer', 'g0.json'), 'utf8')) as {
      keys: { id: string }[];
    };
    expect(registry.keys.map((k) => k.id)).toEqual([rec.currentKeyId]);
    await store.close?.();
  });
});
