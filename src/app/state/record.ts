/**
 * What every state backend shares: the empty record, validating a stored record on read (stored data
 * is input) and before a write (never write what could not be read back), and the errors a fenced
 * write or an unknown format raises. Backend-neutral: no file, SQL or DynamoDB here.
 */
import { KeyrotorError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { AuditNotWritten, Fence, KeyRecord, PersistedRotation, RotationResult } from '../../core/ports.ts';
import type { AuditEntry } from '../../core/audit.ts';
import { STATE_FORMAT, STATE_FORMAT_RE, keyRecordSchema } from './schema.ts';

export const emptyRecord = (keyName: string): KeyRecord => ({
  keyName,
  active: null,
  last: null,
  lastRotatedAt: null,
  currentKeyId: null,
  providerState: {},
});

/** Key names as the config allows them (and a little more, for state written by older versions). */
export const STATE_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkKeyName(keyName: string): void {
  if (!STATE_KEY_NAME.test(keyName) || keyName.includes('..'))
    throw new KeyrotorError('UNKNOWN_KEY', `invalid key name ${JSON.stringify(keyName)}`);
}

/** Parse what a backend stored for `keyName` (`where` names the row/item in messages). */
export function decodeRecord(keyName: string, format: unknown, record: unknown, where: string): KeyRecord {
  const rotationId = (record as { active?: { rotationId?: unknown } } | null)?.active?.rotationId;
  const during = typeof rotationId === 'string' && /^[A-Za-z0-9._:-]{1,100}$/.test(rotationId) ? rotationId : '';
  const suffix = during ? ` (rotation ${during} was in progress)` : '';
  const m = STATE_FORMAT_RE.exec(typeof format === 'string' ? format : '');
  if (m && Number(m[1]) > 1)
    throw new KeyrotorError(
      'STATE_VERSION',
      `${where} was written by a newer keyrotor (format ${m[0]}; this version reads ${STATE_FORMAT})${suffix}`,
      { hint: 'upgrade keyrotor to the version that wrote it' },
    );
  const hint = 'keyrotor never resets state by itself: restore it from a backup (`keyrotor state export` output)';
  if (format !== STATE_FORMAT)
    throw new KeyrotorError('STATE_UNREADABLE', `${where} is unreadable: unknown format${suffix}`, { hint });
  const parsed = keyRecordSchema.safeParse(record);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue ? ['record', ...issue.path.map(String)].join('.') : 'record';
    throw new KeyrotorError(
      'STATE_UNREADABLE',
      `${where} is unreadable: invalid record (${at}: ${issue?.message ?? 'invalid'})${suffix}`,
      { hint },
    );
  }
  if (parsed.data.keyName !== keyName)
    throw new KeyrotorError('STATE_UNREADABLE', `${where} holds key "${parsed.data.keyName}", not "${keyName}"`, {
      hint,
    });
  return parsed.data;
}

/** Refuse to write a record that could not be read back. Returns its JSON text. */
export function encodeRecord(record: KeyRecord): string {
  const text = JSON.stringify(record);
  const check = keyRecordSchema.safeParse(JSON.parse(text));
  if (!check.success) {
    const issue = check.error.issues[0];
    throw new KeyrotorError(
      'INTERNAL',
      `refusing to write an invalid state record for key "${record.keyName}" (${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'})`,
    );
  }
  return text;
}

export function leaseLost(keyName: string, fence: Fence, detail: string): KeyrotorError {
  return new KeyrotorError(
    'LEASE_LOST',
    `write to the state of key "${keyName}" refused: lease token ${fence.token} is no longer current (${detail})`,
    {
      retryable: false,
      hint: 'another worker took the key over after this lease expired; this run stops touching it (renew more often than the ttl)',
    },
  );
}

/** The record changes each StateStore write makes, shared by every backend. */
/**
 * A backend's read-modify-write of one key's record: `fn` edits the record, `fence` guards the write,
 * `audit` entries are chained onto the backend's audit trail in the same atomic write.
 */
export type RecordUpdate = (
  keyName: string,
  fn: (r: KeyRecord) => void,
  fence?: Fence,
  audit?: readonly AuditEntry[],
) => Promise<void | AuditNotWritten>;

/**
 * The record-writing methods of the StateStore port, the same on every backend: each is one edit of
 * the key's record through the backend's own `update` (atomic and, with a fence, conditional on it).
 */
export function recordWriters(update: RecordUpdate, clock: Clock) {
  return {
    saveActive(
      keyName: string,
      rotation: PersistedRotation,
      fence?: Fence,
      audit?: readonly AuditEntry[],
    ): Promise<void | AuditNotWritten> {
      return update(
        keyName,
        (r) => {
          r.active = rotation;
        },
        fence,
        audit,
      );
    },
    /** the rotation ended: record the result, clear `active` (or keep `keepActive`), say which key is current */
    finish(
      keyName: string,
      result: RotationResult,
      currentKeyId?: string | null,
      keepActive?: PersistedRotation | null,
      fence?: Fence,
      audit?: readonly AuditEntry[],
    ): Promise<void | AuditNotWritten> {
      return update(
        keyName,
        (r) => {
          r.active = keepActive ?? null;
          r.last = result;
          if (result.outcome === 'rotated') r.lastRotatedAt = result.finishedAt ?? new Date(clock.now()).toISOString();
          // the caller says which key is current now; when it does not say, keep what we knew
          if (currentKeyId !== undefined) r.currentKeyId = currentKeyId;
        },
        fence,
        audit,
      );
    },
    async setProviderState(keyName: string, key: string, value: string, fence?: Fence): Promise<void> {
      await update(
        keyName,
        (r) => {
          r.providerState = { ...r.providerState, [key]: value };
        },
        fence,
      );
    },
    async put(record: KeyRecord, fence?: Fence): Promise<void> {
      await update(
        record.keyName,
        (r) => {
          Object.assign(r, structuredClone(record));
        },
        fence,
      );
    },
  };
}

/**
 * `setProviderStateIfAbsent` for a backend whose `update` is atomic across processes (a database
 * transaction or conditional write): set `key` unless it is set already; returns the value stored.
 */
export function providerStateIfAbsent(update: RecordUpdate) {
  return async (keyName: string, key: string, value: string): Promise<string> => {
    let stored = value;
    await update(keyName, (r) => {
      const cur = r.providerState[key];
      stored = cur ?? value;
      if (cur === undefined) r.providerState = { ...r.providerState, [key]: value };
    });
    return stored;
  };
}

/** Retry a function a few times with a short jittered backoff while it throws something `retry` accepts. */
export async function withRetry<T>(fn: () => Promise<T>, retry: (e: unknown) => boolean, attempts = 6): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !retry(e)) throw e;
      await new Promise((r) => setTimeout(r, 10 * 2 ** i + Math.random() * 20));
    }
  }
}
