/**
 * Chaos, in process: hundreds of simulated crashes of real rotations (src/run.ts `rotateKey`, the real
 * machine, the real file state store and lease, the real providers over their wire protocols), plus
 * random provider faults from the fakes' knobs. Every crash keeps exactly what was persisted (see
 * crash-switch.ts); then `rotate` or `resume` runs again, often crashing again (2 to 6 crashes in a
 * row), and finally a recovery run (`resume` or `rotate`) finishes. After every crash and after every
 * finished scenario the invariant is checked against the fakes' own state (world.ts).
 *
 * Worlds (one configured key each, each with its own OpenAI/GCP/Azure fakes so that they can run at
 * the same time and a seed replays each world's scenarios): file; GCP Secret Manager (gRPC fake); Azure
 * Key Vault (HTTPS fake, composed with a stub credential and the fake's CA exactly as
 * test/entrypoints/fanout.test.ts does — DefaultAzureCredential cannot work here, so Azure is crashed
 * only in process); AWS Secrets Manager (moto, one shared process); and one key fanned out to all four.
 * Faults: OpenAI 5xx, 429 with retry-after, timeouts (slow answers), connection resets, lost answers,
 * malformed 200 answers (truncated JSON, an HTML page, JSON without its fields; applied or not);
 * GCP error codes before or after applying the change; Azure 5xx/429 and dropped connections; and
 * "targeted" runs of faults armed the moment a given stage calls a store (stage, promote) or the
 * issuer (revoke), long enough to defeat the retries, so that compensations (demote, unstage,
 * discard) run, fail and get crashed too. When a run ends needs_attention, the test does what the
 * leftovers ask of an operator — remove the failed rotation's pending versions, make every store
 * serve the same working key if they were left split (a failed demote, or leak mode stopped half
 * way), then `keyrotor sweep` — before it goes on. moto has no fault knob: the AWS store gets
 * crashes, no faults.
 *
 * The suite itself is crash-suite.ts (parameterized by the state backend; crash-backends.test.ts runs
 * it on PostgreSQL and DynamoDB). Reproduce with KEYROTOR_CHAOS_SEED=<seed printed below>;
 * KEYROTOR_CHAOS_SCALE=<x> scales the crash quotas; KEYROTOR_CHAOS_DEBUG=1 prints every scenario.
 */
import { describe, vi } from 'vitest';
import { motoSupportOrSkip } from '../fakes/moto.ts';
import { crashSuite, fileCrashBackend, SEED } from './crash-suite.ts';

vi.mock('../../providers/index.ts', async (importOriginal) =>
  (await import('./crash-providers.ts')).crashProviders(await importOriginal()),
);

const MOTO = motoSupportOrSkip('chaos: simulated crashes (AWS on moto)');

describe.skipIf(!MOTO)(`chaos: simulated crashes in process (seed ${SEED})`, () => {
  crashSuite({
    name: 'chaos-crash',
    backend: () => fileCrashBackend,
    // crashes per world; the worlds run at the same time
    worlds: [
      { spec: { key: 'c-file', stores: ['file'], gate: true }, crashes: 100 },
      { spec: { key: 'c-gcp', stores: ['gcp'], gate: false }, crashes: 100 },
      { spec: { key: 'c-azure', stores: ['azure'], gate: true }, crashes: 100 },
      { spec: { key: 'c-aws', stores: ['aws'], gate: false }, crashes: 70 },
      { spec: { key: 'c-fan', stores: ['file', 'gcp', 'azure', 'aws'], gate: true }, crashes: 80 },
    ],
    // stop adding scenarios after the time budget (the floor assertion then says what is missing)
    random: { minCrashes: 450, timeBudgetMs: 200_000, testTimeoutMs: 260_000 },
  });
});
