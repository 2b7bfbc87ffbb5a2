/**
 * One real PostgreSQL server (test/fakes/postgres.ts) for the enclosing `describe` block: started in
 * `beforeAll`, stopped in `afterAll`, with one fresh database of it for the block.
 *
 *   const db = usePostgresDatabase('claims');
 *   it('…', () => run({ KEYROTOR_DATABASE_URL: db.url() }));
 */
import { afterAll, beforeAll } from 'vitest';
import { startPostgres, type Postgres } from '../fakes/postgres.ts';

export function usePostgresDatabase(name: string): { url: () => string } {
  let server: Postgres | undefined;
  let url = '';
  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase(name);
  }, 60_000);
  afterAll(async () => {
    await server?.close();
  });
  return { url: () => url };
}
