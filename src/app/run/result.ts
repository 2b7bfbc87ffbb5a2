/** What a finished or paused rotation reports, and what the key's record keeps of it. */
import type { Clock } from '../../core/clock.ts';
import type { PersistedRotation, RotationResult } from '../../core/ports.ts';
import type { Outcome, Stage } from '../../core/stages.ts';
import type { FinalState, RotationContext } from '../../../workflows/rotation/rotation.machine.ts';
import type { KeyResult } from './types.ts';

export function resultFrom(keyName: string, state: FinalState, ctx: RotationContext, clock: Clock): RotationResult {
  // another orchestrator's pending version blocked staging (store-level lock): we undid our part
  const lostLock = ctx.error?.code === 'LOCKED' && (state === 'rolledBack' || state === 'failed');
  const outcome: Outcome = lostLock
    ? 'locked'
    : state === 'rotated'
      ? ctx.oldKeyUnidentified
        ? 'needs_attention'
        : 'rotated'
      : state === 'rolledBack' || state === 'failed'
        ? 'rolled_back'
        : 'needs_attention';
  const error =
    state === 'rollbackFailed' && ctx.compensationError
      ? {
          ...ctx.compensationError,
          code: 'ROLLBACK_FAILED' as const,
          message: `rollback failed at ${ctx.compensationError.stage}: ${ctx.compensationError.message}${ctx.error ? ` (after: ${ctx.error.message})` : ''}`,
        }
      : (ctx.error ?? undefined);
  const stage: Stage | undefined = ctx.compensationError?.stage ?? ctx.error?.stage;
  return {
    key: keyName,
    rotationId: ctx.rotationId,
    outcome,
    oldKeyId: ctx.oldKeyId,
    // a rolled-back key no longer exists: report it so the operator can see what was discarded
    newKeyId: ctx.newKeyId,
    ...(error && state !== 'rotated' ? { error } : {}),
    ...(ctx.leftovers.length ? { leftovers: ctx.leftovers } : {}),
    ...(ctx.bootstrap ? { bootstrap: true } : {}),
    ...(ctx.placeholder ? { placeholder: true } : {}),
    ...(ctx.leaked ? { leaked: true, oldKeyLastUsedAt: ctx.oldKeyLastUsedAt } : {}),
    ...consumersWithoutKey(ctx, clock),
    ...(stage ? { stage } : {}),
    startedAt: new Date(ctx.startedAt).toISOString(),
    finishedAt: new Date(clock.now()).toISOString(),
  };
}

/** A rotation stopped cleanly at `state` (pause or time budget): the next run resumes it. */
export function pausedResult(keyName: string, rotationId: string, state: string, ctx: RotationContext): KeyResult {
  return {
    key: keyName,
    rotationId,
    outcome: 'in_progress',
    oldKeyId: ctx.oldKeyId,
    newKeyId: ctx.newKeyId,
    stage: state as Stage,
    startedAt: new Date(ctx.startedAt).toISOString(),
  };
}

/** A rotation parked at a wait (`state`): saved with its wake time and released; any worker continues it then. */
export function waitingResult(
  keyName: string,
  rotationId: string,
  state: string,
  ctx: Pick<RotationContext, 'oldKeyId' | 'newKeyId' | 'startedAt' | 'leaked'>,
  wakeAt: string,
  untouched = false,
): KeyResult {
  return {
    key: keyName,
    rotationId,
    outcome: 'waiting',
    oldKeyId: ctx.oldKeyId,
    newKeyId: ctx.newKeyId,
    stage: state as Stage,
    ...(ctx.leaked ? { leaked: true } : {}),
    startedAt: new Date(ctx.startedAt).toISOString(),
    wakeAt,
    ...(untouched ? { untouched: true } : {}),
  };
}

/** The `waiting` result of a rotation parked earlier, read from its saved snapshot (references only). */
export function parkedResult(keyName: string, active: PersistedRotation): KeyResult {
  const s = (active.snapshot ?? {}) as { value?: unknown; context?: Record<string, unknown> };
  const c = s.context ?? {};
  const str = (v: unknown) => (typeof v === 'string' ? v : null);
  return waitingResult(
    keyName,
    active.rotationId,
    typeof s.value === 'string' ? s.value : 'confirm',
    {
      oldKeyId: str(c.oldKeyId),
      newKeyId: str(c.newKeyId),
      startedAt: typeof c.startedAt === 'number' ? c.startedAt : Date.parse(active.updatedAt),
      leaked: c.leaked === true,
    },
    active.wakeAt ?? active.updatedAt,
    true,
  );
}

/**
 * What the key's record keeps of a finished rotation: the key the stores serve now (undefined: leave
 * the record's as it is) and the snapshot to keep active (null: none).
 */
export function recordAfter(
  state: FinalState,
  ctx: RotationContext,
  lastActive: PersistedRotation | null,
): { serving: string | null | undefined; keepActive: PersistedRotation | null } {
  // the key the stores serve now: the new one once every store was promoted and not demoted
  const allPromoted = ctx.promoted === ctx.storeLabels.length;
  // (undefined: leave the record's as it is — after a failed rollback, or when the rotation stopped
  // before it identified the old key, i.e. changed nothing)
  let serving: string | null | undefined = ctx.oldKeyId ?? undefined;
  if (state === 'rotated' || (state === 'needsAttention' && allPromoted)) serving = ctx.newKeyId;
  else if (state === 'rollbackFailed') serving = undefined;
  // Leak mode stopped at promote: the leaked key must never be restored, so the only way out is
  // forward. Keep the rotation resumable at the promote it could not finish (in the same write as the
  // result, so no crash can lose it): once the store is fixed, `keyrotor resume` (or the next
  // `rotate`) promotes the rest and revokes the leaked key.
  const keepActive = state === 'needsAttention' && ctx.leaked && ctx.error?.stage === 'promote' ? lastActive : null;
  return { serving, keepActive };
}

/**
 * Revoke-first: consumers had no working key from the delete of the leaked key until every store
 * served the new one (or until now, when the rotation stopped before that).
 */
function consumersWithoutKey(
  ctx: RotationContext,
  clock: Clock,
): Pick<RotationResult, 'revokedFirst' | 'consumersWithoutKeyMs' | 'consumersStillWithoutKey'> {
  if (typeof ctx.oldKeyRevokedAt !== 'number') return {};
  const served = ctx.promotedAt ?? null;
  return {
    revokedFirst: true,
    consumersWithoutKeyMs: Math.max(0, (served ?? clock.now()) - ctx.oldKeyRevokedAt),
    ...(served === null ? { consumersStillWithoutKey: true } : {}),
  };
}
