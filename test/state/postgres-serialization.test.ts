/**
 * Serialization failures (SQLSTATE 40001) and deadlocks (40P01) forced on a real PostgreSQL server, and
 * the PostgreSQL state store's `tx()` retrying them (issue 12). Nothing is simulated: the test database
 * runs keyrotor's sessions at REPEATABLE READ (`ALTER DATABASE … SET default_transaction_isolation`,
 * which a DBA may well do) and a second session of the test — the "interferer" — makes the server fail
 * keyrotor's transactions:
 *   - 40001: the interferer updates a row keyrotor is about to lock (the key's record row, or the audit
 *     chain head) and holds it; once a keyrotor transaction is seen waiting for that row (pg_locks via
 *     `pg_blocking_pids`), the interferer commits, and the server aborts the waiting transaction with
 *     "could not serialize access due to concurrent update" (its snapshot predates the commit);
 *   - 40P01: the interferer holds the audit head (locked, not updated); once a keyrotor write (which
 *     has locked the record row) waits for it, the interferer asks for that record row: a lock cycle,
 *     which the server breaks by aborting keyrotor's transaction (its `deadlock_timeout` is the
 *     shorter: 1 s vs 10 s). The head is only locked here (`FOR UPDATE`), so that the interferer's
 *     commit changes no row: keyrotor's retry may start before that commit (its backoff is 20-40 ms)
 *     and, had the head been updated, meet a 40001 of its own — one rollback more than forced, which
 *     made the counts below flaky under load (seen at 4 vs 3).
 * Each aborted keyrotor transaction is identified by its transaction id (`backend_xid` while it
 * waited) and checked `aborted` with `pg_xact_status`; the write it was part of must still land once:
 * the record holds it, the audit chain verifies and holds each record once (nothing half-written: a
 * failure at the head, after the record row was updated, rolled the record back with it). Then a whole
 * rotation (`keyrotor rotate --now`) runs while the interferer fails its writes over and over, and ends
 * `rotated` with the same audit transitions as an undisturbed rotation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { CANARY } from '../canary.ts';
import { cliInProcess } from '../entrypoints/cli-helpers.ts';
import {
  checkInvariant,
  closeBackends,
  configText,
  MASTER_KEY,
  prepareWorld,
  startBackends,
  World,
  writeWorkspace,
  type Backends,
} from '../chaos/world.ts';
import { rotation } from './backend-contract.ts';
import { createPostgresStateStore } from '../../src/app/state/postgres-state-store.ts';
import type { AuditEntry } from '../../src/core/audit.ts';
import type { KeyResult } from '../../src/app/run.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Target = 'record' | 'head' | 'deadlock';

interface Forced {
  target: Target;
  /**
   * the keyrotor transaction the server failed (null: it had no transaction id yet, i.e. its first
   * row lock was the one it waited for)
   */
  xid: string | null;
}

/**
 * A second session that fails keyrotor's writes of `key`: one per target in turn, `times` rounds (see
 * the file comment), each failure on another write, until stopped. `forced` lists the keyrotor transactions it made the server fail.
 */
function interferer(url: string, key: string, targets: Target[], times: number) {
  const forced: Forced[] = [];
  let stopping = false;
  let failure: unknown;
  let holding!: () => void;
  const ready = new Promise<void>((r) => (holding = r));
  const done = (async () => {
    const c = new pg.Client({ connectionString: url, application_name: 'interferer' });
    await c.connect();
    try {
      await c.query("SET deadlock_timeout = '10s'"); // keyrotor's sessions (1 s) detect the cycle first
      const me = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const stamp = async () =>
        (
          await c.query<{ u: string }>('SELECT updated_at::text AS u FROM keyrotor.key_records WHERE key_name = $1', [
            key,
          ])
        ).rows[0]?.u;
      for (let round = 0; round < times && !stopping; round++) {
        for (const target of targets) {
          if (stopping) break;
          await c.query('BEGIN ISOLATION LEVEL READ COMMITTED');
          if (target === 'record')
            await c.query('UPDATE keyrotor.key_records SET updated_at = updated_at WHERE key_name = $1', [key]);
          else if (target === 'head') await c.query('UPDATE keyrotor.audit_head SET seq = seq WHERE id = 1');
          else await c.query('SELECT 1 FROM keyrotor.audit_head WHERE id = 1 FOR UPDATE'); // deadlock: see the file comment
          holding();
          const seen = await stamp(); // (nobody else can change the record row while this is held)
          // wait for a keyrotor transaction to queue behind this one
          let victim: { pid: number; xid: string | null } | undefined;
          while (!stopping && !victim) {
            // (pg_stat_activity is read once per transaction unless cleared; pg_locks is live)
            await c.query('SELECT pg_stat_clear_snapshot()');
            const r = await c.query<{ pid: number; xid: string | null }>(
              `SELECT a.pid,
                      (SELECT l.transactionid::text FROM pg_locks l
                        WHERE l.pid = a.pid AND l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
                        LIMIT 1) AS xid
                 FROM pg_stat_activity a
                WHERE a.application_name = 'keyrotor' AND $1 = ANY(pg_blocking_pids(a.pid))`,
              [me],
            );
            victim = r.rows[0];
            if (!victim) await sleep(2);
          }
          if (!victim) {
            await c.query('COMMIT'); // (a no-op update: never a rollback of its own in the counters)
            break;
          }
          if (target === 'deadlock') {
            // the victim holds the record row (it waits for the head): ask for that row too
            await c.query('SELECT 1 FROM keyrotor.key_records WHERE key_name = $1 FOR UPDATE', [key]);
          }
          await c.query('COMMIT');
          forced.push({ target, xid: victim.xid });
          // let the failed write's retry land (it moves updated_at): the next failure hits another write
          while (!stopping && (await stamp()) === seen) await sleep(3);
        }
      }
    } catch (e) {
      failure = e;
    } finally {
      holding();
      await c.end().catch(() => undefined);
    }
  })();
  return {
    forced,
    /** resolves once the interferer holds its first row */
    ready,
    async stop(): Promise<Forced[]> {
      stopping = true;
      await done;
      if (failure) throw failure instanceof Error ? failure : new Error(String(failure));
      return forced;
    },
  };
}

