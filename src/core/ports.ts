/**
 * Ports: what the workflow needs from the outside world. Providers implement them; the workflow and
 * run loop only ever see these interfaces. No SDK types here.
 *
 * Rules every implementation follows:
 * - Secret values travel only as `Secret` and only through `create`'s result, `stage`'s argument and
 *   the `read*` results. Never log them, never put them in an error message.
 * - Every mutating call is idempotent: a retry (or a re-run after a crash) with the same rotation id
 *   converges on the same end state and never creates a second copy. Deleting something that is
 *   already gone is success.
 * - Errors are `KeyrotorError` with a stable code and `retryable` set honestly.
 */
import type { Secret } from './secret.ts';
import type { Clock } from './clock.ts';
import type { ErrorRecord } from './errors.ts';
import type { Outcome, Stage } from './stages.ts';
import type { AuditEntry } from './audit.ts';

// ---------------------------------------------------------------- issuer

export interface IssuedKey {
  keyId: string;
  /** the unique name given at create; carries the rotation id (see core/ids.ts) */
  name: string;
  secret: Secret;
  createdAt: string; // ISO
  expiresAt?: string | undefined; // ISO
}

export interface IssuerKeyInfo {
  keyId: string;
  name: string | null;
  createdAt?: string | undefined;
  lastUsedAt?: string | null | undefined;
  expiresAt?: string | null | undefined;
  /** the issuer's masked form of the value, e.g. `sk-svca...abcd`; never the value */
  redactedValue?: string | undefined;
  owner?: { type: 'service_account' | 'user' | 'local'; id: string; name?: string | undefined } | undefined;
}

export type VerifyResult =
  { ok: true } | { ok: false; reason: 'invalid' | 'missing_scopes' | 'error'; detail: string; retryable: boolean };

export type IdentifyResult =
  { kind: 'found'; keyId: string } | { kind: 'ambiguous'; candidates: string[] } | { kind: 'not_found' };

export interface CreateKeyRequest {
  /** unique name carrying the rotation id: `keyrotor.<key>.<rotationId>` */
  name: string;
  rotationId: string;
  /** safety net: the issuer deletes the key by itself after this many seconds (when supported) */
  expiresInSeconds?: number | undefined;
  /**
   * true: this rotation cannot have called create before (a fresh rotation's first try, not one
   * restored at `issue` or retried), so there is no same-name leftover to look for and the issuer may
   * skip that lookup. Absent or false: the issuer must remove same-name leftovers first.
   */
  firstAttempt?: boolean | undefined;
  /**
   * Called after the issuer found keys of this name and right before it deletes them (leftovers of an
   * earlier attempt, or what an unanswered create may have made): it throws when this worker may no
   * longer act for the rotation (its lease was lost: a successor may have minted, under this same
   * name, the key consumers now use). The issuer then deletes nothing and fails with that error.
   */
  beforeDeleteByName?: (() => Promise<void>) | undefined;
}

/** A declared cheap call made with a key, to check its scopes (issuer-smoke-test `model`). */
export interface IssuerProbe {
  /** retrieve this model with the key (OpenAI `GET /v1/models/{model}`) */
  model: string;
}

export interface Issuer {
  readonly type: string;
  /** `list()` reports `lastUsedAt` for every key (the usage-drain gate needs it). Optional. */
  readonly reportsUsage?: boolean;
  /** Preflight: credentials work and the issuer can list and create where configured. */
  check(): Promise<void>;
  /**
   * Create one key. Must not retry internally (a lost response could mint a second key). A key that
   * already carries `req.name` is a leftover of an earlier attempt of the same rotation whose value
   * nobody holds: delete it first, so a retried create ends with exactly one key of that name.
   */
  create(req: CreateKeyRequest): Promise<IssuedKey>;
  /** Does this value work at the issuer right now? 'invalid' = rejected as unknown/revoked. */
  verify(secret: Secret): Promise<VerifyResult>;
  /** Like verify, with a declared cheap call (e.g. retrieve one model). Optional capability. */
  probe?(secret: Secret, call: IssuerProbe): Promise<VerifyResult>;
  /** Delete the key. Already gone = `{ alreadyGone: true }`, not an error. */
  revoke(keyId: string): Promise<{ alreadyGone: boolean }>;
  /** Every key the issuer holds for this scope (all pages). */
  list(): Promise<IssuerKeyInfo[]>;
  /** Which issuer key is this value? Used to adopt keys a person created by hand. */
  identify(secret: Secret): Promise<IdentifyResult>;
  /** Release connections so the process can exit. Optional. */
  close?(): Promise<void>;
}

