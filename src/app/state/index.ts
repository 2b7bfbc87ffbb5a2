/**
 * The state backend named by the config's `state:` section (docs/state-backends.md). Every place
 * that needs the state store gets it here. Synchronous: the PostgreSQL and DynamoDB SDKs are only
 * imported on the backend's first call, so file-backend users never load them.
 */
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
  config: Pick<LoadedConfig, 'stateDir' | 'raw'>,
  env: NodeJS.ProcessEnv = process.env,
  opts: CreateStateStoreOptions = {},
): StateStore {
  const s = config.raw.state;
  switch (s.type) {
    case 'file':
      return createFileStateStore(config.stateDir, opts.clock ? { clock: opts.clock } : {});
    case 'postgres':
      return createPostgresStateStore(s, env, opts);
    case 'dynamodb':
      return createDynamoStateStore(s, env, opts.clock ? { clock: opts.clock } : {});
  }
}

/**
 * The hash-chained audit trail kept in the state backend (postgres, dynamodb); null for the file
 * backend, whose audit trail is the JSONL file (audit/jsonl.ts).
 */
export function createStateAuditLog(
  config: Pick<LoadedConfig, 'stateDir' | 'raw'>,
  env: NodeJS.ProcessEnv = process.env,
): AuditLog | null {
  const s = config.raw.state;
  switch (s.type) {
    case 'file':
      return null;
    case 'postgres':
      return createPostgresStateStore(s, env).auditLog();
    case 'dynamodb':
      return createDynamoStateStore(s, env).auditLog();
  }
}
