/**
 * A PostgreSQL worker paused inside a transaction (issue 12, docs/state-backends.md "Timeouts"): its
 * session holds row locks (the lease row share-locked by a fenced write, the record row locked for
 * update) until the server ends the session after `idleInTransactionTimeout`. So its successor waits a
 * bounded time, never until the paused process happens to wake; the paused worker, once resumed,
 * reconnects and is told clearly that its lease is gone. Lock waits are bounded by `lockTimeout`, and a
 * claim skips a locked row without waiting at all. Real server (test/fakes/postgres.ts), real
 * processes (SIGSTOP / SIGCONT).
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createPostgresStateStore } from '../../src/app/state/postgres-state-store.ts';
import { isLease, type PersistedRotation } from '../../src/core/ports.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import { capture } from '../helpers/artifacts.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';

const PG = postgresSupportOrSkip('PostgreSQL paused-worker tests');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const rotation = (stage: string): PersistedRotation => ({
  rotationId: 'rot-20261101t000000z-0000000b',
  keyName: 'app',
  machineVersion: 3,
  keyrotorVersion: 'test',
  updatedAt: '2026-11-01T00:00:05.000Z',
  snapshot: {
    status: 'active',
    value: stage,
    context: { rotationId: 'rot-20261101t000000z-0000000b', keyName: 'app' },
  },
});

describe.skipIf(!PG)('PostgreSQL: a worker paused inside a transaction', () => {
  const db = usePostgresDatabase('paused');
  let n = 0;

  const store = (schema: string, extra: { idleInTransactionTimeout?: number; lockTimeout?: number } = {}) =>
    createPostgresStateStore(
      { type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema, ...extra },
      { KEYROTOR_DATABASE_URL: db.url() },
    );
  async function fresh(): Promise<string> {
    const schema = `p${process.pid}x${++n}`;
    const s = store(schema);
    await s.init!();
    await s.saveActive('app', rotation('issue')); // the record row exists
    await s.close!();
    return schema;
  }
  async function client(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: db.url() });
    await c.connect();
    return c;
  }
  async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await fn();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  it('its successor gets the lease once the server ends the stopped session; the resumed worker reconnects and gets LEASE_LOST', async () => {
    const schema = await fresh();
    const IDLE = 1_500;
    const TTL = 1_000;
    const admin = await client();
    const blocker = await client();
    const script = fileURLToPath(new URL('./fixtures/pg-paused-writer.ts', import.meta.url));
    const child = spawn(process.execPath, [script, schema, String(TTL), String(IDLE)], {
      env: { PATH: process.env.PATH, KEYROTOR_DATABASE_URL: db.url() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    const successor = store(schema);
    try {
      // hold the record row so the child's fenced write stops inside its transaction
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM ${schema}.key_records WHERE key_name = 'app' FOR UPDATE`);
      await until('the child to hold the lease', async () => (/leased \d+/.test(out) ? true : undefined));
      const pid = await until('the child to wait for the row lock inside its transaction', async () => {
        const r = await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE application_name = 'keyrotor' AND wait_event_type = 'Lock'`,
        );
        return r.rows[0]?.pid;
      });
      child.kill('SIGSTOP');
      await blocker.query('COMMIT'); // its SELECT ... FOR UPDATE completes; the process is stopped: idle in transaction
      const idleSince = Date.now();
      await until('the stopped session to be idle in transaction', async () => {
        const r = await admin.query<{ state: string }>(`SELECT state FROM pg_stat_activity WHERE pid = $1`, [pid]);
        return r.rows[0]?.state === 'idle in transaction' ? true : undefined;
      });

      // the lease expires; the successor's grant waits for the stopped session's share lock, which
      // lasts only until the server ends that session
      await sleep(TTL + 100);
      const got = await successor.acquire('app', 'successor', 60_000);
      const waited = Date.now() - idleSince;
      expect(isLease(got), 'the successor got the lease').toBe(true);
      expect(waited).toBeLessThan(IDLE + 5_000);
      const gone = await admin.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1`, [pid]);
      expect(gone.rows, 'the server ended the stopped session').toHaveLength(0);
      if (!isLease(got)) return;
      await successor.saveActive('app', rotation('verify'), got);

      // the stopped worker wakes: its transaction is gone; it reconnects, and the fence refuses it
      child.kill('SIGCONT');
      expect(await exited, err).toBe(0);
      const last = JSON.parse(out.trim().split('\n').at(-1)!) as { code?: string; message?: string };
      expect(last.code).toBe('LEASE_LOST');
      expect(last.message).toMatch(/lease token \d+ is no longer current/);
      expect((await successor.read('app'))?.active).toEqual(rotation('verify'));
      await got.release();
    } finally {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      capture('pg-paused-writer.out', out + err);
      await successor.close!();
      await blocker.end().catch(() => undefined);
      await admin.end();
    }
  }, 60_000);

  it('a lock held inside a transaction: acquire gives up after lockTimeout (LOCKED, exit 3); claim skips the row at once', async () => {
    const schema = await fresh();
    const s = store(schema, { lockTimeout: 400 });
    const free = await s.acquire('other', 'w', 60_000);
    if (isLease(free)) await free.release();
    const holder = await client();
    try {
      await holder.query('BEGIN');
      const first = await s.acquire('app', 'w0', 60_000); // makes the lease row
      if (isLease(first)) await first.release();
      await holder.query(`SELECT 1 FROM ${schema}.leases WHERE key_name = 'app' FOR UPDATE`);
      const t0 = Date.now();
      const e = await s.acquire('app', 'w1', 60_000).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(KeyrotorError);
      expect((e as KeyrotorError).code).toBe('LOCKED');
      expect((e as KeyrotorError).exitCode).toBe(3);
      expect((e as KeyrotorError).message).toMatch(/waited 400ms for a row lock/);
      expect(Date.now() - t0).toBeLessThan(3_000);

      const since = (await s.readMany!([])).readAt + 1;
      const t1 = Date.now();
      const got = await s.claim!(
        [
          { keyName: 'app', dueAt: 0, ttlMs: 60_000 },
          { keyName: 'other', dueAt: 1, ttlMs: 60_000 },
        ],
        'w2',
        2,
        since,
      );
      expect(Date.now() - t1).toBeLessThan(300);
      expect(got.map((g) => g.keyName)).toEqual(['other']);
      for (const g of got) await g.lease.release();
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
      await s.close!();
    }
  }, 30_000);
});
