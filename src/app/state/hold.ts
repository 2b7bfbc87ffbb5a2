/**
 * Holding a per-key lease while work runs: renewed every third of its ttl (a renewal that fails is
 * logged; the fencing token stops a holder that lost it at its next write), released at the end
 * whatever happens.
 *
 * The fencing token guards state writes only. The issuer and the secret stores cannot check a token,
 * so before a call there that a successor's work could make harmful (deleting keys, writing a store)
 * the worker asks `leaseGuard(lease, ttl).ensure()`: it passes at once while more than half the ttl
 * is provably left (by the wall clock against the lease's expiry, and by the monotonic clock since the
 * last grant or renewal this process saw, so a process paused past its lease, e.g. SIGSTOP or a frozen
 * container, does not trust its memory), else it renews the lease first, which fails with LEASE_LOST
 * when someone else was granted it meanwhile.
 */
import { KeyrotorError, toKeyrotorError } from '../../core/errors.ts';
import type { Fence, Lease, Logger } from '../../core/ports.ts';

export interface LeaseGuard {
  /** resolves while this process provably holds the lease; LEASE_LOST (or the renewal's error) otherwise */
  ensure(): Promise<void>;
  /** renew the lease now (the holder's timer) */
  renew(): Promise<void>;
}

const guards = new WeakMap<Lease, LeaseGuard>();

function isHeld(fence: Fence): fence is Lease {
  return typeof (fence as Partial<Lease>).renew === 'function';
}

/** The guard of a lease (one per lease object); a bare fence (no lease to renew) gets none. */
export function leaseGuard(
  fence: Fence,
  ttlMs: number,
  mono: () => number = () => performance.now(),
): LeaseGuard | null {
  if (!isHeld(fence)) return null;
  const known = guards.get(fence);
  if (known) return known;
  const lease = fence;
  // the monotonic time from which the lease was last confirmed (a renewal counts from when it was sent)
  let confirmedAt = mono();
  let renewing: Promise<void> | null = null;
  const renew = () => {
    if (renewing) return renewing;
    const sent = mono();
    renewing = lease
      .renew()
      .then(() => {
        confirmedAt = Math.max(confirmedAt, sent);
      })
      .finally(() => {
        renewing = null;
      });
    return renewing;
  };
  const guard: LeaseGuard = {
    renew,
    async ensure() {
      // (a renewal already on its way may have been sent before a pause: then one more)
      for (let i = 0; i < 3; i++) {
        const left = Math.min(lease.expiresAt - Date.now(), confirmedAt + ttlMs - mono());
        if (left > ttlMs / 2) return;
        // LEASE_LOST when someone else holds it now (the file lease says LOCKED); another failure (the
        // backend unreachable) is the caller's to retry: either way nothing is done on a lease this
        // process cannot confirm
        try {
          await renew();
        } catch (e) {
          const err = toKeyrotorError(e);
          if (err.code !== 'LOCKED') throw err;
          throw new KeyrotorError('LEASE_LOST', `${err.message}: this worker no longer acts on it`, { cause: e });
        }
      }
    },
  };
  guards.set(lease, guard);
  return guard;
}

export async function whileHolding<T>(lease: Lease, ttlMs: number, log: Logger, work: () => Promise<T>): Promise<T> {
  const guard = leaseGuard(lease, ttlMs)!;
  const renew = setInterval(
    () => {
      guard
        .renew()
        .catch((e: unknown) => log.error({ err: toKeyrotorError(e).toRecord() }, 'could not renew the lease'));
    },
    Math.max(1000, ttlMs / 3),
  );
  renew.unref();
  try {
    return await work();
  } finally {
    clearInterval(renew);
    await lease
      .release()
      .catch((e: unknown) => log.warn({ err: toKeyrotorError(e).toRecord() }, 'could not release the lease'));
  }
}
