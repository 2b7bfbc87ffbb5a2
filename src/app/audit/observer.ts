/**
 * The audit observer: one record per workflow transition (awaited in order by run.ts, after the
 * snapshot of that transition is saved) and one per rotation result. References only.
 */
import { hostname, userInfo } from 'node:os';
import { STAGES, COMPENSATIONS } from '../../core/stages.ts';
import type { Logger } from '../../core/ports.ts';
import type { KeyResult, RotationObserver, TransitionEvent } from '../run.ts';
import type { AuditEntry } from './record.ts';
import type { AuditSink } from './sink.ts';

const STAGE_NAMES = new Set<string>([...STAGES, ...COMPENSATIONS]);

export interface AuditObserverOptions {
  sink: AuditSink;
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

  return {
    async onTransition(e) {
      let s = seen.get(e.rotationId);
      const first = !s;
      if (!s) seen.set(e.rotationId, (s = { lastError: null }));
      const errKey = e.error ? `${e.error.code}:${e.error.stage ?? ''}:${e.error.message}` : null;
      const newError = errKey !== null && errKey !== s.lastError;
      s.lastError = errKey;
      await o.sink.append({
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
      });
    },

    async onResult(r) {
      if (r.dryRun) return;
      if (r.outcome === 'skipped' && !r.rotationId) return; // not due: no rotation happened
      if (r.rotationId) seen.delete(r.rotationId);
      await o.sink.append({
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
        ...(r.revokedFirst
          ? {
              revokedFirst: true,
              consumersWithoutKeyMs: r.consumersWithoutKeyMs,
              ...(r.consumersStillWithoutKey ? { consumersStillWithoutKey: true } : {}),
            }
          : {}),
        ...(r.startedAt ? { startedAt: r.startedAt } : {}),
        ...(r.finishedAt ? { finishedAt: r.finishedAt } : {}),
      });
    },
  };
}