/** What a health gate factory gets besides its config and context. */
export interface GateDeps {
  issuer: Issuer;
  /** position in the key's `health` list, for default names */
  index: number;
}

// ---------------------------------------------------------------- secret store

/** Per-version metadata kept beside the value (labels, tags, annotations): references only. */
export interface VersionMeta {
  rotationId?: string | undefined;
  issuerKeyId?: string | undefined;
  fingerprint?: string | undefined;
  createdAt?: string | undefined;
}

export interface StoredVersion {
  versionId: string;
  secret: Secret;
  meta: VersionMeta;
}

export interface SlotInfo {
  versionId: string;
  meta: VersionMeta;
}

/** What a store holds, without values (status, preflight, invariant checks). */
export interface StoreSlots {
  current?: SlotInfo | undefined;
  previous?: SlotInfo | undefined;
  pending?: SlotInfo | undefined;
}

export interface StageRequest {
  rotationId: string;
  secret: Secret;
  meta: VersionMeta;
}

export interface SecretStore {
  readonly type: string;
  /** human-readable location for messages, e.g. `file:.keyrotor/secrets/app.json`; no secrets */
  readonly label: string;
  /** Preflight: reachable, readable, writable (as far as can be checked without writing a value). */
  check(): Promise<void>;
  describe(): Promise<StoreSlots>;
  /** The value consumers read now; null when the store holds no value yet (bootstrap). */
  readCurrent(): Promise<StoredVersion | null>;
  readPrevious(): Promise<StoredVersion | null>;
  /** The version this rotation staged, or null. */
  readPending(rotationId: string): Promise<StoredVersion | null>;
  /** Write the value as pending: not what consumers read. Idempotent per rotation id. */
  stage(req: StageRequest): Promise<{ versionId: string }>;
  /** Make this rotation's pending version current; the old current becomes previous. Idempotent. */
  promote(rotationId: string): Promise<void>;
  /** Undo `promote`: what was current before this rotation is current again. No-op if not promoted. */
  demote(rotationId: string): Promise<void>;
  /** Undo `stage`: this rotation's pending version is gone. Never touches current. No-op if absent. */
  unstage(rotationId: string): Promise<void>;
  /** Release connections (gRPC channels, sockets) so the process can exit. Optional. */
  close?(): Promise<void>;
}

// ---------------------------------------------------------------- health gates

export interface GateContext {
  rotationId: string;
  keyName: string;
  newKeyId: string;
  oldKeyId?: string | undefined;
  newFingerprint: string;
  oldFingerprint?: string | undefined;
  /** ISO time the new key became current in every store */
  promotedAt?: string | undefined;
  /** read the new value (from the first store's current slot); only gates that must use it */
  readNewSecret(): Promise<Secret>;
  signal: AbortSignal;
}

export interface GateObservation {
  pass: boolean;
  /** short, secret-free description of what was seen, kept as the gate's last observation */
  observation: string;
  /** stop waiting now: the gate will never pass (e.g. manual reject) */
  final?: boolean;
}

export interface HealthGate {
  readonly type: string;
  /** unique within the key, used in context, logs and results */
  readonly name: string;
  readonly timeoutMs: number;
  readonly intervalMs: number;
  check(ctx: GateContext): Promise<GateObservation>;
}

// ---------------------------------------------------------------- state

export interface RotationResult {
  key: string;
  rotationId: string | null;
  outcome: Outcome;
  oldKeyId: string | null;
  newKeyId: string | null;
  error?: ErrorRecord | undefined;
  /** what a human must still do (rollbackFailed, needs_attention) */
  leftovers?: string[] | undefined;
  bootstrap?: boolean | undefined;
  /** the bootstrap replaced a value declared a placeholder (`adopt --placeholder`); nothing was revoked */
  placeholder?: boolean | undefined;
  leaked?: boolean | undefined;
  /** leak mode: when the issuer last saw the old (compromised) key used, ISO or null if never */
  oldKeyLastUsedAt?: string | null | undefined;
  /** leak mode `--revoke-first`: the leaked key was deleted before the new key was issued */
  revokedFirst?: boolean | undefined;
  /** revoke-first: how long consumers had no working key (delete of the old key until every store served the new one) */
  consumersWithoutKeyMs?: number | undefined;
  /** revoke-first: the rotation stopped before the new key was served, consumers are still without a working key */
  consumersStillWithoutKey?: boolean | undefined;
  /** last stage the rotation reached */
  stage?: Stage | undefined;
  startedAt?: string | undefined;
  finishedAt?: string | undefined;
  /** outcome `waiting`: when the parked rotation's wait is checked again (ISO) */
  wakeAt?: string | undefined;
}

