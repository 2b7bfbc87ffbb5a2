/**
 * The audit observer: one record per workflow transition and one per rotation result. References
 * only. With `trail` (the state backend's own audit trail) a rotation's records are written by the
 * state store together with its snapshots (see InlineAudit in run/types.ts); otherwise, and for
 * results that are not a rotation's (locked, not due, errors before the lease), they are appended to
 * `sink` (awaited in order, after the snapshot of that transition is saved).
 */
import { hostname, userInfo } from 'node:os';
import { STAGES, COMPENSATIONS } from '../../core/stages.ts';
import type { Logger, RotationResult } from '../../core/ports.ts';
import type { KeyResult, RotationObserver, TransitionEvent } from '../run.ts';
import type { AuditEntry } from './record.ts';
import type { AuditSink } from './sink.ts';

const STAGE_NAMES = new Set<string>([...STAGES, ...COMPENSATIONS]);

export interface AuditObserverOptions {
  sink: AuditSink;
  /**
   * `sink` is the trail a state store writes with its snapshots (its `AuditLog.trail`): a rotation
   * run on that store writes its transition and result records through the store, in one write with
   * each snapshot (see InlineAudit); everything else still goes to `sink`.
   */
  trail?: string | undefined;
  /** told of every record a store wrote inline (e.g. `logAuditSink` for `mirrorToLog`) */
  mirror?: AuditSink | undefined;
  /** who runs rotations (cli / lambda / cloud-run / daemon); transitions carry their own */
  actor?: string;
  /** overrides the OS user recorded (default: the OS user running the process) */
  user?: string;
  host?: string;
  logger?: Logger;
}

export function osUser(): string | undefined {
  try {
    return userInfo().username || undefined;
  } catch {
    return process.env.USER ?? process.env.USERNAME ?? undefined;
  }
}

function errorOf(e: TransitionEvent['error'] | KeyResult['error']): AuditEntry['error'] {
  if (!e) return undefined;
  return {
    code: e.code,
    message: e.message,
    ...(e.stage ? { stage: e.stage } : {}),
    ...(e.hint ? { hint: e.hint } : {}),
  };
}

export function auditObserver(o: AuditObserverOptions): RotationObserver {
  const user = o.user ?? osUser();
  const host = o.host ?? hostname();
  /** per rotation seen by this process: the last error recorded (errors stay in context once set) */
  const seen = new Map<string, { lastError: string | null }>();
  /** rotations whose result a store wrote inline: onResult does not append it again */
  const resultWritten = new Set<string>();

  const transitionEntry = (e: TransitionEvent): AuditEntry => {
    let s = seen.get(e.rotationId);
    const first = !s;
    if (!s) seen.set(e.rotationId, (s = { lastError: null }));
    const errKey = e.error ? `${e.error.code}:${e.error.stage ?? ''}:${e.error.message}` : null;
    const newError = errKey !== null && errKey !== s.lastError;
    s.lastError = errKey;
    return {
      type: 'transition',
      time: e.at,
      key: e.key,
      rotationId: e.rotationId,
      state: e.state,
      stage: STAGE_NAMES.has(e.state) ? e.state : null,
      actor: e.actor,
      user,
      host,
      leaked: e.leaked,
      ...(first && e.state !== 'preflight' ? { resumed: true } : {}),
      oldKeyId: e.oldKeyId,
      newKeyId: e.newKeyId,
      oldFingerprint: e.oldFingerprint,
      newFingerprint: e.newFingerprint,
      ...(newError ? { error: errorOf(e.error) } : {}),
    };
  };

  const resultEntry = (r: RotationResult): AuditEntry => {
    if (r.rotationId) seen.delete(r.rotationId);
    return {
      type: 'result',
      time: r.finishedAt ?? new Date().toISOString(),
      key: r.key,
      rotationId: r.rotationId,
      outcome: r.outcome,
      stage: r.stage ?? null,
      ...(o.actor ? { actor: o.actor } : {}),
      user,
      host,
      leaked: r.leaked === true,
      oldKeyId: r.oldKeyId,
      newKeyId: r.newKeyId,
      ...(r.error ? { error: errorOf(r.error) } : {}),
      ...(r.leftovers?.length ? { leftovers: r.leftovers } : {}),
      ...(r.bootstrap ? { bootstrap: true } : {}),
      ...(r.placeholder ? { placeholder: true } : {}),
      ...(r.leaked ? { oldKeyLastUsedAt: r.oldKeyLastUsedAt ?? null } : {}),
      ...(r.startedAt ? { startedAt: r.startedAt } : {}),
      ...(r.revokedFirst
        ? {
            revokedFirst: true,
            consumersWithoutKeyMs: r.consumersWithoutKeyMs,
            ...(r.consumersStillWithoutKey ? { consumersStillWithoutKey: true } : {}),
          }
        : {}),
      ...(r.finishedAt ? { finishedAt: r.finishedAt } : {}),
      ...(r.wakeAt ? { wakeAt: r.wakeAt } : {}),
    };
  };

  return {
    ...(o.trail
      ? {
          inlineAudit: {
            trail: o.trail,
            transition: transitionEntry,
            result: resultEntry,
            written(entries) {
              for (const e of entries) {
                if (e.type === 'result' && e.rotationId) resultWritten.add(e.rotationId);
                if (o.mirror) void o.mirror.append(e).catch(() => undefined);
              }
            },
          },
        }
      : {}),

    async onTransition(e) {
      await o.sink.append(transitionEntry(e));
    },

    async onResult(r) {
      if (r.dryRun) return;
      if (r.outcome === 'skipped' && !r.rotationId) return; // not due: no rotation happened
      // written by the state store with the rotation's last snapshot
      if (r.rotationId && resultWritten.delete(r.rotationId)) return;
      await o.sink.append(resultEntry(r));
    },
  };
}
