/**
 * Holding a per-key lease while work runs: renewed every third of its ttl (a renewal that fails is
 * logged; the fencing token stops a holder that lost it at its next write), released at the end
 * whatever happens.
 */
import { toKeyrotorError } from '../../core/errors.ts';
import type { Lease, Logger } from '../../core/ports.ts';

export async function whileHolding<T>(lease: Lease, ttlMs: number, log: Logger, work: () => Promise<T>): Promise<T> {
  const renew = setInterval(
    () => {
      lease
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
