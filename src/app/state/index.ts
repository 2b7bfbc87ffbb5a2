/**
 * The state backend named by the config's `state:` section (docs/state-backends.md). Every place
 * that needs the state store gets it here. Synchronous: the PostgreSQL and DynamoDB SDKs are only
 * imported on the backend's first call, so file-backend users never load them.
 */
import path from 'node:path';
import type { Clock } from '../../core/clock.ts';
import type { StateStore } from '../../core/ports.ts';
import type { LoadedConfig } from '../config/load.ts';
import type { AuditLog } from '../audit/sink.ts';
import { createDynamoStateStore } from './dynamodb-state-store.ts';
import { createFileStateStore } from './file-state-store.ts';
import { createPostgresStateStore } from './postgres-state-store.ts';

export { createFileStateStore, type FileStateStoreOptions } from './file-state-store.ts';
export { STATE_FORMAT } from './schema.ts';
export type { StateConfig } from './config.ts';

export interface CreateStateStoreOptions {
  clock?: Clock;
  /** recorded with PostgreSQL migrations */
  version?: string;
}

export function createStateStore(
  config: Pick<LoadedConfig, 'stateDir' | 'raw'> & { dir?: string },
  env: NodeJS.ProcessEnv = process.env,
  opts: CreateStateStoreOptions = {},
): StateStore {
  const s = config.raw.state;
  switch (s.type) {
    case 'file':
      return createFileStateStore(config.stateDir, {
        ...(opts.clock ? { clock: opts.clock } : {}),
        ...fileAuditOption(config),
      });
    case 'postgres':
      return createPostgresStateStore(s, env, opts);
    case 'dynamodb':
      return createDynamoStateStore(s, env, opts.clock ? { clock: opts.clock } : {});
  }
}

/** the file backend's audit file: `audit.path` (relative to the config file) when set */
function fileAuditOption(config: Pick<LoadedConfig, 'stateDir' | 'raw'> & { dir?: string }): { auditFile?: string } {
  const p = (config.raw as { audit?: { path?: unknown } }).audit?.path;
  return typeof p === 'string' && p ? { auditFile: path.resolve(config.dir ?? '.', p) } : {};
}

/**
 * The hash-chained audit trail kept by the state backend: in the database (postgres, dynamodb), or
 * for the file backend the JSONL file (`audit.path`, default `<stateDir>/audit/audit.jsonl`) that the
 * file store writes with its journals (and recovers from them after a crash). A database trail opens
 * its own connections (a pg pool, a DynamoDB client): its opener owns them and calls `close()`.
 */
export function createStateAuditLog(
  config: Pick<LoadedConfig, 'stateDir' | 'raw'> & { dir?: string },
  env: NodeJS.ProcessEnv = process.env,
): AuditLog {
  const s = config.raw.state;
  switch (s.type) {
    case 'file':
      return createFileStateStore(config.stateDir, fileAuditOption(config)).auditLog();
    case 'postgres':
      return closingWith(createPostgresStateStore(s, env));
    case 'dynamodb':
      return closingWith(createDynamoStateStore(s, env));
  }
}

/** the store's audit trail, whose close() releases the store it was opened from */
function closingWith(store: StateStore & { auditLog(): AuditLog }): AuditLog {
  const log = store.auditLog();
  log.close = async () => store.close?.();
  return log;
}
