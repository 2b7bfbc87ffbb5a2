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
