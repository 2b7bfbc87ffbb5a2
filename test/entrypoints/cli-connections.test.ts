/**
 * The CLI's `main()` called in-process again and again (an embedder's `main(argv, io)`) with the
 * PostgreSQL state backend must not pile up database connections: every pool a command opens (the
 * state store, the audit trail, what the observers opened) is closed when `main()` returns, on every
 * path: a rotation, read-only commands, and a command that fails after it opened the store. Counted
 * by the server itself (`pg_stat_activity`), after each call. The same for the library's `rotate()`
 * and `status()` with their default state store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import pg from 'pg';
import { cliInProcess, LOCAL_CONFIG, workspace } from './cli-helpers.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { processMetrics } from '../../src/app/metrics.ts';

const MASTER = '5c'.repeat(32);
const CONFIG = LOCAL_CONFIG.replace('version: 1\n', 'version: 1\nstate: { type: postgres, schema: pools }\n');

/** each a main() call: [argv, expected exit code] */
const CALLS: [string[], number][] = [
  [['rotate', '--now', '--json'], 0],
  [['status', '--json'], 0],
  [['audit', 'verify', '--json'], 0],
  [['history', '--json'], 0],
  // fails (USAGE, exit 2) after it opened the state store and the issuer
  [['adopt', 'demo', '--key-id', 'lk_nobody_made_this'], 2],
];

describe.skipIf(!postgresSupportOrSkip('CLI connections on PostgreSQL'))('main() in-process: connections', () => {
  const db = usePostgresDatabase('clipools');
  let monitor: pg.Client;
  beforeAll(async () => {
    monitor = new pg.Client({ connectionString: db.url() });
    await monitor.connect();
  });
  afterAll(async () => {
    await monitor?.end();
  });

  /** sessions on this database other than the monitor's own, once they settle (a closed client's backend exits a moment later) */
  async function sessions(): Promise<number> {
    const count = async () =>
      Number(
        (
          await monitor.query<{ n: string }>(
            'SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
          )
        ).rows[0]!.n,
      );
    const until = Date.now() + 3_000;
    let n = await count();
    while (n > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      n = await count();
    }
    return n;
  }

  it('20 main() calls (rotate, status, audit verify, history, a failing adopt) leave no connection open', async () => {
    const dir = workspace(CONFIG, 'cli-connections');
    const env = { KEYROTOR_DATABASE_URL: db.url(), KEYROTOR_MASTER_KEY: MASTER };
    const cli = (args: string[], name: string) =>
      cliInProcess(['-c', path.join(dir, 'rotation.config.yaml'), '--log-level', 'silent', ...args], { env, name });

    expect((await cli(['state', 'init'], 'pools-init')).code).toBe(0);
    expect(await sessions()).toBe(0);

    const after: number[] = [];
    const codes: number[] = [];
    for (let i = 0; i < 20; i++) {
      const [args, want] = CALLS[i % CALLS.length]!;
      const r = await cli(args, `pools-${i}`);
      codes.push(r.code);
      if (r.code !== want) throw new Error(`call ${i} (${args.join(' ')}) exited ${r.code}: ${r.stderr}`);
      after.push(await sessions());
    }
    expect(codes).toEqual(Array.from({ length: 20 }, (_, i) => CALLS[i % CALLS.length]![1]));
    expect(after).toEqual(Array.from({ length: 20 }, () => 0));

    // the process-wide metrics no longer read the closed store at scrape time (which would reopen a pool)
    await processMetrics().text();
    expect(await sessions()).toBe(0);
  }, 180_000);

  it("a long-lived worker's runs (daemon, serve, a warm Lambda) write the audit trail through its state store's pool", async () => {
    const dir = workspace(CONFIG, 'worker-connections');
    const env = { KEYROTOR_DATABASE_URL: db.url(), KEYROTOR_MASTER_KEY: MASTER };
    const { loadConfig } = await import('../../src/entrypoints/index.ts');
    const { createStateStore } = await import('../../src/app/state/index.ts');
    const { defaultObservers, flushObservers } = await import('../../src/app/observers.ts');
    const { rotateKeys } = await import('../../src/app/run.ts');
    const { silentLogger } = await import('../../src/app/log.ts');
    const config = await loadConfig(path.join(dir, 'rotation.config.yaml'), env);
    const store = createStateStore(config, env);
    await store.init?.();
    const now = async () =>
      Number(
        (
          await monitor.query<{ n: string }>(
            'SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
          )
        ).rows[0]!.n,
      );
    const counts: number[] = [];
    try {
      // what the daemon does per tick and serve / the Lambda handler per request: observers built per run
      for (let i = 0; i < 6; i++) {
        const logger = silentLogger();
        const observers = defaultObservers({ config, logger, actor: 'daemon', env, stateStore: store });
        const [r] = await rotateKeys(config.keys, { config, stateStore: store, logger, env, now: true, observers });
        expect(r).toMatchObject({ outcome: 'rotated' });
        await flushObservers(observers);
        // a run that finds the key locked by another worker: its result is audited outside a rotation's
        // writes (through the audit trail's own connection)
        const other = await store.acquire('demo', 'another-worker', 60_000);
        const again = defaultObservers({ config, logger, actor: 'daemon', env, stateStore: store });
        const [l] = await rotateKeys(config.keys, {
          config,
          stateStore: store,
          logger,
          env,
          now: true,
          observers: again,
        });
        expect(l).toMatchObject({ outcome: 'locked' });
        await flushObservers(again);
        if ('release' in other) await other.release();
        counts.push(await now());
      }
      // the audit records went into the trail (one chain), written with the snapshots
      const audit = await import('../../src/app/audit/index.ts');
      const trail = audit.openAuditLog(config, {}, env);
      expect((await trail.verify()).ok).toBe(true);
      await trail.close?.();
    } finally {
      await store.close?.();
    }
    // before: every run opened a pool of its own for the audit trail, alive until pg's idle timeout
    expect(counts.at(-1)).toBeLessThanOrEqual(counts[0]! + 1);
    expect(await sessions()).toBe(0);
  }, 120_000);

  it("the library's rotate() and status() close the state store they made (and the audit trail's pool)", async () => {
    const dir = workspace(CONFIG, 'lib-connections');
    const env = { KEYROTOR_DATABASE_URL: db.url(), KEYROTOR_MASTER_KEY: MASTER };
    const { loadConfig, rotate, status } = await import('../../src/entrypoints/index.ts');
    const config = await loadConfig(path.join(dir, 'rotation.config.yaml'), env);
    const after: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [r] = await rotate(config, { now: true, env });
      expect(r).toMatchObject({ outcome: 'rotated' });
      after.push(await sessions());
      const [s] = await status(config, { env });
      expect(s).toMatchObject({ name: 'demo' });
      after.push(await sessions());
    }
    expect(after).toEqual(Array.from({ length: 8 }, () => 0));
  }, 120_000);
});
