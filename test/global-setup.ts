/**
 * Servers shared by the whole run: one PostgreSQL server (test/fakes/postgres.ts) when the machine has
 * it, its URL given to the workers as KEYROTOR_TEST_PG_URL; each test block makes a database of its own
 * on it (test/helpers/postgres-db.ts). Stopped (and its cluster removed) by the teardown.
 *
 * Every test writes what it captured (stdout, stderr, logs, state dirs, snapshots) under one
 * artifacts dir (see test/helpers/artifacts.ts). After the whole run, this teardown scans every
 * byte of it for the canary secret and fails the run if it appears anywhere.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { CANARY } from './canary.ts';
import { checkMotoOnce } from './fakes/moto.ts';
import { postgresSupport, startPostgres, type Postgres } from './fakes/postgres.ts';

export default async function setup(project: TestProject) {
  // moto (Python) runs the AWS tests: asked once here, so a machine without it gets one line, not one per suite
  const motoMissing = checkMotoOnce();
  if (motoMissing) console.warn(`\nSKIPPING the AWS Secrets Manager tests: ${motoMissing}\n`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keyrotor-test-'));
  process.env.KEYROTOR_TEST_ARTIFACTS = dir;
  project.provide('artifactsDir', dir);
  let pg: Postgres | undefined;
  if (postgresSupport().available) {
    pg = await startPostgres();
    // read by test/helpers/postgres-db.ts
    process.env.KEYROTOR_TEST_PG_URL = pg.url;
    process.env.KEYROTOR_TEST_PG_SOURCE = pg.source;
    process.env.KEYROTOR_TEST_PG_BIN = pg.bin;
  }
  return async () => {
    await pg?.close();
    const hits: string[] = [];
    let files = 0;
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = path.join(d, name);
        const st = statSync(p);
        if (st.isDirectory()) walk(p);
        else {
          files++;
          if (readFileSync(p).includes(CANARY)) hits.push(path.relative(dir, p));
        }
      }
    };
    walk(dir);
    if (hits.length) {
      throw new Error(
        `canary secret found in ${hits.length} captured file(s) (kept in ${dir}): ${hits.slice(0, 10).join(', ')}`,
      );
    }
    console.log(`canary scan: ${files} captured files, 0 contain the canary`);
    if (!process.env.KEYROTOR_KEEP_ARTIFACTS) rmSync(dir, { recursive: true, force: true });
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    artifactsDir: string;
  }
}
