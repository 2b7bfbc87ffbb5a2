/**
 * The fault property on the database state backends (issue 12): any state call may fail, in the ways
 * the real backends fail, while `keyrotor rotate --now` runs (the CLI's main() in process, against
 * the loopback OpenAI fake and the file secret store):
 *   - PostgreSQL (a real server) behind a TCP proxy (test/fakes/tcp-fault-proxy.ts) that refuses new
 *     connections and resets connections mid-query at seeded random points (the statement reached the
 *     server or not); and server-side, a concurrent session holding an ACCESS EXCLUSIVE lock on the
 *     key records table longer than `state.lockTimeout` (55P03);
 *   - DynamoDB (moto) behind an HTTP proxy (test/fakes/dynamodb-fault-proxy.ts) answering
 *     ThrottlingException / ProvisionedThroughputExceededException, a ConditionalCheckFailed that
 *     does not reflect the truth, and connection resets (before or after moto applied the write).
 * Each run must end `rotated`, `rolled_back`, `needs_attention` (with a reason), or stop cleanly with
 * exit 2 or 3 and one line naming the error. Then, with the faults off, `resume` (and `sweep` after
 * needs_attention) and the invariant at rest: one working key served, no orphan at the issuer. At the
 * end the audit chain verifies (nothing half-written). Retryable faults are retried: a phase with
 * only throttles (DynamoDB, at most two in a row) or only serialization-free lock waits within the
 * timeout must end every rotation `rotated`.
 *
 * Reproduce with KEYROTOR_CHAOS_SEED=<seed> (the fault points are seeded; timing still plays a part).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { startTcpFaultProxy, type TcpFaultProxy } from '../fakes/tcp-fault-proxy.ts';
import { startDynamoFaultProxy, type DynamoFaultProxy } from '../fakes/dynamodb-fault-proxy.ts';
import { cliInProcess } from '../entrypoints/cli-helpers.ts';
import { chaosSeed, mulberry32, type Rng } from './rng.ts';
import {
  checkInvariant,
  closeBackends,
  MASTER_KEY,
  noteLeftovers,
  prepareWorld,
  startBackends,
  World,
  writeWorkspace,
  type Backends,
} from './world.ts';
import type { KeyResult } from '../../src/app/run.ts';
import type { SweepKeyResult } from '../../src/app/sweep.ts';

const SEED = chaosSeed();
const SCALE = Number(process.env.KEYROTOR_CHAOS_SCALE ?? '1') || 1;
const RUNS = Math.max(2, Math.ceil(8 * SCALE));
const DEBUG = process.env.KEYROTOR_CHAOS_DEBUG;
const LEASE_TTL_MS = 1_000;
const RETRYABLE_RUNS = 2;

interface FaultBackend {
  name: 'postgres' | 'dynamodb';
  stateYaml: () => string;
  env: () => NodeJS.ProcessEnv;
  /** turn the faults on for one run (seeded); returns what was armed */
  chaos: (rng: Rng) => Promise<string>;
  /** only retryable faults, that the backend's retries absorb */
  retryableOnly: (rng: Rng) => Promise<string>;
  calm: () => Promise<void>;
  stats: () => unknown;
}