const PG = postgresSupportOrSkip('PostgreSQL: forced serialization failures and deadlocks');
describe.skipIf(!PG)('PostgreSQL state store: forced serialization failures (40001) and deadlocks (40P01)', () => {
  const db = usePostgresDatabase('pg_serial');
  const cfg = { type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema: 'keyrotor' } as const;
  const env = () => ({ KEYROTOR_DATABASE_URL: db.url() });
  let admin: pg.Client;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: db.url() });
    await admin.connect();
    // every keyrotor session from now on: REPEATABLE READ, and a short deadlock check (the database's
    // name is made unique by the shared server: read it from its URL)
    const name = new URL(db.url()).pathname.slice(1);
    await admin.query(`ALTER DATABASE ${name} SET default_transaction_isolation = 'repeatable read'`);
    await admin.query(`ALTER DATABASE ${name} SET deadlock_timeout = '1s'`);
    const s = createPostgresStateStore(cfg, env());
    await s.init!();
    await s.close!();
  });
  afterAll(async () => {
    await admin?.end();
  });

  async function statusOf(forced: Forced[]): Promise<string[]> {
    const out: string[] = [];
    for (const f of forced)
      if (f.xid)
        out.push((await admin.query<{ s: string }>('SELECT pg_xact_status($1::xid8) AS s', [f.xid])).rows[0]!.s);
    return out;
  }
  /** the server's counters for this database (rolled-back transactions, deadlocks detected) */
  async function stats(): Promise<{ rollbacks: number; deadlocks: number }> {
    await admin.query('SELECT pg_stat_clear_snapshot()');
    const r = await admin.query<{ r: string; d: string }>(
      'SELECT xact_rollback::text AS r, deadlocks::text AS d FROM pg_stat_database WHERE datname = current_database()',
    );
    return { rollbacks: Number(r.rows[0]!.r), deadlocks: Number(r.rows[0]!.d) };
  }
  /** backends report their counters when they end or go idle: wait (at most 15 s) until `ok` */
  async function statsUntil(ok: (s: { rollbacks: number; deadlocks: number }) => boolean) {
    let s = await stats();
    for (let i = 0; i < 150 && !ok(s); i++) {
      await sleep(100);
      s = await stats();
    }
    return s;
  }

  it('a fenced snapshot write failed at the record row, at the chain head and by a deadlock is retried and lands once', async () => {
    const store = createPostgresStateStore(cfg, env());
    const key = 'serial-store';
    const counted = await stats();
    try {
      const lease = await store.acquire(key, 'writer', 60_000);
      if (!('release' in lease)) throw new Error('no lease');
      await store.saveActive(key, rotation('rot-20261101t000000z-00000001', 'issue', key), lease);
      const audit = store.auditLog();
      const before = (await audit.read()).records.length;
      const entry = (state: string): AuditEntry => ({
        type: 'transition',
        time: new Date().toISOString(),
        key,
        rotationId: 'rot-20261101t000000z-00000001',
        state,
        stage: state,
      });
      const stages = ['stage', 'verify', 'promote'];
      for (const [i, target] of (['record', 'head', 'deadlock'] as const).entries()) {
        const int = interferer(db.url(), key, [target], 1);
        await int.ready; // it holds its row before the write starts
        await store.saveActive(key, rotation('rot-20261101t000000z-00000001', stages[i], key), lease, [
          entry(stages[i]!),
        ]);
        const forced = await int.stop();
        expect(forced, `${target}: the interferer failed one keyrotor transaction`).toHaveLength(1);
        expect(await statusOf(forced), `${target}: that transaction was aborted by the server`).toEqual(['aborted']);
        const rec = await store.read(key);
        expect((rec?.active?.snapshot as { value?: string }).value).toBe(stages[i]);
      }
      const after = await audit.read();
      expect(after.records.length - before).toBe(3); // each write's audit record exactly once
      expect(after.records.slice(-3).map((r) => r.state)).toEqual(stages);
      expect((await audit.verify()).ok).toBe(true);
      await lease.release();
    } finally {
      await store.close!();
    }
    // the server counted the three rolled-back transactions and the deadlock
    const now = await statsUntil((x) => x.rollbacks >= counted.rollbacks + 3 && x.deadlocks > counted.deadlocks);
    expect(now.rollbacks - counted.rollbacks).toBe(3);
    expect(now.deadlocks - counted.deadlocks).toBe(1);
  }, 60_000);

  describe('a whole rotation', () => {
    let b: Backends;
    const w = new World({ key: 'serial-rot', stores: ['file'], gate: true });
    let configFile = '';
    let stateDir = '';
    beforeAll(async () => {
      b = await startBackends(['file']);
      await prepareWorld(b, w);
      const ws = writeWorkspace(() => b, [w], 'pg-serial');
      configFile = ws.configFile;
      stateDir = ws.stateDir;
      writeFileSync(
        configFile,
        configText(() => b, [w]).replace(/^version: 1\n/, 'version: 1\nstate: { type: postgres }\n'),
      );
    }, 60_000);
    afterAll(async () => {
      await closeBackends(b);
    });
    const rotate = async (name: string) => {
      const r = await cliInProcess(['-c', configFile, '--log-level', 'error', 'rotate', '--now', w.key, '--json'], {
        env: {
          PATH: process.env.PATH,
          OPENAI_ADMIN_KEY: b.openai.adminKey,
          KEYROTOR_MASTER_KEY: MASTER_KEY,
          ...env(),
        },
        name,
      });
      expect(r.stdout + r.stderr).not.toContain(CANARY);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { results: KeyResult[] }).results[0]!;
    };

    it('keyrotor rotate while its writes keep failing with 40001 and 40P01: rotated, the audit trail as without them', async () => {
      await rotate('serial-boot');
      w.bootstrapped = true;
      const quiet = await rotate('serial-quiet');
      expect(quiet.outcome).toBe('rotated');

      const counted = await stats();
      const int = interferer(db.url(), w.key, ['record', 'head', 'deadlock'], 2);
      await int.ready;
      const t0 = Date.now();
      const loud = await rotate('serial-loud');
      const forced = await int.stop();
      console.log(
        `rotation under forced failures: ${forced.length} transactions failed (${forced.map((f) => f.target).join(' ')}), rotated in ${Date.now() - t0} ms`,
      );
      expect(loud.outcome).toBe('rotated');
      expect(forced.map((f) => f.target)).toEqual(['record', 'head', 'deadlock', 'record', 'head', 'deadlock']);
      expect(new Set(await statusOf(forced))).toEqual(new Set(['aborted']));
      // every failed transaction, with a transaction id or not, was rolled back by the server
      const now = await statsUntil((x) => x.rollbacks >= counted.rollbacks + forced.length);
      expect(now.rollbacks - counted.rollbacks).toBe(forced.length);
      expect(now.deadlocks - counted.deadlocks).toBe(forced.filter((f) => f.target === 'deadlock').length);

      expect(await checkInvariant(b, w, stateDir, { phase: 'rest', active: null })).toEqual([]);
      const store = createPostgresStateStore(cfg, env());
      try {
        const rec = await store.read(w.key);
        expect(rec?.active ?? null).toBeNull();
        expect(rec?.last?.rotationId).toBe(loud.rotationId);
        const audit = store.auditLog();
        expect((await audit.verify()).ok).toBe(true);
        const records = (await audit.read()).records;
        const statesOf = (id: string | null) =>
          records.filter((r) => r.rotationId === id).map((r) => `${r.type}:${r.state ?? r.outcome ?? ''}`);
        // the same transitions, each once, as the undisturbed rotation
        expect(statesOf(loud.rotationId)).toEqual(statesOf(quiet.rotationId));
      } finally {
        await store.close!();
      }
    }, 90_000);
  });
});
