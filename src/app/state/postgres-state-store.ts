/**
 * StateStore in PostgreSQL (`state: { type: postgres, urlEnv, schema }`). `pg` is imported on first
 * use only, so file-backend users never load it.
 *
 * Tables (in the configured schema, created by `keyrotor state init` through versioned migrations):
 *   keyrotor_migrations(version, applied_at, keyrotor_version)   one row per applied migration
 *   key_records(key_name PK, format, record jsonb, updated_at)   the KeyRecord (references only)
 *   leases(key_name PK, owner, token, acquired_at, expires_at)   one row per key, never deleted
 *   audit_records(seq PK, line, hash), audit_head(id = 1, seq, hash)   the hash-chained audit trail
 *   (migration 2): an append locks the head row, inserts the next record and moves the head in one
 *   transaction, so two writers can never fork the chain
 *   outbox(id PK, webhook, webhook_name, body, created_at, attempts)   (migration 3) pending webhook
 *   notifications; a delivered or given-up row is deleted
 *   leases.holder jsonb   (migration 4) who was granted the lease: host, boot id, pid namespace, pid
 *   and the pid's start time (holder.ts)
 *
 * Leases: one atomic upsert grants the lease when there is none, it expired, or the same owner asks
 * again, and bumps `token` (the fencing token) on every grant to a new owner (the same owner asking
 * again extends its lease and keeps its token). Expiry is judged by the server's
 * `now()`, never by a worker's clock. An unexpired lease whose recorded holder is a process of this
 * host and boot that provably died (holder.ts) is taken over at once: a conditional update on the
 * token that was judged, which bumps the token (so a holder judged wrongly is fenced out). Release sets `expires_at` to now (the row and its token stay,
 * so tokens only ever grow). A fenced write runs in one transaction that first takes a share lock on
 * the lease row and checks the token: a concurrent grant waits for the write to commit, and a write
 * whose token is no longer current is refused (LEASE_LOST) without touching the record. A write with
 * audit entries appends them (and moves the chain head, locked last) in the same transaction.
 * Deadlocks (40P01), serialization failures (40001) and unique-key races (23505) are retried.
 */
import { KeyrotorError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import { systemClock } from '../../core/clock.ts';
import { formatDuration } from '../../core/duration.ts';
import type {
  Fence,
  KeyRecord,
  Lease,
  LeaseHolder,
  ClaimCandidate,
  OutboxEntry,
  RecordBatch,
  StateInitResult,
  StateStore,
} from '../../core/ports.ts';
import { byAge, checkOutboxEntry, checkOutboxId, parseOutboxEntry } from './outbox.ts';
import type { PostgresStateConfig } from './config.ts';
import {
  checkKeyName,
  decodeRecord,
  emptyRecord,
  encodeRecord,
  leaseLost,
  providerStateIfAbsent,
  recordWriters,
  withRetry,
} from './record.ts';
import { STATE_FORMAT } from './schema.ts';
import { batchOf } from './claim.ts';
import { heldByDeadLocalProcess, holderJson } from './holder.ts';
import type * as PG from 'pg';
import { chainRecord, GENESIS, recordLine, type AuditEntry, type AuditRecord } from '../audit/record.ts';
import type { AuditLog } from '../audit/sink.ts';
import { readChain, verifyChain, type StoredChain } from '../audit/chain.ts';

/** The schema version this keyrotor writes and reads; each entry below is one migration. */
const MIGRATIONS: ((s: string) => string[])[] = [
  (s) => [
    `CREATE TABLE IF NOT EXISTS ${s}.key_records (
       key_name text PRIMARY KEY,
       format text NOT NULL,
       record jsonb NOT NULL,
       updated_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE TABLE IF NOT EXISTS ${s}.leases (
       key_name text PRIMARY KEY,
       owner text NOT NULL,
       token bigint NOT NULL,
       acquired_at timestamptz NOT NULL,
       expires_at timestamptz NOT NULL)`,
  ],
  (s) => [
    `CREATE TABLE IF NOT EXISTS ${s}.audit_records (seq bigint PRIMARY KEY, line text NOT NULL, hash text NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${s}.audit_head (
       id int PRIMARY KEY CHECK (id = 1),
       seq bigint NOT NULL,
       hash text NOT NULL)`,
    `INSERT INTO ${s}.audit_head (id, seq, hash) VALUES (1, 0, '${GENESIS}') ON CONFLICT (id) DO NOTHING`,
  ],
  (s) => [
    `CREATE TABLE IF NOT EXISTS ${s}.outbox (
       id text PRIMARY KEY,
       webhook int NOT NULL,
       webhook_name text NOT NULL,
       body text NOT NULL,
       created_at timestamptz NOT NULL,
       attempts int NOT NULL DEFAULT 0)`,
    `CREATE INDEX IF NOT EXISTS outbox_created_at ON ${s}.outbox (created_at)`,
  ],
  // the lease's holder process, so that a dead holder on the same host is taken over at once
  (s) => [`ALTER TABLE ${s}.leases ADD COLUMN IF NOT EXISTS holder jsonb`],
];
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

const RETRY_CODES = new Set(['40001', '40P01', '23505']);
const retryable = (e: unknown) => RETRY_CODES.has((e as { code?: string }).code ?? '');

export interface PostgresStateStoreOptions {
  clock?: Clock;
  /** keyrotor version recorded with each migration */
  version?: string;
}

/** host:port/db of a URL, for messages (never the user or password) */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}${u.port ? ':' + u.port : ''}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * The server-side limits on keyrotor's sessions (node-postgres sends them at connect): a worker
 * paused inside a transaction keeps its row locks only until the server ends its session.
 */
