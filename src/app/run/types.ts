/** The options and results of a run, and what observers are told (references only, never a value). */
import type { LoadedConfig } from '../config/load.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger, RotationResult, StateStore } from '../../core/ports.ts';
import type { AuditEntry } from '../../core/audit.ts';
import type { RotationContext } from '../../../workflows/rotation/rotation.machine.ts';
import type { StageEvent } from '../../../workflows/rotation/stages/index.ts';

export { KEYROTOR_VERSION } from '../version.ts';

export interface RotateOptions {
  config: LoadedConfig;
  stateStore: StateStore;
  logger: Logger;
  /** rotate even if not due */
  now?: boolean;
  /** leak mode: the current key is compromised */
  leaked?: boolean;
  /**
   * with `leaked`: delete the leaked key right after preflight, before the new key is issued (consumers
   * have no working key until it is promoted; the result says for how long)
   */
  revokeFirst?: boolean;
  /** print the plan, change nothing */
  dryRun?: boolean;
  clock?: Clock;
  env?: NodeJS.ProcessEnv;
  /** who runs this (audit): cli / lambda / cloud-run / daemon */
  actor?: string;
  /** only finish unfinished rotations; start no new one (`keyrotor resume`) */
  resumeOnly?: boolean;
  /**
   * Stop cleanly when this signal aborts or at `pauseAt` (ms since epoch): a stage already talking to
   * a provider finishes, no new stage starts, a wait is cut short; the snapshot stays in the state
   * store and the result is `in_progress`. The next run resumes with the same deadlines.
   */
  signal?: AbortSignal;
  pauseAt?: number;
  /**
   * Durable waits: park a rotation whose next check of a wait (a health gate, verify, a revoke
   * backoff) is at least the key's `defaults.park.after` away — save its snapshot with `wakeAt`, stop
   * it, release the lease, result `waiting` — instead of holding it in this process. Daemon, serve
   * and Lambda park; the CLI's `rotate`/`resume` only with `--park` (an operator watches them live).
   */
  park?: boolean;
  /**
   * Continue a parked rotation now, before its `wakeAt` (`resume --now`, the Secrets Manager steps).
   * `now: true` implies it. Otherwise a parked rotation whose wake time has not come is left alone:
   * result `waiting` with `untouched: true`, no lease taken, nothing written.
   */
  wake?: boolean;
  /** keys rotated at the same time by rotateKeys (default 4) */
  concurrency?: number;
  /** audit, metrics, notifications, progress: told about every transition, stage and result */
  observers?: RotationObserver[];
}

/** A workflow transition, references only (for audit trails and progress). */
export interface TransitionEvent {
  key: string;
  rotationId: string;
  /** the state entered (a stage, a compensation or a final state) */
  state: string;
  at: string;
  actor: string;
  leaked: boolean;
  oldKeyId: string | null;
  newKeyId: string | null;
  oldFingerprint: string | null;
  newFingerprint: string | null;
  error: RotationContext['error'];
}

/**
 * Observers never change or fail a rotation: their errors are logged and swallowed. `onTransition`
 * is awaited in order, after the snapshot of that transition is saved (so an audit trail is durable
 * and ordered); `onResult` is awaited before rotateKey returns (notifiers must not block: queue and
 * return).
 */
/**
 * An audit trail the state store writes itself (`StateStore.auditTrail === trail`): the run builds
 * each transition's and the result's audit entry with these and hands them to `saveActive` / `finish`,
 * which write them in the same atomic, fenced write as the snapshot; `written` is told afterwards.
 * The observer's `onTransition` / `onResult` are then not called for them.
 */
export interface InlineAudit {
  readonly trail: string;
  transition(e: TransitionEvent): AuditEntry;
  result(r: RotationResult): AuditEntry;
  /** the entries the store wrote (mirrors, bookkeeping); must not throw */
  written(entries: readonly AuditEntry[]): void;
}

export interface RotationObserver {
  /** set by the audit observer: see InlineAudit */
  inlineAudit?: InlineAudit;
  onTransition?(e: TransitionEvent): void | Promise<void>;
  onStage?(key: string, rotationId: string, e: StageEvent): void;
  onResult?(r: KeyResult): void | Promise<void>;
}

export interface PlanInfo {
  due: boolean;
  reason: string;
  issuer: string;
  stores: string[];
  gates: string[];
  resume: string | null;
  /** leak mode: asked for (`--leaked`), or carried from a leak-mode rotation that did not replace the key */
  leaked: boolean;
}

export type KeyResult = RotationResult & {
  dryRun?: boolean;
  plan?: PlanInfo;
  /**
   * outcome `waiting` for a rotation parked earlier whose wake time has not come: this run did
   * nothing with it (no lease, no write) and observers are not told (nothing happened)
   */
  untouched?: boolean;
};
