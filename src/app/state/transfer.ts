/**
 * `keyrotor state export` / `state import`: every key record of one backend as JSON lines, so state
 * moves between backends (file -> postgres -> dynamodb and back). References only: a record never
 * holds a secret value. Leases are not carried (a lease belongs to a running process).
 *
 *   {"format":"keyrotor-state-export/2","exportedAt":"...","source":"file:.keyrotor","keys":2,"audit":9,"outbox":1}
 *   {"kind":"key","record":{ ...KeyRecord }}
 *   {"kind":"audit","record":{ ...AuditRecord }}     the hash-chained audit trail, verbatim, in seq order
 *   {"kind":"outbox","entry":{ ...OutboxEntry }}     a pending webhook notification (format 2 on)
 *
 * The audit chain travels intact (same seq, prev and hash): import verifies it first and writes it
 * only into an empty audit trail, so `audit verify` on the new backend checks the same chain.
 *
 * The webhook outbox travels too: only pending entries (a delivered or given-up one is not pending),
 * with their ids (the receiver's `Idempotency-Key`) and attempt counts. An entry holds the rendered
 * body (references only, like the payload it is: src/app/notify/payload.ts) and the webhook's index
 * and name, never its URL or headers. Format 1 (no outbox lines) is still read; a keyrotor that reads
 * only format 1 refuses a format 2 file with STATE_VERSION before writing anything.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { KeyrotorError } from '../../core/errors.ts';
import { isLease, OUTBOX_ID_RE, type KeyRecord, type OutboxEntry, type StateStore } from '../../core/ports.ts';
import { decodeRecord } from './record.ts';
import { STATE_FORMAT } from './schema.ts';
import { canonicalJson, isAuditRecord, type AuditRecord } from '../audit/record.ts';
import type { AuditLog } from '../audit/sink.ts';
import { verifyChain } from '../audit/chain.ts';

/** the format this keyrotor writes; it reads this and every older one (1: keys and audit only) */
export const EXPORT_VERSION = 2;
export const EXPORT_FORMAT = `keyrotor-state-export/${EXPORT_VERSION}`;

export async function exportState(
  store: StateStore,
  now = new Date(),
  audit?: AuditLog,
): Promise<{ lines: string[]; keys: number; audit: number; outbox: number; warnings: string[] }> {
  const names = await store.keys();
  const records: KeyRecord[] = [];
  for (const k of names) {
    const r = await store.read(k);
    if (r) records.push(r);
  }
  const chain = audit ? await audit.read() : { records: [], warnings: [] };
  // pending notifications only: a delivered (or given-up) entry is not pending and is not carried
  const outbox = store.outboxPending ? await store.outboxPending() : [];
  const head = {
    format: EXPORT_FORMAT,
    exportedAt: now.toISOString(),
    source: store.label,
    keys: records.length,
    audit: chain.records.length,
    outbox: outbox.length,
  };
  return {
    lines: [
      JSON.stringify(head),
      ...records.map((record) => JSON.stringify({ kind: 'key', record })),
      ...chain.records.map((record) => JSON.stringify({ kind: 'audit', record })),
      ...outbox.map((entry) => JSON.stringify({ kind: 'outbox', entry })),
    ],
    keys: records.length,
    audit: chain.records.length,
    outbox: outbox.length,
    warnings: chain.warnings,
  };
}

export interface ParsedExport {
  /** the file's format version (1: written before the outbox was carried) */
  version: number;
  records: KeyRecord[];
  /** the hash-chained audit trail, verified */
  audit: AuditRecord[];
  /** pending webhook notifications (format 2 and later) */
  outbox: OutboxEntry[];
}

const OUTBOX_FIELDS = ['id', 'webhook', 'webhookName', 'body', 'createdAt', 'attempts'];

