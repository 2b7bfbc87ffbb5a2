/**
 * Waking a parked rotation early (`keyrotor confirm`): clear its `wakeAt`, so the next worker run
 * continues it at once instead of at its wake time. A write under the key's lease (fenced like every
 * state write), so it can never overwrite a newer snapshot of a worker that holds the rotation.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { isLease, type StateStore } from '../../core/ports.ts';

export type WakeOutcome =
  /** its wake time was cleared: the next worker run continues it at once */
  | 'woken'
  /** it was not parked (or its wake time had come already): nothing to do */
  | 'not_parked'
  /** a worker holds it right now: that worker sees the change at its current or next check */
  | 'held';

export async function wakeParked(
  stateStore: StateStore,
  keyName: string,
  rotationId: string,
  now: number,
  who = 'wake',
): Promise<WakeOutcome> {
  const parkedLater = (wakeAt: string | undefined) => wakeAt !== undefined && Date.parse(wakeAt) > now;
  const before = await stateStore.read(keyName);
  if (before?.active?.rotationId !== rotationId || !parkedLater(before.active.wakeAt)) return 'not_parked';
  const got = await stateStore.acquire(
    keyName,
    `${who}:${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    30_000,
  );
  if (!isLease(got)) return 'held';
  try {
    // re-read under the lease: a worker may have continued (or finished) it in between
    const rec = await stateStore.read(keyName);
    const active = rec?.active;
    if (!active || active.rotationId !== rotationId || !parkedLater(active.wakeAt)) return 'not_parked';
    const { wakeAt: _cleared, ...rest } = active;
    await stateStore.saveActive(keyName, { ...rest, updatedAt: new Date(now).toISOString() }, got);
    return 'woken';
  } finally {
    await got.release().catch(() => undefined);
  }
}
