/**
 * What an audit record says (references only, never a secret value). A type only: the hash chain,
 * its storage and its checks live in src/app/audit/. It is here because the StateStore port takes the
 * audit entries of a transition, to write them with its snapshot in one write.
 */
import type { ErrorRecord } from './errors.ts';

export type AuditRecordType = 'transition' | 'result' | 'repair' | 'adopt';

/** What an observer hands to a sink (or a state store); the sink adds `v`, `seq`, `prev` and `hash`. */
export interface AuditEntry {
  type: AuditRecordType;
  /** ISO time of the event */
  time: string;
  key?: string | undefined;
  rotationId?: string | null | undefined;
  /** the workflow state entered (a stage, a compensation or a final state) */
  state?: string | undefined;
  /** the stage name when `state` is one (preflight, issue, ..., demote, unstage, discard) */
  stage?: string | null | undefined;
  /** result records: rotated | rolled_back | skipped | locked | needs_attention | in_progress | waiting */
  outcome?: string | null | undefined;
  /** result records with outcome `waiting`: when the parked rotation is checked again (ISO) */
  wakeAt?: string | undefined;
  /** cli | lambda | cloud-run | daemon | library */
  actor?: string | undefined;
  /** OS user and host that ran it */
  user?: string | undefined;
  host?: string | undefined;
  leaked?: boolean | undefined;
  /** first record of a rotation seen by this process is not `preflight`: it resumed a saved rotation */
  resumed?: boolean | undefined;
  oldKeyId?: string | null | undefined;
  newKeyId?: string | null | undefined;
  oldFingerprint?: string | null | undefined;
  newFingerprint?: string | null | undefined;
  error?:
    (Pick<ErrorRecord, 'code' | 'message'> & { stage?: string | undefined; hint?: string | undefined }) | undefined;
  leftovers?: string[] | undefined;
  bootstrap?: boolean | undefined;
  /** adopt records: the current value was declared a placeholder (no key); result records: bootstrapped over one */
  placeholder?: boolean | undefined;
  /** adopt records: why, as the operator said (--reason) */
  reason?: string | undefined;
  oldKeyLastUsedAt?: string | null | undefined;
  /** result records of `rotate --leaked --revoke-first`: the leaked key was deleted before the new key was issued */
  revokedFirst?: boolean | undefined;
  /** revoke-first: how long consumers had no working key (ms) */
  consumersWithoutKeyMs?: number | undefined;
  /** revoke-first: the rotation stopped before the new key was served */
  consumersStillWithoutKey?: boolean | undefined;
  startedAt?: string | undefined;
  finishedAt?: string | undefined;
  /** repair records: what was dropped from a torn last line */
  droppedBytes?: number | undefined;
  droppedSha256?: string | undefined;
}
