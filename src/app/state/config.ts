/** The `state:` section of the config: where keyrotor keeps key records, leases and snapshots. */
import { z } from 'zod';

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
export type PostgresStateConfig = z.output<typeof postgresState>;
export type DynamoStateConfig = z.output<typeof dynamodbState>;
