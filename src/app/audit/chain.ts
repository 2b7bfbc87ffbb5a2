/**
 * Verifying a hash chain kept in a database (state backends postgres / dynamodb): the stored canonical
 * lines in `seq` order plus the stored head. Same rules as the JSONL file (jsonl.ts): every record's
 * own hash, gap-free `seq`, each `prev` equal to the hash before it, and the head naming the last
 * record (records cut off the end are caught there). `line` in a problem is the 1-based position.
 */
import { canonicalJson, GENESIS, isAuditRecord, recordHash, type AuditRecord } from './record.ts';
import type { AuditReadResult, VerifyReport } from './sink.ts';

export interface StoredChain {
  /** the stored canonical JSON of each record, in seq order */
  lines: string[];
  /** the stored head: the last appended record (seq 0 and GENESIS when nothing was appended) */
  head: { seq: number; hash: string } | null;
}

export function readChain(chain: StoredChain): AuditReadResult {
  const records: AuditRecord[] = [];
  const warnings: string[] = [];
  chain.lines.forEach((l, i) => {
    try {
      const r = JSON.parse(l) as unknown;
      if (isAuditRecord(r)) records.push(r);
      else warnings.push(`record ${i + 1} is not an audit record; skipped`);
    } catch {
      warnings.push(`record ${i + 1} is not JSON; skipped`);
    }
  });
  return { records, warnings };
}

export function verifyChain(label: string, chain: StoredChain): VerifyReport {
  const report: VerifyReport = { file: label, ok: true, records: 0, headHash: null, headSeq: null, warnings: [] };
  let prev = { seq: 0, hash: GENESIS };
  for (const [i, line] of chain.lines.entries()) {
    const at = i + 1;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      return broken(report, { line: at, seq: null, reason: 'not JSON' });
    }
    if (!isAuditRecord(r)) return broken(report, { line: at, seq: null, reason: 'not an audit record' });
    const where = { line: at, seq: r.seq, key: r.key, rotationId: r.rotationId, state: r.state };
    if (canonicalJson(r) !== line)
      return broken(report, { ...where, reason: 'not in canonical form (edited by hand?)' });
    if (recordHash(r) !== r.hash) return broken(report, { ...where, reason: 'hash mismatch: the record was changed' });
    if (r.seq !== prev.seq + 1)
      return broken(report, { ...where, reason: `seq ${r.seq} follows ${prev.seq}: records were removed or inserted` });
    if (r.prev !== prev.hash)
      return broken(report, { ...where, reason: 'prev does not match the record before it: the chain was altered' });
    prev = { seq: r.seq, hash: r.hash };
    report.records++;
    report.headSeq = r.seq;
    report.headHash = r.hash;
  }
  const head = chain.head ?? { seq: 0, hash: GENESIS };
  if (head.seq !== prev.seq || head.hash !== prev.hash) {
    return broken(report, {
      line: chain.lines.length,
      seq: prev.seq || null,
      reason:
        head.seq > prev.seq
          ? `the head names record #${head.seq} but the chain ends at #${prev.seq}: records were cut off the end`
          : `the head names record #${head.seq} (${head.hash.slice(0, 12)}...) but the chain ends at #${prev.seq}`,
    });
  }
  return report;
}

function broken(report: VerifyReport, problem: NonNullable<VerifyReport['broken']>): VerifyReport {
  report.ok = false;
  report.broken = problem;
  return report;
}