export interface PersistedRotation {
  rotationId: string;
  keyName: string;
  /** bumped whenever the machine's states or context shape change incompatibly */
  machineVersion: number;
  keyrotorVersion: string;
  updatedAt: string;
  /** the xstate persisted snapshot: references only, never values */
  snapshot: unknown;
  /**
   * A parked rotation (a durable wait, docs/state-backends.md): no process holds it; it is resumable
   * once this time (ISO) has come, when its wait is checked again. Absent: resumable at once (a
   * running rotation under its lease, or one a crash or a pause left behind). The deadline of the
   * wait stays in the snapshot's context and still decides the timeout.
   */
  wakeAt?: string | undefined;
}

export interface KeyRecord {
  keyName: string;
  active: PersistedRotation | null;
  last: RotationResult | null;
  lastRotatedAt: string | null;
  currentKeyId: string | null;
  /** small provider-owned facts to remember (e.g. an auto-created service account id) */
  providerState: Record<string, string>;
}

export interface Lease {
  readonly owner: string;
  readonly expiresAt: number;
  /**
   * Fencing token: a number that grows with every grant of this key's lease (to anyone). Pass the
   * lease (or `{ token }`) as the `fence` of a write: the store refuses it with LEASE_LOST once the
   * lease was granted to someone after this holder (a holder paused past its expiry cannot overwrite
   * its successor).
   */
  readonly token: number;
  /** extend the lease by its ttl; LEASE_LOST when someone else was granted it meanwhile */
  renew(): Promise<void>;
  release(): Promise<void>;
}

export interface LeaseHolder {
  owner: string;
  expiresAt: number;
}

/** Proof of holding a key's lease: writes made with it are conditional on the token still being current. */
export interface Fence {
  readonly token: number;
}

/** What `state init` did. */
export interface StateInitResult {
  /** false: everything already existed at the current version */
  changed: boolean;
  /** one line per step, secret-free */
  steps: string[];
}

/**
 * One webhook notification waiting in the durable outbox (references only: the body is the rendered
 * payload, which never holds a secret value; the webhook is named by its index in `notifications:`
 * and its name, never by its URL, which may carry a token).
 */
export interface OutboxEntry {
  /** unique; also sent as the `Idempotency-Key` header. [A-Za-z0-9._-], at most 200 chars, no `..` */
  id: string;
  /** index of the webhook in the config's `notifications:` list */
  webhook: number;
  /** the webhook's `name` (or host) when the entry was written: a config change is detected by it */
  webhookName: string;
  /** the JSON body to POST */
  body: string;
  /** ISO time the entry was written */
  createdAt: string;
  /** delivery attempts made so far, over all runs */
  attempts: number;
}

/** A key a worker wants to run now, for `StateStore.claim`. */
export interface ClaimCandidate {
  keyName: string;
  /** when it became due (ms since epoch): older first; a rotation in progress is due at once (0) */
  dueAt: number;
  /** the lease's ttl if granted (the key's `defaults.lease.ttl`) */
  ttlMs: number;
}

/** Records read in one go (`StateStore.readMany`), and when: the `since` of a later `claim`. */
export interface RecordBatch {
  /** null: the key was never seen; 'unreadable': its record does not validate (read it alone for the error) */
  records: Map<string, KeyRecord | null | 'unreadable'>;
  /** when the read saw the records (the backend's clock where it has one), ms since epoch */
  readAt: number;
}

export const OUTBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/**
 * What `saveActive` / `finish` with `audit` return when the snapshot was written but the audit trail
 * refused the records before anything of the write happened (the file backend's audit log is damaged
 * or locked): the rotation goes on, as an audit failure never stops one; the caller reports it.
 */
export interface AuditNotWritten {
  auditError: unknown;
}