export function postgresSessionLimits(cfg: PostgresStateConfig): {
  idle_in_transaction_session_timeout: number;
  lock_timeout: number;
  statement_timeout: number;
} {
  return {
    idle_in_transaction_session_timeout: cfg.idleInTransactionTimeout ?? 30_000,
    lock_timeout: cfg.lockTimeout ?? 10_000,
    statement_timeout: cfg.statementTimeout ?? 60_000,
  };
}

/** the session ended under a query: the server closed it (25P03, 57P01..3) or the socket dropped */
function connectionLost(e: object): boolean {
  const code = (e as { code?: string }).code ?? '';
  if (['25P03', '57P01', '57P02', '57P03', 'ECONNRESET', 'EPIPE'].includes(code)) return true;
  const msg = e instanceof Error ? e.message : '';
  return /Connection terminated|connection error and is not queryable|terminating connection/i.test(msg);
}

export function createPostgresStateStore(
  cfg: PostgresStateConfig,
  env: NodeJS.ProcessEnv,
  opts: PostgresStateStoreOptions = {},
): StateStore & { auditLog(): AuditLog } {
  const clock = opts.clock ?? systemClock;
  const url = env[cfg.urlEnv];
  if (!url)
    throw new KeyrotorError(
      'CONFIG_ENV_MISSING',
      `state.urlEnv: environment variable ${cfg.urlEnv} is not set (it must hold the PostgreSQL URL, e.g. postgres://keyrotor:...@db:5432/keyrotor)`,
    );
  if (!/^postgres(ql)?:\/\//.test(url) || !URL.canParse(url))
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `state.urlEnv: ${cfg.urlEnv} is not a postgres:// URL (expected postgres://user:password@host:5432/database)`,
    );
  const where = describeUrl(url);
  const limits = postgresSessionLimits(cfg);
  const S = `"${cfg.schema}"`; // validated identifier, quoted
  const label = `postgres:${where} (schema ${cfg.schema})`;

  let poolP: Promise<PG.Pool> | undefined;
  const pool = () =>
    (poolP ??= import('pg').then((m) => {
      const p = new m.default.Pool({
        connectionString: url,
        max: 4,
        connectionTimeoutMillis: 10_000,
        idleTimeoutMillis: 10_000,
        allowExitOnIdle: true,
        application_name: 'keyrotor',
        ...postgresSessionLimits(cfg),
      });
      p.on('error', () => {}); // an idle client's connection dropped: the next query reconnects
      return p;
    }));

  /** pg / network errors -> one clear KeyrotorError (never the URL's credentials) */
  function mapError(e: unknown, doing: string): KeyrotorError {
    if (e instanceof KeyrotorError) return e;
    const code = (e as { code?: string }).code ?? '';
    const msg = e instanceof Error ? e.message : String(e);
    const at = `PostgreSQL ${where}`;
    if (code === '3F000' || code === '42P01')
      return new KeyrotorError('STATE_NOT_INITIALIZED', `${at} has no keyrotor schema "${cfg.schema}" yet (${doing})`, {
        cause: e,
        hint: 'run `keyrotor state init` once (as a role allowed to create the schema)',
      });
    if (code === '42501')
      return new KeyrotorError('STATE_UNAVAILABLE', `${at}: permission denied while ${doing}`, {
        cause: e,
        hint: `grant the role USAGE on schema ${cfg.schema} and SELECT, INSERT, UPDATE on its tables (docs/state-backends.md)`,
      });
    if (code === '28P01' || code === '28000')
      return new KeyrotorError(
        'STATE_UNAVAILABLE',
        `${at}: authentication failed (check the user and password in ${cfg.urlEnv})`,
        {
          cause: e,
        },
      );
    if (code === '55P03')
      return new KeyrotorError(
        'LOCKED',
        `${at}: waited ${formatDuration(limits.lock_timeout)} for a row lock while ${doing} (another worker holds it inside a transaction)`,
        {
          cause: e,
          retryable: true,
          hint: 'a worker paused inside a transaction holds the lock until its session ends (state.idleInTransactionTimeout); try again',
        },
      );
    if (code === '57014')
      return new KeyrotorError(
        'STATE_UNAVAILABLE',
        `${at}: a statement ran longer than ${formatDuration(limits.statement_timeout)} while ${doing} (state.statementTimeout)`,
        { cause: e, retryable: true },
      );
    if (code === '25P03')
      return new KeyrotorError(
        'STATE_UNAVAILABLE',
        `${at}: the server ended this worker's session: it sat inside a transaction for longer than ${formatDuration(limits.idle_in_transaction_session_timeout)} (state.idleInTransactionTimeout; was the process paused?) while ${doing}`,
        { cause: e, retryable: true },
      );
    if (code === '3D000')
      return new KeyrotorError('STATE_UNAVAILABLE', `${at}: the database does not exist (check ${cfg.urlEnv})`, {
        cause: e,
      });
    if (
      ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH'].includes(code) ||
      /timeout|terminated|Connection terminated/i.test(msg)
    )
      return new KeyrotorError('STATE_UNAVAILABLE', `${at} is unreachable while ${doing} (${code || msg})`, {
        cause: e,
        retryable: true,
        hint: `check that the server runs and that ${cfg.urlEnv} names the right host and port`,
      });
    return new KeyrotorError('STATE_UNAVAILABLE', `${at}: ${doing} failed (${code ? code + ': ' : ''}${msg})`, {
      cause: e,
      retryable: retryable(e),
    });
  }

  async function query<R extends PG.QueryResultRow>(
    doing: string,
    text: string,
    values: unknown[] = [],
  ): Promise<PG.QueryResult<R>> {
    try {
      return await withRetry(async () => (await pool()).query<R>(text, values), retryable);
    } catch (e) {
      throw mapError(e, doing);
    }
  }

  /**
   * One transaction. A connection that ends before COMMIT was sent (the server ended the session,
   * e.g. after `idleInTransactionTimeout` while this process was paused, or a reset) committed
   * nothing: the transaction is run again on a new connection (a fenced write then finds out
   * whether its lease is still current). After COMMIT was sent the outcome is unknown: no retry.
   */
  async function tx<T>(doing: string, fn: (c: PG.PoolClient) => Promise<T>): Promise<T> {
    const lostBeforeCommit = new WeakSet<object>();
    try {
      return await withRetry(
        async () => {
          const c = await (await pool()).connect();
          // the server may end the session while it is checked out: never an unhandled 'error' event
          const onError = () => {};
          c.on('error', onError);
          let broken = false;
          let committing = false;
          try {
            await c.query('BEGIN');
            const r = await fn(c);
            committing = true;
            await c.query('COMMIT');
            return r;
          } catch (e) {
            await c.query('ROLLBACK').catch(() => {
              broken = true;
            });
            if (broken && !committing && typeof e === 'object' && e !== null && connectionLost(e))
              lostBeforeCommit.add(e);
            throw e;
          } finally {
            c.off('error', onError);
            c.release(broken);
          }
        },
        (e) => retryable(e) || (typeof e === 'object' && e !== null && lostBeforeCommit.has(e)),
      );
    } catch (e) {
      throw mapError(e, doing);
    }
  }

  /** the schema exists at this keyrotor's version (checked once per store) */
  let readyP: Promise<void> | undefined;
  const ready = () =>
    (readyP ??= (async () => {
      const r = await query<{ v: number | null }>(
        'checking the schema version',
        `SELECT max(version)::int AS v FROM ${S}.keyrotor_migrations`,
      );
      const v = r.rows[0]?.v ?? 0;
      if (v > POSTGRES_SCHEMA_VERSION)
        throw new KeyrotorError(
          'STATE_VERSION',
          `PostgreSQL ${where} schema ${cfg.schema} is at version ${v}, written by a newer keyrotor (this one knows ${POSTGRES_SCHEMA_VERSION})`,
          { hint: 'upgrade keyrotor to the version that migrated the schema' },
        );
      if (v < POSTGRES_SCHEMA_VERSION)
        throw new KeyrotorError(
          'STATE_NOT_INITIALIZED',
          `PostgreSQL ${where} schema ${cfg.schema} is at version ${v}; this keyrotor needs ${POSTGRES_SCHEMA_VERSION}`,
          { hint: 'run `keyrotor state init` to migrate it' },
        );
    })().catch((e: unknown) => {
      readyP = undefined;
      throw e;
    }));

  const fenceCheck = async (c: PG.PoolClient, keyName: string, fence: Fence) => {
    const l = await c.query<{ token: string }>(`SELECT token FROM ${S}.leases WHERE key_name = $1 FOR SHARE`, [
      keyName,
    ]);
    const current = l.rows[0] ? Number(l.rows[0].token) : undefined;
    if (current !== fence.token)
      throw leaseLost(
        keyName,
        fence,
        current === undefined ? 'no lease row' : `the lease was granted again (token ${current})`,
      );
  };

  /**
   * Chain `entries` onto the audit trail inside transaction `c`: lock the head row (always the last
   * lock a write takes: lease row, record row, head), insert the records, move the head.
   */
  async function appendAudit(c: PG.PoolClient, entries: readonly AuditEntry[]): Promise<AuditRecord[]> {
    const h = await c.query<{ seq: string; hash: string }>(
      `SELECT seq, hash FROM ${S}.audit_head WHERE id = 1 FOR UPDATE`,
    );
    const head = h.rows[0];
    if (!head)
      throw new KeyrotorError('STATE_NOT_INITIALIZED', `${label} audit trail has no head row`, {
        hint: 'run `keyrotor state init`',
      });
    let prev = Number(head.seq) > 0 ? { seq: Number(head.seq), hash: head.hash } : null;
    const out: AuditRecord[] = [];
    for (const e of entries) {
      const rec = chainRecord(e, prev);
      out.push(rec);
      prev = rec;
    }
    const values: unknown[] = [];
    const rows = out.map((r, i) => {
      values.push(r.seq, recordLine(r).trimEnd(), r.hash);
      return `($${3 * i + 1}, $${3 * i + 2}, $${3 * i + 3})`;
    });
    await c.query(`INSERT INTO ${S}.audit_records (seq, line, hash) VALUES ${rows.join(', ')}`, values);
    const last = out[out.length - 1]!;
    await c.query(`UPDATE ${S}.audit_head SET seq = $1, hash = $2 WHERE id = 1`, [last.seq, last.hash]);
    return out;
  }

  async function update(
    keyName: string,
    fn: (r: KeyRecord) => void,
    fence?: Fence,
    audit?: readonly AuditEntry[],
  ): Promise<void> {
    checkKeyName(keyName);
    await ready();
    await tx(`writing the state of key "${keyName}"`, async (c) => {
      if (fence) await fenceCheck(c, keyName, fence);
      const got = await c.query<{ format: string; record: unknown }>(
        `SELECT format, record FROM ${S}.key_records WHERE key_name = $1 FOR UPDATE`,
        [keyName],
      );
      const row = got.rows[0];
      const r = row ? decodeRecord(keyName, row.format, row.record, rowName(keyName)) : emptyRecord(keyName);
      fn(r);
      const text = encodeRecord(r);
      if (row)
        await c.query(
          `UPDATE ${S}.key_records SET format = $2, record = $3::jsonb, updated_at = now() WHERE key_name = $1`,
          [keyName, STATE_FORMAT, text],
        );
      // a racing first insert of the same key fails with 23505 and the whole transaction is retried
      else
        await c.query(`INSERT INTO ${S}.key_records (key_name, format, record) VALUES ($1, $2, $3::jsonb)`, [
          keyName,
          STATE_FORMAT,
          text,
        ]);
      // the transition's audit record(s), in the same transaction: both commit or neither
      if (audit?.length) await appendAudit(c, audit);
    });
  }

  /** keys known to have a lease row (rows are never deleted) */
  const leaseRows = new Set<string>();

  const rowName = (keyName: string) => `PostgreSQL ${where} ${cfg.schema}.key_records row "${keyName}"`;

  function makeLease(keyName: string, owner: string, ttlMs: number, token: number, expiresAt: number): Lease {
    let exp = expiresAt;
    return {
      owner,
      token,
      get expiresAt() {
        return exp;
      },
      async renew() {
        const r = await query<{ exp: number }>(
          `renewing the lease of key "${keyName}"`,
          `UPDATE ${S}.leases SET expires_at = now() + $3 * interval '1 millisecond'
             WHERE key_name = $1 AND token = $2
             RETURNING (extract(epoch FROM expires_at) * 1000)::float8 AS exp`,
          [keyName, token, ttlMs],
        );
        if (!r.rows[0]) throw leaseLost(keyName, { token }, 'renewal found a newer grant');
        exp = r.rows[0].exp;
      },
      async release() {
        await query(
          `releasing the lease of key "${keyName}"`,
          `UPDATE ${S}.leases SET expires_at = now() WHERE key_name = $1 AND token = $2`,
          [keyName, token],
        );
      },
    };
  }

  async function loadChain(): Promise<StoredChain> {
    await ready();
    return tx('reading the audit trail', async (c) => {
      // one snapshot of records and head (REPEATABLE READ would also do; the head lock orders appends)
      const h = await c.query<{ seq: string; hash: string }>(
        `SELECT seq, hash FROM ${S}.audit_head WHERE id = 1 FOR SHARE`,
      );
      const r = await c.query<{ line: string }>(`SELECT line FROM ${S}.audit_records ORDER BY seq`);
      const head = h.rows[0] ? { seq: Number(h.rows[0].seq), hash: h.rows[0].hash } : null;
      return { lines: r.rows.map((x) => x.line), head };
    });
  }

  function auditLog(): AuditLog {
    const where = `${label} audit trail`;
    return {
      label: where,
      file: where,
      trail: label,
      async append(entry): Promise<AuditRecord> {
        await ready();
        return tx('appending to the audit trail', async (c) => (await appendAudit(c, [entry]))[0]!);
      },
      async read() {
        return readChain(await loadChain());
      },
      async importChain(records) {
        if (records.length === 0) return;
        await ready();
        await tx('importing the audit trail', async (c) => {
          const h = await c.query<{ seq: string }>(`SELECT seq FROM ${S}.audit_head WHERE id = 1 FOR UPDATE`);
          if (Number(h.rows[0]?.seq ?? 0) !== 0)
            throw new KeyrotorError(
              'USAGE',
              `${where} is not empty (${h.rows[0]?.seq} records); the imported audit chain was not written`,
            );
          for (const r of records)
            await c.query(`INSERT INTO ${S}.audit_records (seq, line, hash) VALUES ($1, $2, $3)`, [
              r.seq,
              recordLine(r).trimEnd(),
              r.hash,
            ]);
          const last = records[records.length - 1]!;
          await c.query(`UPDATE ${S}.audit_head SET seq = $1, hash = $2 WHERE id = 1`, [last.seq, last.hash]);
        });
      },
      async verify() {
        return verifyChain(where, await loadChain());
      },
    };
  }

  return {
    label,
    auditTrail: label,
    auditLog,

    async read(keyName) {
      checkKeyName(keyName);
      await ready();
      const r = await query<{ format: string; record: unknown }>(
        `reading the state of key "${keyName}"`,
        `SELECT format, record FROM ${S}.key_records WHERE key_name = $1`,
        [keyName],
      );
      const row = r.rows[0];
      return row ? decodeRecord(keyName, row.format, row.record, rowName(keyName)) : null;
    },

    ...recordWriters(update, clock),
    setProviderStateIfAbsent: providerStateIfAbsent(update),

    async acquire(keyName: string, owner: string, ttlMs: number): Promise<Lease | LeaseHolder> {
      checkKeyName(keyName);
      if (!Number.isFinite(ttlMs) || ttlMs <= 0)
        throw new KeyrotorError('INTERNAL', `lease: ttl must be a positive number of ms (got ${ttlMs})`);
      if (!owner) throw new KeyrotorError('INTERNAL', 'lease: owner must not be empty');
      await ready();
      const holder = holderJson();
      for (let attempt = 0; attempt < 5; attempt++) {
        const got = await query<{ token: string; exp: number }>(
          `acquiring the lease of key "${keyName}"`,
          `INSERT INTO ${S}.leases AS l (key_name, owner, token, acquired_at, expires_at, holder)
             VALUES ($1, $2, 1, now(), now() + $3 * interval '1 millisecond', $4::jsonb)
           ON CONFLICT (key_name) DO UPDATE
             SET owner = EXCLUDED.owner, acquired_at = now(), expires_at = EXCLUDED.expires_at,
                 token = CASE WHEN l.owner = EXCLUDED.owner THEN l.token ELSE l.token + 1 END,
                 holder = EXCLUDED.holder
             WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner
           RETURNING token, (extract(epoch FROM expires_at) * 1000)::float8 AS exp`,
          [keyName, owner, ttlMs, holder],
        );
        const row = got.rows[0];
        if (row) return makeLease(keyName, owner, ttlMs, Number(row.token), row.exp);
        const h = await query<{ owner: string; exp: number; live: boolean; token: string; holder: unknown }>(
          `reading the lease of key "${keyName}"`,
          `SELECT owner, (extract(epoch FROM expires_at) * 1000)::float8 AS exp, expires_at > now() AS live,
                  token::text AS token, holder
             FROM ${S}.leases WHERE key_name = $1`,
          [keyName],
        );
        const held = h.rows[0];
        if (!held?.live) continue; // it expired (or was released) in between: try again
        if (!heldByDeadLocalProcess(held.holder)) return { owner: held.owner, expiresAt: held.exp };
        // its holder, a process of this host and boot, is dead: take that very grant over (token + 1)
        const took = await query<{ token: string; exp: number }>(
          `taking over the lease of key "${keyName}" from a dead process`,
          `UPDATE ${S}.leases
              SET owner = $2, token = token + 1, acquired_at = now(),
                  expires_at = now() + $3 * interval '1 millisecond', holder = $4::jsonb
            WHERE key_name = $1 AND token = $5 AND owner = $6
           RETURNING token, (extract(epoch FROM expires_at) * 1000)::float8 AS exp`,
          [keyName, owner, ttlMs, holder, held.token, held.owner],
        );
        if (took.rows[0]) return makeLease(keyName, owner, ttlMs, Number(took.rows[0].token), took.rows[0].exp);
        // granted to someone else in between: judge again
      }
      throw new KeyrotorError('LOCKED', `lease on key "${keyName}" is contended; try again`, { retryable: true });
    },

    async readMany(keyNames: string[]): Promise<RecordBatch> {
      for (const k of keyNames) checkKeyName(k);
      await ready();
      const r = await query<{ key_name: string; format: string; record: unknown; at: number }>(
        `reading the state of ${keyNames.length} keys`,
        `SELECT k.key_name, k.format, k.record, (extract(epoch FROM now()) * 1000)::float8 AS at
           FROM (SELECT 1) one LEFT JOIN ${S}.key_records k ON k.key_name = ANY($1::text[])`,
        [keyNames],
      );
      return batchOf(keyNames, r.rows, clock.now(), (row) =>
        decodeRecord(row.key_name, row.format, row.record, rowName(row.key_name)),
      );
    },

    async claim(candidates: ClaimCandidate[], owner: string, limit: number, since: number) {
      if (!owner) throw new KeyrotorError('INTERNAL', 'lease: owner must not be empty');
      if (candidates.length === 0 || limit <= 0) return [];
      for (const c of candidates) {
        checkKeyName(c.keyName);
        if (!Number.isFinite(c.ttlMs) || c.ttlMs <= 0)
          throw new KeyrotorError('INTERNAL', `lease: ttl must be a positive number of ms (got ${c.ttlMs})`);
      }
      await ready();
      // a key never leased has no row to lock yet: create free rows first (token 0, expired long ago)
      const fresh = candidates.map((c) => c.keyName).filter((k) => !leaseRows.has(k));
      if (fresh.length) {
        await query(
          'creating lease rows',
          `INSERT INTO ${S}.leases (key_name, owner, token, acquired_at, expires_at)
             SELECT k, '', 0, '-infinity', '-infinity' FROM unnest($1::text[]) AS k
           ON CONFLICT (key_name) DO NOTHING`,
          [fresh],
        );
        for (const k of fresh) leaseRows.add(k);
      }
      // one statement: lock up to `limit` free lease rows in due order, skipping rows another worker
      // has locked (its own claim, a grant or a fenced write in flight), and grant them
      const r = await query<{ key_name: string; token: string; exp: number; ttl: number }>(
        `claiming due keys`,
        `WITH c AS (
           SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[]) WITH ORDINALITY AS c(key_name, due_at, ttl_ms, ord)
         ), picked AS (
           SELECT l.key_name, c.ttl_ms FROM ${S}.leases l JOIN c ON c.key_name = l.key_name
            WHERE l.expires_at <= to_timestamp($4::float8 / 1000) AND l.expires_at <= now()
            ORDER BY c.due_at, c.ord
            LIMIT $5
            FOR UPDATE OF l SKIP LOCKED
         )
         UPDATE ${S}.leases l
            SET owner = $6, token = l.token + 1, acquired_at = now(),
                expires_at = now() + p.ttl_ms * interval '1 millisecond', holder = $7::jsonb
           FROM picked p WHERE l.key_name = p.key_name
         RETURNING l.key_name, l.token::text AS token, (extract(epoch FROM l.expires_at) * 1000)::float8 AS exp,
                   p.ttl_ms AS ttl`,
        [
          candidates.map((c) => c.keyName),
          candidates.map((c) => c.dueAt),
          candidates.map((c) => c.ttlMs),
          since,
          limit,
          owner,
          holderJson(),
        ],
      );
      const order = new Map(candidates.map((c, i) => [c.keyName, [c.dueAt, i] as const]));
      const rank = (k: string) => order.get(k)!;
      return r.rows
        .sort((a, b) => rank(a.key_name)[0] - rank(b.key_name)[0] || rank(a.key_name)[1] - rank(b.key_name)[1])
        .map((x) => ({ keyName: x.key_name, lease: makeLease(x.key_name, owner, x.ttl, Number(x.token), x.exp) }));
    },

    async outboxAdd(e: OutboxEntry) {
      checkOutboxEntry(e);
      await ready();
      await query(
        `writing outbox entry ${e.id}`,
        `INSERT INTO ${S}.outbox (id, webhook, webhook_name, body, created_at, attempts)
           VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET webhook = EXCLUDED.webhook, webhook_name = EXCLUDED.webhook_name,
           body = EXCLUDED.body, created_at = EXCLUDED.created_at, attempts = EXCLUDED.attempts`,
        [e.id, e.webhook, e.webhookName, e.body, e.createdAt, e.attempts],
      );
    },

    async outboxPending(limit?: number) {
      await ready();
      const r = await query<{
        id: string;
        webhook: number;
        webhook_name: string;
        body: string;
        created_at: Date;
        attempts: number;
      }>(
        'listing the outbox',
        `SELECT id, webhook, webhook_name, body, created_at, attempts FROM ${S}.outbox
           ORDER BY created_at, id ${limit === undefined ? '' : 'LIMIT $1'}`,
        limit === undefined ? [] : [limit],
      );
      const out: OutboxEntry[] = [];
      for (const x of r.rows) {
        const e = parseOutboxEntry({
          id: x.id,
          webhook: x.webhook,
          webhookName: x.webhook_name,
          body: x.body,
          createdAt: new Date(x.created_at).toISOString(),
          attempts: x.attempts,
        });
        if (e) out.push(e);
      }
      return out.sort(byAge);
    },

    async outboxDone(id: string) {
      checkOutboxId(id);
      await ready();
      await query(`removing outbox entry ${id}`, `DELETE FROM ${S}.outbox WHERE id = $1`, [id]);
    },

    async outboxAttempted(id: string, n: number) {
      checkOutboxId(id);
      await ready();
      await query(
        `counting attempts of outbox entry ${id}`,
        `UPDATE ${S}.outbox SET attempts = attempts + $2 WHERE id = $1`,
        [id, n],
      );
    },

    async keys() {
      await ready();
      const r = await query<{ key_name: string }>(
        'listing keys',
        `SELECT key_name FROM ${S}.key_records ORDER BY key_name`,
      );
      return r.rows.map((x) => x.key_name);
    },

    async init(): Promise<StateInitResult> {
      const steps: string[] = [];
      await tx(`initialising schema ${cfg.schema}`, async (c) => {
        // one initialiser at a time per schema (the lock ends with the transaction)
        await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`keyrotor-migrate:${cfg.schema}`]);
        const has = await c.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [cfg.schema]);
        if (!has.rows[0]) {
          await c.query(`CREATE SCHEMA ${S}`);
          steps.push(`created schema ${cfg.schema}`);
        }
        await c.query(`CREATE TABLE IF NOT EXISTS ${S}.keyrotor_migrations (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now(),
             keyrotor_version text NOT NULL)`);
        const r = await c.query<{ v: number | null }>(`SELECT max(version)::int AS v FROM ${S}.keyrotor_migrations`);
        const v = r.rows[0]?.v ?? 0;
        if (v > POSTGRES_SCHEMA_VERSION)
          throw new KeyrotorError(
            'STATE_VERSION',
            `PostgreSQL ${where} schema ${cfg.schema} is at version ${v}, written by a newer keyrotor (this one knows ${POSTGRES_SCHEMA_VERSION}); nothing was changed`,
            { hint: 'upgrade keyrotor to the version that migrated the schema' },
          );
        for (let n = v + 1; n <= POSTGRES_SCHEMA_VERSION; n++) {
          for (const sql of MIGRATIONS[n - 1]!(S)) await c.query(sql);
          await c.query(`INSERT INTO ${S}.keyrotor_migrations (version, keyrotor_version) VALUES ($1, $2)`, [
            n,
            opts.version ?? 'unknown',
          ]);
          steps.push(`applied migration ${n}`);
        }
      });
      readyP = undefined;
      return {
        changed: steps.length > 0,
        steps: steps.length ? steps : [`schema ${cfg.schema} is at version ${POSTGRES_SCHEMA_VERSION}: nothing to do`],
      };
    },

    async close() {
      const p = poolP;
      poolP = undefined;
      if (p) await (await p).end();
    },
  };
}
