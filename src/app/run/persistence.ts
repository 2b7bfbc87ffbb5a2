/**
 * Write-ahead persistence of one rotation and the fan-out to its observers.
 *
 * Every snapshot of the actor goes through `record`: while the rotation is active it is queued for
 * the state store (one write queue, in order); observers hear of each state entered after the write
 * that entered it. Stages wait for `flushed()` before they touch the world, so the snapshot that says
 * "we are in this stage" is durable first.
 *
 * One durable write per transition: when the audit observer's trail is the state store's own
 * (`StateStore.auditTrail`, the default for every backend), the transition's audit record is built
 * here and written in the same write as its snapshot (`saveActive(..., audit)`), and the final
 * transition's and the result's records with the result (`finish(..., audit)`): fenced like the
 * snapshot, both or neither. That observer's `onTransition` / `onResult` are then not used for them.
 *
 * Observers (the audit trail among them) hear only of what this worker may still write: once a write
 * was refused with LEASE_LOST (a successor owns the rotation), the transitions this stale worker's
 * machine still goes through are not reported, and the final state is reported only by `announceFinal`
 * after `finish` wrote the result under the lease.
 */
import type { SnapshotFrom } from 'xstate';
import type { Clock } from '../../core/clock.ts';
import { toKeyrotorError } from '../../core/errors.ts';
import type {
  AuditNotWritten,
  Fence,
  Logger,
  PersistedRotation,
  RotationResult,
  StateStore,
} from '../../core/ports.ts';
import type { AuditEntry } from '../../core/audit.ts';
import { MACHINE_VERSION, type RotationMachine } from '../../../workflows/rotation/rotation.machine.ts';
import { KEYROTOR_VERSION, type RotationObserver, type TransitionEvent } from './types.ts';

/** Call an observer; its failure is logged and never reaches the rotation. */
export async function notify(log: Logger, what: string, fn: () => void | Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    log.warn({ err: toKeyrotorError(e).toRecord() }, `observer failed on ${what} (the rotation is not affected)`);
  }
}

export interface Journal {
  /**
   * One snapshot of the actor: queue `persistedSnapshot` for the state store (null: do not persist,
   * e.g. the final snapshot, whose result `finish` records) and tell observers of a state entered.
   */
  record(s: SnapshotFrom<RotationMachine>, persistedSnapshot: unknown): void;
  /** true when `s` is the snapshot `record` was last given (the write-ahead barrier's quick check) */
  recorded(s: SnapshotFrom<RotationMachine>): boolean;
  /** resolves once every write (and transition observer) queued so far is done; never rejects */
  flushed(): Promise<void>;
  /** the first failed write, if any (the rotation must not go on without its state) */
  failure(): unknown;
  /** the last snapshot written while the rotation was active */
  lastActive(): PersistedRotation | null;
  /** true once a snapshot naming this new key id was written (a successor resuming from it may use the key) */
  wrote(newKeyId: string): boolean;
  /**
   * Record the result (`StateStore.finish`, fenced) together with the final transition's and the
   * result's audit records when the store keeps the audit trail (one write), then tell observers of
   * the final state.
   */
  finish(
    result: RotationResult,
    serving: string | null | undefined,
    keepActive: PersistedRotation | null,
  ): Promise<void>;
}

export function createJournal(o: {
  keyName: string;
  rotationId: string;
  stateStore: StateStore;
  /** the lease's fencing token: every write is conditional on it */
  fence: Fence;
  observers: RotationObserver[] | undefined;
  /** who runs this (audit) */
  actor: string | undefined;
  clock: Clock;
  log: Logger;
}): Journal {
  let chain: Promise<void> = Promise.resolve();
  let persistError: unknown = null;
  let lastState = '';
  let lastSnapshot: SnapshotFrom<RotationMachine> | null = null;
  let lastActive: PersistedRotation | null = null;
  let final: TransitionEvent | null = null;
  const written = new Set<string>();
  /** the audit observer whose trail this store writes with its snapshots (one write per transition) */
  const inlineObs = o.stateStore.auditTrail
    ? o.observers?.find((x) => x.inlineAudit?.trail === o.stateStore.auditTrail)
    : undefined;
  const inline = inlineObs?.inlineAudit;
  /** a write was refused because another worker holds the lease now */
  const lost = () => persistError !== null && toKeyrotorError(persistError).code === 'LEASE_LOST';
  const tell = (ev: TransitionEvent) => {
    for (const obs of o.observers ?? [])
      if (obs.onTransition && obs !== inlineObs)
        chain = chain.then(() => (lost() ? undefined : notify(o.log, 'transition', () => obs.onTransition!(ev))));
  };
  const wroteAudit = (entries: readonly AuditEntry[] | undefined, r: void | AuditNotWritten) => {
    if (!entries?.length || !inline) return;
    // the snapshot is written, the audit trail refused its records: an audit failure never stops a rotation
    if (r?.auditError)
      o.log.warn(
        { err: toKeyrotorError(r.auditError).toRecord() },
        'audit trail: the record of this transition was not written (the rotation is not affected)',
      );
    else inline.written(entries);
  };

  return {
    record(s, persistedSnapshot) {
      lastSnapshot = s;
      const state = String(s.value);
      // a per-store state is entered again for every store
      const entered = state !== lastState || s.hasTag('perStore');
      lastState = state;
      const ev = entered && o.observers?.some((x) => x.onTransition || x.inlineAudit) ? event(s, state) : null;
      if (persistedSnapshot !== null) {
        // the transition's audit record goes into the same write as its snapshot
        const audit = ev && inline ? [inline.transition(ev)] : undefined;
        const persisted: PersistedRotation = {
          rotationId: o.rotationId,
          keyName: o.keyName,
          machineVersion: MACHINE_VERSION,
          keyrotorVersion: KEYROTOR_VERSION,
          updatedAt: new Date(o.clock.now()).toISOString(),
          snapshot: persistedSnapshot,
        };
        lastActive = persisted;
        const newKeyId = s.context.newKeyId;
        chain = chain
          .then(() =>
            // after a refused write nothing more is written (a successor owns the rotation)
            lost() ? Promise.reject(persistError) : o.stateStore.saveActive(o.keyName, persisted, o.fence, audit),
          )
          .then((r) => {
            if (newKeyId) written.add(newKeyId);
            wroteAudit(audit, r);
          })
          .catch((e: unknown) => {
            persistError ??= e;
          });
      }
      if (ev) {
        // the final snapshot is written by `finish` with the result: announced after it
        if (persistedSnapshot === null) final = ev;
        else tell(ev);
      }
    },
    recorded: (s) => s === lastSnapshot,
    wrote: (id) => written.has(id),
    async finish(result, serving, keepActive) {
      const audit = inline ? [...(final ? [inline.transition(final)] : []), inline.result(result)] : undefined;
      wroteAudit(audit, await o.stateStore.finish(o.keyName, result, serving, keepActive, o.fence, audit));
      if (final) tell(final);
      final = null;
      await chain;
    },
    flushed: () => chain,
    failure: () => persistError,
    lastActive: () => lastActive,
  };

  function event(s: SnapshotFrom<RotationMachine>, state: string): TransitionEvent {
    const ctx = s.context;
    return {
      key: o.keyName,
      rotationId: o.rotationId,
      state,
      at: new Date(o.clock.now()).toISOString(),
      actor: o.actor ?? 'library',
      leaked: ctx.leaked,
      oldKeyId: ctx.oldKeyId,
      newKeyId: ctx.newKeyId,
      oldFingerprint: ctx.oldFingerprint,
      newFingerprint: ctx.newFingerprint,
      error: ctx.error,
    };
  }
}