function faultSuite(backend: FaultBackend): void {
  let b: Backends;
  let configFile = '';
  let stateDir = '';
  const w = new World({ key: `f-${backend.name}`, stores: ['file'], gate: true });
  const violations: string[] = [];
  const outcomes: Record<string, number> = {};
  const violation = (where: string, v: string[], detail: string) => {
    for (const x of v) violations.push(`[seed ${SEED}] ${backend.name} ${where}: ${x} (${detail})`);
  };

  beforeAll(async () => {
    b = await startBackends(['file']);
    await prepareWorld(b, w);
    const ws = writeWorkspace(() => b, [w], `chaos-faults-${backend.name}`, {
      leaseTtl: `${LEASE_TTL_MS}ms`,
      state: backend.stateYaml(),
    });
    configFile = ws.configFile;
    stateDir = ws.stateDir;
    const init = await cli(['state', 'init']);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await backend.calm();
    await closeBackends(b);
  });

  async function cli(args: string[]) {
    const r = await cliInProcess(['-c', configFile, '--log-level', 'silent', ...args], {
      env: {
        OPENAI_ADMIN_KEY: b.openai.adminKey,
        KEYROTOR_MASTER_KEY: MASTER_KEY,
        ...backend.env(),
      },
      name: `faults-${backend.name}-${args[0]}`,
    });
    if ((r.stdout + r.stderr).includes(CANARY)) violation(`keyrotor ${args[0]}`, ['printed a secret value'], '');
    return r;
  }
  const resultOf = (stdout: string): KeyResult | undefined => {
    try {
      return (JSON.parse(stdout) as { results: KeyResult[] }).results[0];
    } catch {
      return undefined;
    }
  };

  /** a run's end: a result with an allowed outcome, or a clean exit-2/3 stop with one line */
  function settle(r: { code: number; stdout: string; stderr: string }, detail: string): KeyResult | undefined {
    const res = resultOf(r.stdout);
    if (!res) {
      const lines = r.stderr.split('\n').filter((l) => l.trim());
      const key = `exit ${r.code}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (![2, 3].includes(r.code)) violation('stop', [`exit ${r.code} without a result: ${lines[0] ?? ''}`], detail);
      else if (lines.length !== 1 || !/^keyrotor: [A-Z_]+: /.test(lines[0]!))
        violation('stop', [`exit ${r.code} without one clear line: ${JSON.stringify(lines.slice(0, 3))}`], detail);
      if (DEBUG) console.log(`${backend.name} ${detail}: ${key} ${lines[0] ?? ''}`);
      return undefined;
    }
    if (res.rotationId && res.finishedAt) w.seenResults.add(`${res.rotationId}@${res.finishedAt}`);
    outcomes[res.outcome] = (outcomes[res.outcome] ?? 0) + 1;
    if (DEBUG && res.outcome !== 'rotated')
      console.log(`${backend.name} ${detail}: ${JSON.stringify({ error: res.error, leftovers: res.leftovers })}`);
    w.needsAttention = res.outcome === 'needs_attention' || (w.needsAttention && res.outcome !== 'rotated');
    const bad: string[] = [];
    // (`locked` with exit 3 is the clean exit-3 stop: another holder's lease, or this run's lease refused
    // by a conditional check, named in the result)
    const lockedStop =
      res.outcome === 'locked' && r.code === 3 && ['LOCKED', 'LEASE_LOST'].includes(res.error?.code ?? '');
    if (!['rotated', 'rolled_back', 'needs_attention', 'skipped'].includes(res.outcome) && !lockedStop)
      bad.push(`ended ${res.outcome}${res.error ? ` (${res.error.code}: ${res.error.message})` : ''}`);
    if ((res.outcome === 'rolled_back' || res.outcome === 'needs_attention') && !res.error && !res.leftovers?.length)
      bad.push(`${res.outcome} without a reason`);
    if (res.outcome === 'rotated') w.bootstrapped = true;
    if (res.outcome === 'needs_attention') noteLeftovers(b, w, res.leftovers);
    violation(`result ${res.rotationId}`, bad, detail);
    return res;
  }

  /** with the faults off: finish what the run left, then the invariant at rest */
  async function recover(detail: string): Promise<void> {
    let rec = await cli(['resume', w.key, '--json']);
    for (let n = 0; rec.code === 3 && n < 12; n++) {
      await new Promise((res) => setTimeout(res, 250)); // a lease left by a run that lost its connection
      rec = await cli(['resume', w.key, '--json']);
    }
    if (rec.code !== 0 && !resultOf(rec.stdout))
      violation('resume', [`exit ${rec.code}: ${rec.stderr.trim().slice(0, 300)}`], detail);
    else settle(rec, `${detail}, resume`);
    if (w.needsAttention) {
      // what the operator does: sweep once the lease of the run that gave up has expired (a run that
      // lost its connection or saw its fence refused cannot release it; until it expires, sweep keeps
      // that rotation's keys as a running rotation's)
      await new Promise((res) => setTimeout(res, LEASE_TTL_MS + 100));
      const sw = await cli(['sweep', w.key, '--json']);
      if (DEBUG) console.log(`${backend.name} ${detail}: sweep ${sw.stdout.slice(0, 1500)}`);
      if (sw.code !== 0)
        violation('sweep after needs_attention', [`exit ${sw.code}: ${sw.stderr.slice(0, 200)}`], detail);
    }
    violation(
      'at rest',
      await checkInvariant(b, w, stateDir, { phase: 'rest', active: null, allowSplit: w.needsAttention }),
      detail,
    );
  }

  it(`${RUNS} rotations while ${backend.name} state calls fail (refused, reset mid-call, throttled, conditional check, lock timeout): every run ends cleanly, the invariant holds, the audit chain verifies`, async () => {
    const rng = mulberry32(SEED);
    const started = Date.now();
    const boot = await cli(['rotate', '--now', w.key, '--json']);
    expect(resultOf(boot.stdout)?.outcome, boot.stderr).toBe('rotated');
    w.bootstrapped = true;

    // retryable only: every rotation must still end rotated
    for (let i = 0; i < RETRYABLE_RUNS; i++) {
      const armed = await backend.retryableOnly(rng.fork(`retryable:${i}`));
      const r = await cli(['rotate', '--now', w.key, '--json']);
      await backend.calm();
      const res = settle(r, `retryable ${i}: ${armed}`);
      if (res?.outcome !== 'rotated')
        violation(
          `retryable faults (${armed})`,
          [
            `ended ${res?.outcome ?? `exit ${r.code}: ${r.stderr.trim()}`} (${res?.error?.code ?? ''}: ${res?.error?.message ?? ''})`,
          ],
          `run ${i}`,
        );
      await recover(`retryable ${i}`);
    }

    // any fault
    for (let i = 0; i < RUNS; i++) {
      const armed = await backend.chaos(rng.fork(`run:${i}`));
      const r = await cli(['rotate', '--now', w.key, '--json']);
      await backend.calm();
      settle(r, `run ${i}: ${armed}`);
      await recover(`run ${i}: ${armed}`);
    }

    // the operator's follow-up of the needs_attention results: sweep deletes the keys they named (a
    // later rotation may have ended `rotated` in between); it must delete nothing that was not named
    await new Promise((res) => setTimeout(res, LEASE_TTL_MS + 100)); // a lease the last run could not release
    const final = await cli(['sweep', w.key, '--json']);
    expect(final.code, final.stderr).toBe(0);
    const swept = (JSON.parse(final.stdout) as { keys: SweepKeyResult[] }).keys[0]!;
    violation(
      'final sweep',
      swept.entries
        .filter((e) => e.action !== 'kept' && !w.reported.has(e.keyId))
        .map((e) => `deleted ${e.keyId}, which no needs_attention result named (${e.reason})`),
      'end',
    );
    const dry = await cli(['sweep', '--dry-run', w.key, '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const sweep = (JSON.parse(dry.stdout) as { keys: SweepKeyResult[] }).keys[0]!;
    violation(
      'final sweep --dry-run',
      sweep.entries.filter((e) => e.action !== 'kept').map((e) => `would delete ${e.keyId} (${e.reason})`),
      'end',
    );
    const verified = await cli(['audit', 'verify', '--json']);
    if (verified.code !== 0) violation('audit verify', [verified.stdout.slice(0, 600)], 'end');
    const report = {
      seed: SEED,
      backend: backend.name,
      runs: RUNS + RETRYABLE_RUNS,
      outcomes,
      faults: backend.stats(),
      seconds: Math.round((Date.now() - started) / 1000),
      violations: violations.length,
    };
    console.log(`chaos faults (${backend.name}): ${JSON.stringify(report)}`);
    for (const v of violations.slice(0, 20)) console.log(`VIOLATION ${v}`);
    capture(`chaos-faults-${backend.name}.json`, JSON.stringify({ ...report, list: violations }, null, 2));
    expect(violations, `seed ${SEED}`).toEqual([]);
  }, 120_000);
}

const PG = postgresSupportOrSkip('chaos: state faults on PostgreSQL');
describe.skipIf(!PG)(`chaos: faults of the PostgreSQL state backend (seed ${SEED})`, () => {
  const db = usePostgresDatabase('chaos_faults');
  let proxy: TcpFaultProxy | undefined;
  let locker: pg.Client | undefined;
  let lockDone: Promise<unknown> = Promise.resolve();
  const stats = { locks: 0 };
  beforeAll(async () => {
    const u = new URL(db.url());
    proxy = await startTcpFaultProxy(u.hostname, Number(u.port));
  });
  afterAll(async () => {
    await lockDone;
    await proxy?.close();
  });
  /** a concurrent session holds the key records table for `ms` (a worker paused inside a transaction) */
  const holdLock = (rng: Rng, ms: number) => {
    lockDone = (async () => {
      await new Promise((res) => setTimeout(res, rng.int(0, 400)));
      locker = new pg.Client({ connectionString: db.url() });
      await locker.connect();
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE keyrotor.key_records IN ACCESS EXCLUSIVE MODE');
      stats.locks++;
      await new Promise((res) => setTimeout(res, ms));
      await locker.query('COMMIT');
      await locker.end();
    })().catch(() => undefined);
  };
  faultSuite({
    name: 'postgres',
    stateYaml: () => 'state: { type: postgres, lockTimeout: 300ms }',
    env: () => ({ KEYROTOR_DATABASE_URL: proxy!.url(db.url()) }),
    chaos: async (rng) => {
      const c = { refuse: rng.pick([0, 0.05, 0.2]), reset: rng.pick([0, 0.03, 0.08]) };
      proxy!.chaos(rng.fork('proxy'), c);
      const lock = rng.chance(0.3) ? rng.int(100, 900) : 0;
      if (lock) holdLock(rng, lock);
      return `refuse ${c.refuse}, reset ${c.reset}${lock ? `, lock held ${lock} ms` : ''}`;
    },
    retryableOnly: async (rng) => {
      // a lock held shorter than lockTimeout: the statement waits, nothing fails
      const ms = rng.int(50, 150);
      holdLock(rng, ms);
      return `lock held ${ms} ms (< lockTimeout)`;
    },
    calm: async () => {
      proxy?.calm();
      await lockDone;
    },
    stats: () => ({ ...proxy!.stats, ...stats }),
  });
});

const MOTO = motoSupportOrSkip('chaos: state faults on DynamoDB');
describe.skipIf(!MOTO)(`chaos: faults of the DynamoDB state backend (seed ${SEED})`, () => {
  let moto: Moto | undefined;
  let proxy: DynamoFaultProxy | undefined;
  const creds = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' };
  const saved = { ...process.env };
  beforeAll(async () => {
    Object.assign(process.env, creds); // the SDK's default credential chain reads process.env
    moto = await startMoto({ serial: true });
    proxy = await startDynamoFaultProxy(moto.endpoint);
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await moto?.close();
    for (const k of Object.keys(creds)) if (saved[k] === undefined) delete process.env[k];
  });
  faultSuite({
    name: 'dynamodb',
    stateYaml: () =>
      `state: { type: dynamodb, table: chaos-faults, region: us-east-1, endpoint: "${proxy!.endpoint}" }`,
    env: () => creds,
    chaos: async (rng) => {
      const c = {
        throttle: rng.pick([0, 0.03, 0.08]),
        conditional: rng.pick([0, 0.03, 0.08]),
        reset: rng.pick([0, 0.03, 0.08]),
      };
      proxy!.chaos(rng.fork('proxy'), c);
      return `throttle ${c.throttle}, conditional ${c.conditional}, reset ${c.reset}`;
    },
    retryableOnly: async (rng) => {
      proxy!.chaos(rng.fork('proxy'), { throttle: 0.2, maxInARow: 2 });
      return 'throttle 0.2 (at most 2 in a row)';
    },
    calm: async () => proxy?.calm(),
    stats: () => proxy!.stats,
  });
});
