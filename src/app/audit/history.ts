/** Past rotations, rebuilt from audit records (for `keyrotor history`). */
import type { AuditEntry, AuditRecord } from './record.ts';

export interface HistoryStage {
  seq: number;
  at: string;
  /** the state entered: a stage, a compensation or a final state */
  state: string;
  stage: string | null;
  resumed?: boolean;
  error?: AuditEntry['error'];
}

export interface RotationHistory {
  /** null for attempts that never started a rotation (locked, provider trouble before the lease) */
  rotationId: string | null;
  key: string;
  startedAt: string;
  finishedAt: string | null;
  /** null while no result was recorded (still running, paused or the process died) */
  outcome: string | null;
  leaked: boolean;
  actor: string | null;
  user: string | null;
  host: string | null;
  oldKeyId: string | null;
  newKeyId: string | null;
  newFingerprint: string | null;
  /** every transition recorded, in order (a rotation resumed later continues the same list) */
  stages: HistoryStage[];
  error?: AuditEntry['error'];
  leftovers?: string[];
  bootstrap?: boolean;
  oldKeyLastUsedAt?: string | null;
}

export function buildHistory(
  records: AuditRecord[],
  opts: { key?: string | undefined; limit?: number | undefined } = {},
): RotationHistory[] {
  const byId = new Map<string, RotationHistory>();
  const out: RotationHistory[] = [];
  for (const r of records) {
    if (r.type !== 'transition' && r.type !== 'result') continue;
    if (!r.key || (opts.key && r.key !== opts.key)) continue;
    const id = r.rotationId ?? null;
    let h = id ? byId.get(id) : undefined;
    if (!h) {
      h = {
        rotationId: id,
        key: r.key,
        startedAt: r.startedAt ?? r.time,
        finishedAt: null,
        outcome: null,
        leaked: r.leaked === true,
        actor: r.actor ?? null,
        user: r.user ?? null,
        host: r.host ?? null,
        oldKeyId: r.oldKeyId ?? null,
        newKeyId: r.newKeyId ?? null,
        newFingerprint: r.newFingerprint ?? null,
        stages: [],
      };
      out.push(h);
      if (id) byId.set(id, h);
    }
    if (r.oldKeyId) h.oldKeyId = r.oldKeyId;
    if (r.newKeyId) h.newKeyId = r.newKeyId;
    if (r.newFingerprint) h.newFingerprint = r.newFingerprint;
    if (r.leaked) h.leaked = true;
    if (r.type === 'transition') {
      h.stages.push({
        seq: r.seq,
        at: r.time,
        state: r.state ?? '?',
        stage: r.stage ?? null,
        ...(r.resumed ? { resumed: true } : {}),
        ...(r.error ? { error: r.error } : {}),
      });
      if (r.error) h.error = r.error;
    } else {
      h.outcome = r.outcome ?? null;
      h.finishedAt = r.finishedAt ?? r.time;
      if (r.startedAt) h.startedAt = r.startedAt;
      if (r.actor) h.actor = r.actor;
      if (r.error) h.error = r.error;
      else if (r.outcome === 'rotated') delete h.error;
      if (r.leftovers?.length) h.leftovers = r.leftovers;
      if (r.bootstrap) h.bootstrap = true;
      if (r.oldKeyLastUsedAt !== undefined) h.oldKeyLastUsedAt = r.oldKeyLastUsedAt;
    }
  }
  return opts.limit !== undefined && opts.limit >= 0 ? out.slice(Math.max(0, out.length - opts.limit)) : out;
}
