/**
 * The audit trail: every transition and result of every rotation, hash-chained (see record.ts and
 * jsonl.ts for the format and the crash / tamper rules).
 */
import path from 'node:path';
import type { LoadedConfig } from '../config/load.ts';
import { auditConfigSchema, type AuditConfig } from './schema.ts';
import type { JsonlAuditOptions } from './jsonl.ts';
import type { AuditLog } from './sink.ts';
import { createStateAuditLog } from '../state/index.ts';

export { auditConfigSchema, type AuditConfig } from './schema.ts';
export { createJsonlAuditLog, AUDIT_HEAD_FORMAT, type JsonlAuditOptions } from './jsonl.ts';
export { auditObserver, type AuditObserverOptions } from './observer.ts';
export { buildHistory, type RotationHistory, type HistoryStage } from './history.ts';
export {
  logAuditSink,
  teeAuditSink,
  type AuditSink,
  type AuditLog,
  type VerifyReport,
  type VerifyProblem,
  type AuditReadResult,
} from './sink.ts';
export {
  canonicalJson,
  chainRecord,
  recordHash,
  recordLine,
  GENESIS,
  type AuditEntry,
  type AuditRecord,
} from './record.ts';

/** The `audit` settings of a loaded config (defaults when the config has none). */
export function auditSettings(cfg: LoadedConfig): AuditConfig {
  return auditConfigSchema.parse((cfg.raw as { audit?: unknown }).audit ?? {});
}

/** Absolute path of the audit log for a config. */
export function auditPath(cfg: LoadedConfig, settings: AuditConfig = auditSettings(cfg)): string {
  return settings.path ? path.resolve(cfg.dir, settings.path) : path.join(cfg.stateDir, 'audit', 'audit.jsonl');
}

/**
 * The audit trail of a config, kept by its state backend: in the database (postgres, dynamodb: the
 * chain head moves in the same transaction as each record, so writers on several hosts share one
 * chain), or the JSONL file (`audit.path`, default `<stateDir>/audit/audit.jsonl`) for the file
 * backend. `opts` (lock timing) apply to a JSONL file outside a state backend only. A database trail
 * holds connections: call its `close()` when done.
 */
export function openAuditLog(cfg: LoadedConfig, opts: JsonlAuditOptions = {}, env = process.env): AuditLog {
  void opts;
  return createStateAuditLog(cfg, env);
}
