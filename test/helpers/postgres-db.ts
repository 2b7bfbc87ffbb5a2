/**
 * PostgreSQL for the state-backend tests: one real server (test/fakes/postgres.ts) for the whole run,
 * started by the global setup (test/global-setup.ts, `KEYROTOR_TEST_PG_URL`), and a fresh database of
 * it per test block — isolation by database, so no test sees another's schema, rows or locks.
 * Without the global setup (a file run on its own through plain vitest) a server of its own is started.
 *
 *   const db = usePostgresDatabase('claims');   // in a describe: beforeAll / afterAll
 *   it('…', () => run({ KEYROTOR_DATABASE_URL: db.url() }));
 *
 *   const server = await sharedPostgres();      // the same, by hand
 *   const url = await server.createDatabase('moving');
 *   await server.close();                       // ends only a server of its own
 */
import { afterAll, beforeAll } from 'vitest';
import { createDatabaseAt, startPostgres, type Postgres } from '../fakes/postgres.ts';

/** set by the global setup for the test workers: the superuser URL of the run's server */
export const SHARED_PG_ENV = 'KEYROTOR_TEST_PG_URL';
/** and whose binaries run it (`system` | `embedded`), and where they are */
export const SHARED_PG_SOURCE_ENV = 'KEYROTOR_TEST_PG_SOURCE';
export const SHARED_PG_BIN_ENV = 'KEYROTOR_TEST_PG_BIN';

let seq = 0;

/**
 * The run's PostgreSQL server (or a new one, without the global setup). `createDatabase(name)` makes a
 * database whose name is unique in the run (`<name>_<pid>_<n>`), so files that share the server and
 * ask for the same name never meet.
 */
export async function sharedPostgres(): Promise<Postgres> {
  const shared = process.env[SHARED_PG_ENV];
  if (!shared) return startPostgres();
  const u = new URL(shared);
  return {
    url: shared,
    port: Number(u.port),
    source: process.env[SHARED_PG_SOURCE_ENV] === 'embedded' ? 'embedded' : 'system',
    bin: process.env[SHARED_PG_BIN_ENV] ?? '',
    createDatabase: (name) => createDatabaseAt(shared, `${name}_${process.pid}_${++seq}`),
    // the global setup's teardown stops the server (and removes its cluster with every database)
    close: async () => undefined,
  };
}

export function usePostgresDatabase(name: string): { url: () => string } {
  let server: Postgres | undefined;
  let url = '';
  beforeAll(async () => {
    server = await sharedPostgres();
    url = await server.createDatabase(name);
  }, 60_000);
  afterAll(async () => {
    await server?.close();
  });
  return { url: () => url };
}
