/** The `state:` section of the config: where keyrotor keeps key records, leases and snapshots. */
import { z } from 'zod';
import { duration } from '../../core/config-fields.ts';

const fileState = z
  .object({
    /** one JSON file per key under `<stateDir>/state`, leases under `<stateDir>/locks` (one machine or a shared volume) */
    type: z.literal('file'),
  })
  .strict();

const postgresState = z
  .object({
    type: z.literal('postgres'),
    /** name of the environment variable holding the connection URL (postgres://user:pass@host:5432/db); never the URL itself */
    urlEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .default('KEYROTOR_DATABASE_URL'),
    /** the PostgreSQL schema holding keyrotor's tables (created by `keyrotor state init`) */
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier (a-z 0-9 _, at most 63)')
      .default('keyrotor'),
    /**
     * server-side limits on keyrotor's own sessions (`0` turns one off): a worker paused inside a
     * transaction (SIGSTOP, a frozen VM) holds row locks until the server ends its session after
     * `idleInTransactionTimeout`; one statement waits at most `lockTimeout` for a lock and runs at most
     * `statementTimeout`
     */
    idleInTransactionTimeout: duration.default(30_000),
    lockTimeout: duration.default(10_000),
    statementTimeout: duration.default(60_000),
  })
  .strict();

const dynamodbState = z
  .object({
    type: z.literal('dynamodb'),
    /** table with `pk` (S, HASH) and `sk` (S, RANGE), PAY_PER_REQUEST (created by `keyrotor state init`) */
    table: z.string().regex(/^[A-Za-z0-9_.-]{3,255}$/, 'DynamoDB table names are 3-255 of A-Z a-z 0-9 _ . -'),
    /** default: AWS_REGION / the SDK's default chain */
    region: z.string().min(1).optional(),
    /** e.g. a local DynamoDB or a VPC endpoint (default: the SDK's, or AWS_ENDPOINT_URL) */
    endpoint: z.url().optional(),
  })
  .strict();

export const stateConfigSchema = z.discriminatedUnion('type', [fileState, postgresState, dynamodbState]);
export type StateConfig = z.output<typeof stateConfigSchema>;
type PostgresTimeouts = 'idleInTransactionTimeout' | 'lockTimeout' | 'statementTimeout';
/** (the timeouts have defaults: a config built in code may leave them out) */
export type PostgresStateConfig = Omit<z.output<typeof postgresState>, PostgresTimeouts> &
  Partial<Pick<z.output<typeof postgresState>, PostgresTimeouts>>;
export type DynamoStateConfig = z.output<typeof dynamodbState>;
