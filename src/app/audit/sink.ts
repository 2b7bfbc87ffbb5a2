/**
 * Audit sinks are pluggable: the observer hands each entry to a sink. The default sink is the
 * hash-chained JSONL file in the state dir (jsonl.ts); `logAuditSink` mirrors entries into the log
 * (useful on Lambda / Cloud Run where the log is shipped anyway); `teeAuditSink` writes to several.
 */
import type { Logger } from '../../core/ports.ts';
import type { AuditEntry, AuditRecord } from './record.ts';

export interface AuditSink {
  /** human-readable location for messages, e.g. `.keyrotor/audit/audit.jsonl` */
  readonly label: string;
  /** durably record one entry; resolves once it is stored (in order of calls) */
  append(entry: AuditEntry): Promise<AuditRecord | void>;
}

export interface VerifyProblem {
  /** 1-based line number in the log */
  line: number;
  seq: number | null;
  key?: string | undefined;
  rotationId?: string | null | undefined;
  state?: string | undefined;
  reason: string;
}

export interface VerifyReport {
  file: string;
  ok: boolean;
  /** records checked (a verified last record without its newline counts) */
  records: number;
  /** hash of the last good record (anchor it elsewhere for stronger guarantees) */
  headHash: string | null;
  headSeq: number | null;
  /** the first broken record */
  broken?: VerifyProblem | undefined;
  /** not failures: a torn last line from a crash, a missing head file, ... */
  warnings: string[];
}

export interface AuditReadResult {
  records: AuditRecord[];
  warnings: string[];
}

/** A sink that can also be read back and verified (the JSONL file). */
export interface AuditLog extends AuditSink {
  readonly file: string;
  /**
   * The trail's identity: equal to `StateStore.auditTrail` of a state store that writes this trail
   * itself, with its snapshots (then a rotation's records go through the store, in one write each).
   */
  readonly trail?: string;
  read(): Promise<AuditReadResult>;
  verify(): Promise<VerifyReport>;
  /**
   * `state import`: write a verified chain verbatim (same seq, prev and hash) into this log, which
   * must be empty (USAGE otherwise; nothing written). Optional.
   */
  importChain?(records: AuditRecord[]): Promise<void>;
  /**
   * Release what opening this log opened (a database backend's connection pool). Its opener calls it
   * when done; absent when there is nothing to release (the JSONL file). Optional.
   */
  close?(): Promise<void>;
}

/** Mirror every entry into the log at info level (references only, like the file). */
export function logAuditSink(logger: Logger): AuditSink {
  return {
    label: 'log',
    append(entry) {
      logger.info(
        { audit: entry },
        `audit ${entry.type}${entry.state ? ` ${entry.state}` : ''}${entry.outcome ? ` ${entry.outcome}` : ''}`,
      );
      return Promise.resolve();
    },
  };
}

/** Write each entry to every sink, in order; the first sink's record is returned. */
export function teeAuditSink(sinks: AuditSink[]): AuditSink {
  return {
    label: sinks.map((s) => s.label).join('+'),
    async append(entry) {
      let first: AuditRecord | void = undefined;
      const errors: unknown[] = [];
      for (const [i, s] of sinks.entries()) {
        try {
          const r = await s.append(entry);
          if (i === 0) first = r;
        } catch (e) {
          errors.push(e);
        }
      }
      if (errors.length) throw errors[0];
      return first;
    },
  };
}
