/**
 * An in-memory StateStore for the P1 decomposition: the same run loop with the per-transition
 * snapshot writes made free, to show how much of keyrotor's time is persistence. Not durable; never
 * used outside the benchmark.
 */
import type {
  KeyRecord,
  Lease,
  LeaseHolder,
  PersistedRotation,
  RotationResult,
  StateStore,
} from '../../src/core/ports.ts';

export function memoryStateStore(): StateStore & { writes: number } {
  const records = new Map<string, KeyRecord>();
  const leases = new Map<string, LeaseHolder>();
  let grants = 0;
  const empty = (keyName: string): KeyRecord => ({
    keyName,
    active: null,
    last: null,
    lastRotatedAt: null,
    currentKeyId: null,
    providerState: {},
  });
  const get = (k: string) => records.get(k) ?? empty(k);
  const store = {
    label: 'memory',
    writes: 0,
    async read(k: string) {
      return records.get(k) ?? null;
    },
    async saveActive(k: string, rotation: PersistedRotation) {
      store.writes++;
      records.set(k, { ...get(k), active: rotation });
    },
    async finish(
      k: string,
      result: RotationResult,
      currentKeyId?: string | null,
      keepActive?: PersistedRotation | null,
    ) {
      store.writes++;
      const r = get(k);
      records.set(k, {
        ...r,
        active: keepActive ?? null,
        last: result,
        lastRotatedAt: result.outcome === 'rotated' ? (result.finishedAt ?? new Date().toISOString()) : r.lastRotatedAt,
        currentKeyId: currentKeyId === undefined ? r.currentKeyId : currentKeyId,
      });
    },
    async setProviderState(k: string, key: string, value: string) {
      store.writes++;
      const r = get(k);
      records.set(k, { ...r, providerState: { ...r.providerState, [key]: value } });
    },
    async acquire(k: string, owner: string, ttlMs: number): Promise<Lease | LeaseHolder> {
      const held = leases.get(k);
      if (held && held.owner !== owner && held.expiresAt > Date.now()) return held;
      const lease: Lease = {
        owner,
        expiresAt: Date.now() + ttlMs,
        token: ++grants,
        async renew() {},
        async release() {
          if (leases.get(k)?.owner === owner) leases.delete(k);
        },
      };
      leases.set(k, { owner, expiresAt: lease.expiresAt });
      return lease;
    },
    async put(record: KeyRecord) {
      store.writes++;
      records.set(record.keyName, structuredClone(record));
    },
    async keys() {
      return [...records.keys()].sort();
    },
  };
  return store;
}
