/**
 * Claiming due keys (fleets; docs/state-backends.md "Claiming"), the backend-neutral parts: a bulk
 * read's result, and a claim made of per-key `acquire`s (the file backend, and any StateStore without
 * a `claim` of its own).
 */
import { KeyrotorError } from '../../core/errors.ts';
import {
  isLease,
  type ClaimCandidate,
  type KeyRecord,
  type Lease,
  type RecordBatch,
  type StateStore,
} from '../../core/ports.ts';

/**
 * A RecordBatch from the rows a backend read (`key_name` null rows are ignored): keys without a row
 * are null; a row that does not decode is 'unreadable' (the per-key read reports its error).
 */
export function batchOf<R extends { key_name: string | null; at?: number }>(
  keyNames: string[],
  rows: R[],
  fallbackAt: number,
  decode: (row: R & { key_name: string }) => KeyRecord,
): RecordBatch {
  const records = new Map<string, KeyRecord | null | 'unreadable'>(keyNames.map((k) => [k, null]));
  let readAt = fallbackAt;
  for (const row of rows) {
    if (typeof row.at === 'number') readAt = row.at;
    if (row.key_name === null || !records.has(row.key_name)) continue;
    try {
      records.set(row.key_name, decode(row as R & { key_name: string }));
    } catch (e) {
      if (!(e instanceof KeyrotorError)) throw e;
      records.set(row.key_name, 'unreadable');
    }
  }
  return { records, readAt };
}

/** Read keys one by one (a backend without `readMany`). */
export async function readEach(store: Pick<StateStore, 'read'>, keyNames: string[], now: number): Promise<RecordBatch> {
  const records = new Map<string, KeyRecord | null | 'unreadable'>();
  for (const k of keyNames) {
    try {
      records.set(k, await store.read(k));
    } catch (e) {
      if (!(e instanceof KeyrotorError) || e.code !== 'STATE_UNREADABLE') throw e;
      records.set(k, 'unreadable');
    }
  }
  return { records, readAt: now };
}

/**
 * A claim made of per-key `acquire`s in due order, until `limit` leases are granted. The caller
 * leaves out keys it holds already (the same owner asking again would only extend its lease).
 */
export async function claimByAcquire(
  store: Pick<StateStore, 'acquire'>,
  candidates: ClaimCandidate[],
  owner: string,
  limit: number,
): Promise<{ keyName: string; lease: Lease }[]> {
  const out: { keyName: string; lease: Lease }[] = [];
  const ordered = candidates.map((c, i) => ({ c, i })).sort((a, b) => a.c.dueAt - b.c.dueAt || a.i - b.i);
  for (const { c } of ordered) {
    if (out.length >= limit) break;
    const got = await store.acquire(c.keyName, owner, c.ttlMs);
    if (isLease(got)) out.push({ keyName: c.keyName, lease: got });
  }
  return out;
}
