/** Is a key due, and does an earlier leak-mode rotation still leave the leaked key current? */
import type { ResolvedKey } from '../config/schema.ts';
import type { KeyRecord, RotationResult } from '../../core/ports.ts';

/**
 * The last rotation ran in leak mode and did not replace the compromised key, which is still the
 * current one: that result, else null. Until a rotation replaces it, every rotation of the key runs in
 * leak mode (it never restores that key, skips the consumer gates and revokes it at once), and the
 * key is due at once: a scheduled run finishes what a failed `rotate --now --leaked` started.
 */
export function unreplacedLeak(record: KeyRecord | null): (RotationResult & { oldKeyId: string }) | null {
  const last = record?.last;
  const current = record?.currentKeyId;
  if (!last?.leaked || last.outcome === 'rotated' || !current) return null;
  if (last.newKeyId && last.newKeyId === current) return null; // the new key did replace it (e.g. only the revoke needs a human)
  // a rotation that failed before it identified the old key (preflight) changed nothing: the
  // leaked key is the one still current
  const leakedId = last.oldKeyId ?? current;
  return leakedId === current ? { ...last, oldKeyId: leakedId } : null;
}

export function isDue(
  key: ResolvedKey,
  record: KeyRecord | null,
  now: number,
): { due: boolean; reason: string; nextDueAt: string | null } {
  const leak = unreplacedLeak(record);
  if (leak)
    return {
      due: true,
      reason: `the current key ${leak.oldKeyId} was reported leaked (rotation ${leak.rotationId}) and is not replaced yet`,
      nextDueAt: null,
    };
  if (!record?.lastRotatedAt) return { due: true, reason: 'never rotated by keyrotor', nextDueAt: null };
  const next = Date.parse(record.lastRotatedAt) + key.schedule.every;
  return next <= now
    ? { due: true, reason: `due since ${new Date(next).toISOString()}`, nextDueAt: new Date(next).toISOString() }
    : { due: false, reason: `next due ${new Date(next).toISOString()}`, nextDueAt: new Date(next).toISOString() };
}

/**
 * When the unfinished rotation of `record` may be continued, in ms since epoch: its `wakeAt` when it
 * is parked at a wait (a durable deadline: no process holds it until then), 0 when it is resumable at
 * once (no `wakeAt`: running under a lease, or left by a crash or a pause), null when there is none.
 * An unreadable `wakeAt` counts as resumable at once (checking the wait early is always safe: its
 * deadline is in the snapshot). Workers continue a parked rotation once `resumableAt(record) <= now`;
 * before that a record whose only work is its parked rotation is not due.
 */
export function resumableAt(record: KeyRecord | null): number | null {
  const active = record?.active;
  if (!active) return null;
  if (active.wakeAt === undefined) return 0;
  const t = Date.parse(active.wakeAt);
  return Number.isFinite(t) ? t : 0;
}

/** The unfinished rotation is parked and its wake time has not come yet (a worker leaves it alone). */
export function parkedUntilLater(record: KeyRecord | null, now: number): boolean {
  const at = resumableAt(record);
  return at !== null && at > now;
}
