/**
 * The audit record and its hash chain.
 *
 * One record per line (JSONL). Each record carries `prev` (the hash of the record before it; 64 zeros
 * for the first) and `hash` = SHA-256 over a fixed label and the canonical JSON of every other field
 * (keys sorted, no whitespace). Lines are written in that same canonical form, so the file is exactly
 * what was hashed. Editing a byte of a record breaks its own hash; deleting, inserting or reordering a
 * record breaks the `seq` / `prev` link of the record after it; deleting records from the end is
 * caught by the head file (see jsonl.ts).
 *
 * Records hold references only (key ids, fingerprints, rotation ids, error codes and our own scrubbed
 * messages), never a secret value.
 */
import { createHash } from 'node:crypto';
import type { ErrorRecord } from '../../core/errors.ts';

export const AUDIT_RECORD_VERSION = 1;
export const GENESIS = '0'.repeat(64);
const HASH_LABEL = 'keyrotor-audit/1\n';

export type AuditRecordType = 'transition' | 'result' | 'repair' | 'adopt';

/** What an observer hands to a sink; the sink adds `v`, `seq`, `prev` and `hash`. */
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
  /** result records: rotated | rolled_back | skipped | locked | needs_attention | in_progress */
  outcome?: string | null | undefined;
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

export interface AuditRecord extends AuditEntry {
  v: number;
  /** 1, 2, 3, ... without gaps */
  seq: number;
  prev: string;
  hash: string;
}

/** JSON with object keys sorted at every level and `undefined` members dropped. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortDeep(value));
}

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => (x === undefined ? null : sortDeep(x)));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortDeep(x);
    }
    return out;
  }
  return v;
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The hash a record must carry: over every field but `hash` itself. */
export function recordHash(r: Omit<AuditRecord, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = r;
  return sha256Hex(HASH_LABEL + canonicalJson(rest));
}

/** Build the next record of a chain. */
export function chainRecord(entry: AuditEntry, prev: { seq: number; hash: string } | null): AuditRecord {
  const body = {
    ...stripUndefined(entry),
    v: AUDIT_RECORD_VERSION,
    seq: (prev?.seq ?? 0) + 1,
    prev: prev?.hash ?? GENESIS,
  };
  return { ...body, hash: recordHash(body) };
}

/** The line written to the log (canonical JSON plus newline). */
export function recordLine(r: AuditRecord): string {
  return canonicalJson(r) + '\n';
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Shape check of a parsed line: enough to verify the chain. */
export function isAuditRecord(x: unknown): x is AuditRecord {
  if (!x || typeof x !== 'object' || Array.isArray(x)) return false;
  const r = x as Record<string, unknown>;
  return (
    typeof r.v === 'number' &&
    typeof r.seq === 'number' &&
    Number.isInteger(r.seq) &&
    r.seq >= 1 &&
    typeof r.prev === 'string' &&
    HEX64.test(r.prev) &&
    typeof r.hash === 'string' &&
    HEX64.test(r.hash) &&
    typeof r.type === 'string' &&
    typeof r.time === 'string'
  );
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