/** one outbox line's entry, exactly as the StateStore port takes it; the reason when it is not */
function decodeOutboxEntry(x: unknown): OutboxEntry | string {
  if (!x || typeof x !== 'object' || Array.isArray(x)) return 'an outbox line needs an "entry" object';
  const o = x as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => !OUTBOX_FIELDS.includes(k));
  if (extra.length) return `outbox entry: unknown field ${JSON.stringify(extra[0])}`;
  const id = typeof o.id === 'string' ? o.id : '';
  if (!OUTBOX_ID_RE.test(id) || id.includes('..'))
    return `outbox entry: id must be 1-200 characters [A-Za-z0-9._-] without ".." (got ${JSON.stringify(typeof o.id === 'string' ? o.id.slice(0, 40) : o.id)})`;
  const at = `outbox entry ${id}`;
  if (!Number.isSafeInteger(o.webhook) || (o.webhook as number) < 0)
    return `${at}: webhook must be the webhook's index (an integer >= 0)`;
  if (typeof o.webhookName !== 'string') return `${at}: webhookName must be a string`;
  if (!Number.isSafeInteger(o.attempts) || (o.attempts as number) < 0)
    return `${at}: attempts must be a count (an integer >= 0)`;
  if (typeof o.createdAt !== 'string' || Number.isNaN(Date.parse(o.createdAt)))
    return `${at}: createdAt must be an ISO time`;
  if (typeof o.body !== 'string') return `${at}: body must be a string`;
  try {
    JSON.parse(o.body);
  } catch {
    return `${at}: body is not the JSON a webhook is sent`;
  }
  return {
    id,
    webhook: o.webhook as number,
    webhookName: o.webhookName,
    body: o.body,
    createdAt: o.createdAt,
    attempts: o.attempts as number,
  };
}

/**
 * Parse an export (any format up to EXPORT_VERSION): key records, the audit chain (verified) and the
 * pending outbox. Any problem is one USAGE error naming the file and line, before anything is written.
 */
export function parseExportFull(text: string, source: string): ParsedExport {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const bad = (n: number, why: string) =>
    new KeyrotorError('USAGE', `${source}:${n}: ${why}`, { hint: 'import only what `keyrotor state export` wrote' });
  if (lines.length === 0) throw bad(1, 'empty file (expected a keyrotor state export)');
  let head: { format?: unknown; keys?: unknown; audit?: unknown; outbox?: unknown };
  try {
    head = JSON.parse(lines[0]!) as typeof head;
  } catch {
    throw bad(1, 'not JSON (expected the export header line)');
  }
  if (!head || typeof head !== 'object') throw bad(1, 'not a keyrotor state export header');
  const m = /^keyrotor-state-export\/(\d+)$/.exec(typeof head.format === 'string' ? head.format : '');
  if (!m) throw bad(1, `not a keyrotor state export (format ${JSON.stringify(head.format)})`);
  const version = Number(m[1]);
  if (version > EXPORT_VERSION || version < 1)
    throw new KeyrotorError(
      'STATE_VERSION',
      `${source} was exported by a ${version < 1 ? 'different' : 'newer'} keyrotor (${m[0]}; this one reads up to ${EXPORT_FORMAT}); nothing was imported`,
      { hint: 'import it with that version' },
    );
  const records: KeyRecord[] = [];
  const audit: AuditRecord[] = [];
  const outbox: OutboxEntry[] = [];
  const seen = new Set<string>();
  const seenOutbox = new Set<string>();
  lines.slice(1).forEach((line, i) => {
    const n = i + 2;
    let obj: { kind?: unknown; record?: unknown; entry?: unknown };
    try {
      obj = JSON.parse(line) as typeof obj;
    } catch {
      throw bad(n, 'not JSON (a truncated file?)');
    }
    if (!obj || typeof obj !== 'object') throw bad(n, 'not a JSON object');
    if (obj.kind === 'key') {
      const r = obj.record as { keyName?: unknown } | undefined;
      const name = typeof r?.keyName === 'string' ? r.keyName : '';
      let rec: KeyRecord;
      try {
        rec = decodeRecord(name, STATE_FORMAT, obj.record, `record of key "${name}"`);
      } catch (e) {
        throw bad(n, e instanceof KeyrotorError ? e.message : String(e));
      }
      if (seen.has(name)) throw bad(n, `key "${name}" appears twice`);
      seen.add(name);
      records.push(rec);
    } else if (obj.kind === 'audit') {
      if (!isAuditRecord(obj.record)) throw bad(n, 'not an audit record');
      audit.push(obj.record);
    } else if (obj.kind === 'outbox' && version >= 2) {
      const e = decodeOutboxEntry(obj.entry);
      if (typeof e === 'string') throw bad(n, e);
      if (seenOutbox.has(e.id)) throw bad(n, `outbox entry ${e.id} appears twice`);
      seenOutbox.add(e.id);
      outbox.push(e);
    } else
      throw bad(
        n,
        `unknown line kind ${JSON.stringify(obj.kind)}${obj.kind === 'outbox' ? ` (format ${m[0]} has no outbox lines)` : ''}`,
      );
  });
  const count = (what: unknown, got: number, label: string) => {
    if (typeof what === 'number' && what !== got)
      throw bad(lines.length, `the header announces ${what} ${label} but ${got} follow (a truncated file?)`);
  };
  count(head.keys, records.length, 'key(s)');
  count(head.audit, audit.length, 'audit record(s)');
  count(head.outbox, outbox.length, 'outbox entry(ies)');
  if (audit.length) {
    const last = audit[audit.length - 1]!;
    const v = verifyChain(source, {
      lines: audit.map((r) => canonicalJson(r)),
      head: { seq: last.seq, hash: last.hash },
    });
    if (!v.ok)
      throw new KeyrotorError(
        'USAGE',
        `${source}: the audit chain is broken at record #${v.broken?.seq ?? '?'}: ${v.broken?.reason ?? 'invalid'}`,
      );
  }
  return { version, records, audit, outbox };
}

