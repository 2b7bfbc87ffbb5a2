/**
 * The in-process crash suite (crash-suite.ts) on the database state backends (issue 12): PostgreSQL (a
 * real cluster, test/fakes/postgres.ts) and DynamoDB on moto (one request at a time, like real
 * DynamoDB's per-item serialisation). One rotation of a key with the file secret store and an
 * issuer-smoke-test gate is crashed before and after each of its events in turn — every issuer and
 * store call, every state write (each transition's snapshot with its audit record, the result) — and
 * each crash is followed by `resume` or `rotate` (a seeded quarter of those recoveries crash once more
 * first). The invariant is checked at each crash and at rest, and at the end the backend's audit chain
 * must verify with no rotation recorded `rotated` twice. The file backend runs the same suite in
 * crash.test.ts (seeded random scenarios with provider faults across five worlds).
 *
 * PostgreSQL gets every crash point (40: 20 events, before and after each); DynamoDB on moto a
 * documented sample of 6 (DYNAMODB_POINTS: moto is too slow for all 40 within the CI budget). One
 * server per backend for the whole file; the key and the table/schema are this file's own.
 */
import { afterAll, beforeAll, describe, vi } from 'vitest';
import pg from 'pg';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { crashSuite, SEED } from './crash-suite.ts';
import { createPostgresStateStore } from '../../src/app/state/postgres-state-store.ts';
import { createDynamoStateStore } from '../../src/app/state/dynamodb-state-store.ts';
import { systemClock } from '../../src/core/clock.ts';

vi.mock('../../providers/index.ts', async (importOriginal) =>
  (await import('./crash-providers.ts')).crashProviders(await importOriginal()),
);

const TIMEOUT_MS = 120_000;

/**
 * The DynamoDB sample: the snapshot writes (`state.saveActive`, numbered from 0 in the order of a
 * rotation: 0 preflight, 1 issue, 2 stage, 3 verify, 4 promote, 5 confirm, 6 revoke, 7 verifyRevoked)
 * and the result write (`state.finish`) where a crash leaves the most to the next run: the new key
 * minted and only its snapshot written (2, after), staged but not yet recorded (3, before), promoted
 * (5, after), about to revoke (6, before), and the result both unwritten and written.
 */
const DYNAMODB_POINTS = new Set([
  'state.saveActive#2/after',
  'state.saveActive#3/before',
  'state.saveActive#5/after',
  'state.saveActive#6/before',
  'state.finish#0/before',
  'state.finish#0/after',
]);

// the two backends run at the same time (separate servers, keys and crash switches)
describe.concurrent('chaos: a crash at every point, database state backends', () => {
  const PG = postgresSupportOrSkip('chaos: simulated crashes with the PostgreSQL state backend');
  describe.skipIf(!PG)(`chaos: a crash at every point, PostgreSQL state backend (seed ${SEED})`, () => {
    const db = usePostgresDatabase('chaos_crash');
    const cfg = { type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema: 'keyrotor' } as const;
    const env = () => ({ KEYROTOR_DATABASE_URL: db.url() });
    beforeAll(async () => {
      const s = createPostgresStateStore(cfg, env());
      await s.init!();
      await s.close!();
    });
    crashSuite({
      name: 'chaos-crash-postgres',
      // the server's now() decides expiry: no process clock can move a lease past it
      backend: () => ({
        name: 'postgres',
        open: () => createPostgresStateStore(cfg, env(), { clock: systemClock }),
        async leaseExpired(keyName) {
          // the dead run's lease runs out, as its ttl would (the file and DynamoDB suites move the next
          // process's clock past it instead)
          const c = new pg.Client({ connectionString: db.url() });
          await c.connect();
          try {
            await c.query('UPDATE keyrotor.leases SET expires_at = now() WHERE key_name = $1 AND expires_at > now()', [
              keyName,
            ]);
          } finally {
            await c.end();
          }
        },
      }),
      worlds: [{ spec: { key: 'cp-file', stores: ['file'], gate: true }, crashes: 0 }],
      everyPoint: { testTimeoutMs: TIMEOUT_MS },
    });
  });

  const MOTO = motoSupportOrSkip('chaos: simulated crashes with the DynamoDB state backend');
  describe.skipIf(!MOTO)(`chaos: a crash at every point, DynamoDB state backend (seed ${SEED})`, () => {
    let moto: Moto | undefined;
    const creds = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' };
    const saved = { ...process.env };
    const cfg = () =>
      ({ type: 'dynamodb', table: 'chaos-crash', region: 'us-east-1', endpoint: moto!.endpoint }) as const;
    beforeAll(async () => {
      Object.assign(process.env, creds); // the SDK's default credential chain reads process.env
      moto = await startMoto({ serial: true });
      const s = createDynamoStateStore(cfg(), creds);
      await s.init!();
      await s.close!();
    }, 60_000);
    afterAll(async () => {
      await moto?.close();
      for (const k of Object.keys(creds)) if (saved[k] === undefined) delete process.env[k];
    });
    crashSuite({
      name: 'chaos-crash-dynamodb',
      // expiry is judged by the acquirer's clock: each simulated process's clock is past every earlier lease
      backend: () => ({ name: 'dynamodb', open: (_dir, clock) => createDynamoStateStore(cfg(), creds, { clock }) }),
      worlds: [{ spec: { key: 'cd-file', stores: ['file'], gate: true }, crashes: 0 }],
      // a documented sample (moto copies the whole table for each item of a TransactWriteItems, so its
      // writes slow down as the audit trail grows): DYNAMODB_POINTS; every point runs on PostgreSQL
      everyPoint: { testTimeoutMs: TIMEOUT_MS, only: DYNAMODB_POINTS },
    });
  });
});
