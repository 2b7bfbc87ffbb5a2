/**
 * `keyrotor state export` / `state import`: every key record of one backend as JSON lines, so state
 * moves between backends (file -> postgres -> dynamodb and back). References only: a record never
 * holds a secret value. Leases are not carried (a lease belongs to a running process).
 *
 *   {"format":"keyrotor-state-export/1","exportedAt":"...","source":"file:.keyrotor","keys":2}
 *   {"kind":"key","record":{ ...KeyRecord }}
 *   {"kind":"audit","record":{ ...AuditRecord }}     the hash-chained audit trail, verbatim, in seq order
 *
 * The audit chain travels intact (same seq, prev and hash): import verifies it first and writes it
 * only into an empty audit trail, so `audit verify` on the new backend checks the same chain.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { KeyrotorError } from '../../core/errors.ts';
import { isLease, type KeyRecord, type StateStore } from '../../core/ports.ts';
import { decodeRecord } from './record.ts';
import { STATE_FORMAT } from './schema.ts';
import { canonicalJson, isAuditRecord, type AuditRecord } from '../audit/record.ts';
import type { AuditLog } from '../audit/sink.ts';
import { verifyChain } from '../audit/chain.ts';

export const EXPORT_FORMAT = 'keyrotor-state-export/1';

export async function exportState(
  store: StateStore,
  now = new Date(),
  audit?: AuditLog,
): Promise<{ lines: string[]; keys: number; audit: number; warnings: string[] }> {
  const names = await store.keys();
  const records: KeyRecord[] = [];
  for (const k of names) {
    const r = await store.read(k);
    if (r) records.push(r);
  }
  const chain = audit ? await audit.read() : { records: [], warnings: [] };
  const head = {
    format: EXPORT_FORMAT,
    exportedAt: now.toISOString(),
    source: store.label,
    keys: records.length,
    audit: chain.records.length,
  };
  return {
    lines: [
      JSON.stringify(head),
      ...records.map((record) => JSON.stringify({ kind: 'key', record })),
      ...chain.records.map((record) => JSON.stringify({ kind: 'audit', record })),
    ],
    keys: records.length,
    audit: chain.records.length,
    warnings: chain.warnings,
  };
}

/** Parse an export: key records and the audit chain (verified); any problem is one line, nothing written. */
export function parseExportFull(text: string, source: string): { records: KeyRecord[]; audit: AuditRecord[] } {
  const audit: AuditRecord[] = [];
  const keyLines: string[] = [];
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  lines.forEach((l, i) => {
    if (i > 0 && l.startsWith('{"kind":"audit"')) {
      let r: unknown;
      try {
        r = (JSON.parse(l) as { record?: unknown }).record;
      } catch {
        throw new KeyrotorError('USAGE', `${source}:${i + 1}: not JSON (a truncated file?)`);
      }
      if (!isAuditRecord(r)) throw new KeyrotorError('USAGE', `${source}:${i + 1}: not an audit record`);
      audit.push(r);
    } else keyLines.push(l);
  });
  const records = parseExport(keyLines.join('\n'), source); // the header and the key lines first
  const head = JSON.parse(lines[0] ?? '{}') as { audit?: unknown };
  if (typeof head.audit === 'number' && head.audit !== audit.length)
    throw new KeyrotorError(
      'USAGE',
      `${source}: the header announces ${head.audit} audit record(s) but ${audit.length} follow (a truncated file?)`,
    );
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
  return { records, audit };
}

/** Parse an export; any bad line is one USAGE error naming it, before anything is written. */
export function parseExport(text: string, source: string): KeyRecord[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const bad = (n: number, why: string) =>
    new KeyrotorError('USAGE', `${source}:${n}: ${why}`, { hint: 'import only what `keyrotor state export` wrote' });
  if (lines.length === 0) throw bad(1, 'empty file (expected a keyrotor state export)');
  let head: { format?: unknown; keys?: unknown };
  try {
    head = JSON.parse(lines[0]!) as typeof head;
  } catch {
    throw bad(1, 'not JSON (expected the export header line)');
  }
  const m = /^keyrotor-state-export\/(\d+)$/.exec(typeof head.format === 'string' ? head.format : '');
  if (!m) throw bad(1, `not a keyrotor state export (format ${JSON.stringify(head.format)})`);
  if (Number(m[1]) > 1)
    throw new KeyrotorError('STATE_VERSION', `${source} was exported by a newer keyrotor (${m[0]})`, {
      hint: 'import it with that version',
    });
  const out: KeyRecord[] = [];
  const seen = new Set<string>();
  lines.slice(1).forEach((line, i) => {
    const n = i + 2;
    let obj: { kind?: unknown; record?: { keyName?: unknown } };
    try {
      obj = JSON.parse(line) as typeof obj;
    } catch {
      throw bad(n, 'not JSON (a truncated file?)');
    }
    if (obj.kind !== 'key') throw bad(n, `unknown line kind ${JSON.stringify(obj.kind)}`);
    const name = typeof obj.record?.keyName === 'string' ? obj.record.keyName : '';
    let rec: KeyRecord;
    try {
      rec = decodeRecord(name, STATE_FORMAT, obj.record, `record of key "${name}"`);
    } catch (e) {
      throw bad(n, e instanceof KeyrotorError ? e.message : String(e));
    }
    if (seen.has(name)) throw bad(n, `key "${name}" appears twice`);
    seen.add(name);
    out.push(rec);
  });
  if (typeof head.keys === 'number' && head.keys !== out.length)
    throw bad(lines.length, `the header announces ${head.keys} key(s) but ${out.length} follow (a truncated file?)`);
  return out;
}

export interface ImportResult {
  imported: string[];
  /** keys whose record holds a rotation in progress (resume it against the new backend) */
  active: string[];
}

/**
 * Write every record into `store`, each under that key's lease (fenced). Refuses before writing
 * anything when a key already has state there, unless `overwrite`; a key whose lease is held is
 * LOCKED (exit 3).
 */
export async function importState(
  store: StateStore,
  records: KeyRecord[],
  opts: { overwrite?: boolean; ttlMs?: number; audit?: { log: AuditLog; records: AuditRecord[] } } = {},
): Promise<ImportResult> {
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
  if (opts.audit?.records.length) await opts.audit.log.importChain!(opts.audit.records);
  return { imported, active: records.filter((r) => r.active).map((r) => r.keyName) };
}
