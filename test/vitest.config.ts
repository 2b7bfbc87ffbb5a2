import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

/**
 * Test files at once. Vitest's default on this project's 2-core machines is one (cores - 1), which runs
 * the 75 files one after another although most of their time is spent waiting (child processes, lease
 * ttls, moto, PostgreSQL, gate polls): two files at once use both cores. KEYROTOR_TEST_WORKERS=1
 * serialises the run again (e.g. to time one file alone).
 */
const workers = Number(process.env.KEYROTOR_TEST_WORKERS) || 2;

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: workers,
    globalSetup: ['test/global-setup.ts'],
  },
});