/** Parse an export's key records (the whole file is checked: see parseExportFull). */
export function parseExport(text: string, source: string): KeyRecord[] {
  return parseExportFull(text, source).records;
}

export interface ImportResult {
  imported: string[];
  /** keys whose record holds a rotation in progress (resume it against the new backend) */
  active: string[];
  /** pending webhook notifications written to the target's outbox */
  outbox: number;
  /** of those, how many the target already held under the same id (still one entry each) */
  outboxAlreadyPending: number;
}

/**
 * Write every record into `store`, each under that key's lease (fenced), then the pending outbox
 * entries (same ids: an id the target already holds stays one entry, keeping the higher attempt
 * count), then the audit chain. Refuses before writing anything when a key already has state there
 * (unless `overwrite`), when the target's audit trail is not empty, or when outbox entries come but
 * the target has no outbox; a key whose lease is held is LOCKED (exit 3).
 */
export async function importState(
  store: StateStore,
  records: KeyRecord[],
  opts: {
    overwrite?: boolean;
    ttlMs?: number;
    audit?: { log: AuditLog; records: AuditRecord[] };
    outbox?: OutboxEntry[];
  } = {},
): Promise<ImportResult> {
  const outbox = opts.outbox ?? [];
  if (!opts.overwrite) {
    const existing = new Set(await store.keys());
    const clash = records.map((r) => r.keyName).filter((k) => existing.has(k));
    if (clash.length)
      throw new KeyrotorError(
        'USAGE',
        `${store.label} already holds state for ${clash.map((k) => `"${k}"`).join(', ')}; nothing was imported`,
        { hint: 'pass --overwrite to replace it' },
      );
  }
  if (opts.audit?.records.length) {
    if (!opts.audit.log.importChain)
      throw new KeyrotorError('USAGE', `${opts.audit.log.label} cannot import an audit chain; nothing was imported`);
    const existing = await opts.audit.log.read();
    if (existing.records.length)
      throw new KeyrotorError(
        'USAGE',
        `${opts.audit.log.label} already holds ${existing.records.length} audit record(s); nothing was imported`,
        { hint: 'import into a fresh state backend so the audit chain stays one chain' },
      );
  }
  let pendingThere = new Map<string, number>();
  if (outbox.length) {
    if (!store.outboxAdd || !store.outboxPending)
      throw new KeyrotorError(
        'USAGE',
        `${store.label} has no webhook outbox for the ${outbox.length} pending notification(s); nothing was imported`,
      );
    pendingThere = new Map((await store.outboxPending()).map((e) => [e.id, e.attempts]));
  }
  const owner = `import:${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const imported: string[] = [];
  for (const r of records) {
    const got = await store.acquire(r.keyName, owner, opts.ttlMs ?? 60_000);
    if (!isLease(got))
      throw new KeyrotorError(
        'LOCKED',
        `key "${r.keyName}" is being rotated by ${got.owner} in ${store.label}` +
          (imported.length ? ` (already imported: ${imported.join(', ')})` : ' (nothing was imported)'),
        { retryable: true },
      );
    try {
      await store.put(r, got);
    } finally {
      await got.release().catch(() => undefined);
    }
    imported.push(r.keyName);
  }
  // before the audit chain: a failure here leaves an empty trail, so the same import can run again
  // (with --overwrite); the same id again replaces that one entry, it never adds a second delivery
  let alreadyPending = 0;
  for (const e of outbox) {
    const there = pendingThere.get(e.id);
    if (there !== undefined) alreadyPending += 1;
    await store.outboxAdd!({ ...e, attempts: Math.max(e.attempts, there ?? 0) });
  }
  if (opts.audit?.records.length) await opts.audit.log.importChain!(opts.audit.records);
  return {
    imported,
    active: records.filter((r) => r.active).map((r) => r.keyName),
    outbox: outbox.length,
    outboxAlreadyPending: alreadyPending,
  };
}