export interface StateStore {
  /** e.g. `file:.keyrotor`, `postgres:db.internal:5432/keyrotor (schema keyrotor)`; never a password */
  readonly label: string;
  /** null when the key was never seen. Corrupt or unknown-format data throws STATE_UNREADABLE. */
  read(keyName: string): Promise<KeyRecord | null>;
  /**
   * The audit trail this store writes together with its records (the `audit` argument of
   * `saveActive` / `finish`), named as the audit log names itself (`AuditLog.trail`), e.g.
   * `file:/abs/.keyrotor/audit/audit.jsonl` or the database store's label. Absent: the store keeps
   * no audit trail and `audit` must not be passed.
   */
  readonly auditTrail?: string;
  /**
   * persist the running rotation's snapshot (atomic); with a fence, only while its token is current.
   * `audit`: the transition's audit entries, chained onto `auditTrail` in the SAME atomic write (one
   * transaction / one conditional write / one fsync'd append): both land or neither, and a refused
   * fence writes neither.
   */
  saveActive(
    keyName: string,
    rotation: PersistedRotation,
    fence?: Fence,
    audit?: readonly AuditEntry[],
  ): Promise<void | AuditNotWritten>;
  /**
   * the rotation ended: record the result and clear `active` — or, in the same atomic write, keep
   * `keepActive` (a rotation that can only go forward and must stay resumable); `audit` as in
   * `saveActive` (the final transition and the result record)
   */
  finish(
    keyName: string,
    result: RotationResult,
    currentKeyId?: string | null,
    keepActive?: PersistedRotation | null,
    fence?: Fence,
    audit?: readonly AuditEntry[],
  ): Promise<void | AuditNotWritten>;
  setProviderState(keyName: string, key: string, value: string, fence?: Fence): Promise<void>;
  /**
   * Remember `key` only if it is not set yet (atomic create-once, no lease needed: used by
   * `keyrotor confirm` while a rotation holds the lease). Returns the value stored now. Database
   * backends implement it; the file backend keeps decisions in files.
   */
  setProviderStateIfAbsent?(keyName: string, key: string, value: string): Promise<string>;
  /** replace the whole record (state import); with a fence, only while its token is current */
  put(record: KeyRecord, fence?: Fence): Promise<void>;
  /**
   * exclusive per-key lease; returns the holder when someone else has it and it has not expired.
   * Every grant carries a larger fencing token than any earlier grant of the same key.
   */
  acquire(keyName: string, owner: string, ttlMs: number): Promise<Lease | LeaseHolder>;
  keys(): Promise<string[]>;
  /**
   * Many records at once (a fleet worker's one bulk read before it claims). Optional: without it the
   * worker reads the keys one by one.
   */
  readMany?(keyNames: string[]): Promise<RecordBatch>;
  /**
   * Claim due keys (fleets, docs/state-backends.md "Claiming"): grant this worker up to `limit` leases
   * among `candidates`, oldest `dueAt` first, each only if its lease has been free since `since` (the
   * `readAt` of the read that found the key due, so a key another worker ran after that read is left
   * alone). A lease another worker holds, or one being written under, is skipped, never waited for.
   * Each grant is a normal fenced lease with a new token. Optional: without it the worker tries each
   * candidate's `acquire` in due order.
   */
  claim?(
    candidates: ClaimCandidate[],
    owner: string,
    limit: number,
    since: number,
  ): Promise<{ keyName: string; lease: Lease }[]>;
  /**
   * Durable outbox of webhook notifications (at-least-once delivery; see docs/operations.md).
   * `outboxAdd` writes (or, for an existing id, replaces) an entry; `outboxPending` lists entries not
   * done, oldest first; `outboxDone` marks one delivered or given up (it is no longer pending; an
   * unknown id is not an error); `outboxAttempted` adds `n` to an entry's attempt count.
   */
  outboxAdd?(entry: OutboxEntry): Promise<void>;
  outboxPending?(limit?: number): Promise<OutboxEntry[]>;
  outboxDone?(id: string): Promise<void>;
  outboxAttempted?(id: string, n: number): Promise<void>;
  /** create (or migrate) the schema/table; idempotent. Absent: nothing to set up. */
  init?(): Promise<StateInitResult>;
  /** release connections so the process can exit. Optional. */
  close?(): Promise<void>;
}

export function isLease(x: Lease | LeaseHolder): x is Lease {
  return typeof (x as Lease).release === 'function';
}

// ---------------------------------------------------------------- provider context

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}

/** What every provider factory receives besides its own config. */
export interface ProviderContext {
  keyName: string;
  /** absolute path of the state dir (default `.keyrotor` beside the config) */
  stateDir: string;
  /** directory of the config file, to resolve relative paths */
  configDir: string;
  logger: Logger;
  clock: Clock;
  env: NodeJS.ProcessEnv;
  /** remembered facts for this key (e.g. auto-created service account id) */
  providerState: {
    get(key: string): string | undefined;
    set(key: string, value: string): Promise<void>;
    /** read the fact from the state store now (another process may have written it since); optional */
    fresh?(key: string): Promise<string | undefined>;
  };
}
