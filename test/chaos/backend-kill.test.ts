/**
 * SIGKILL chaos on the database state backends (issue 12): the kill suite's scenario, smaller, with
 * `state: { type: postgres }` (a real PostgreSQL, test/fakes/postgres.ts) and
 * `state: { type: dynamodb }` (moto, one request at a time like real DynamoDB's item serialisation).
 * The real CLI is spawned (`keyrotor rotate --now` / `resume`) against the loopback OpenAI fake and the
 * file secret store, and killed with SIGKILL at seeded points: a stage transition from its JSON log
 * (entering a stage, or starting its side effect after the write-ahead snapshot), the n-th request of
 * an issuer route (the fake applies it, its answer is lost), or a random moment while injected
 * latency keeps the child inside its calls.
 *
 * After each kill: the invariant at the instant (a rotation may be half done), then `keyrotor resume`
 * (in process) until the dead process's lease is taken over, then the invariant at rest: the store
 * serves one working key, no other keyrotor key is alive at the issuer. At the end `sweep --dry-run`
 * has nothing to delete, `audit verify` passes (each audit record was committed with its snapshot in
 * one transaction or conditional write, or not at all) and no rotation recorded `rotated` twice.
 *
 * Reproduce with KEYROTOR_CHAOS_SEED=<seed> (kill points are seeded; where a kill lands inside a call
 * also depends on timing). KEYROTOR_CHAOS_SCALE scales the number of kills.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import type { FakeRoute } from '../fakes/openai-admin.ts';
import { cliInProcess } from '../entrypoints/cli-helpers.ts';
import { FORWARD_STAGES, KillLedger, planName, resultOf, spawnAndKill, type KillPlan } from './harness.ts';
import { chaosSeed, mulberry32, type Rng } from './rng.ts';
import {
  checkInvariant,
  closeBackends,
  MASTER_KEY,
  prepareWorld,
  startBackends,
  World,
  writeWorkspace,
  type ActiveRef,
  type Backends,
} from './world.ts';
import { createPostgresStateStore } from '../../src/app/state/postgres-state-store.ts';
import { createDynamoStateStore } from '../../src/app/state/dynamodb-state-store.ts';
import type { StateStore } from '../../src/core/ports.ts';
import type { KeyResult } from '../../src/app/run.ts';

const SEED = chaosSeed();
const SCALE = Number(process.env.KEYROTOR_CHAOS_SCALE ?? '1') || 1;
const DEBUG = process.env.KEYROTOR_CHAOS_DEBUG;
const KILLS = Math.max(1, Math.ceil(12 * SCALE));
const LEASE_TTL_MS = 1_000;
/** stop spawning after this long per backend (the floor assertion then says what is missing) */
const TIME_BUDGET_MS = 55_000;

interface Backend {
  name: 'postgres' | 'dynamodb';
  /** the `state:` line of the config */
  stateYaml: () => string;
  env: () => NodeJS.ProcessEnv;
  /** a store of the test's own, to read the unfinished rotation */
  store: () => StateStore;
}

/** The kill loop for one backend (one key, the file secret store, an issuer-smoke-test gate). */
function killSuite(backend: Backend): void {
  let configFile = '';
  let stateDir = '';
  let b: Backends;
  let store: StateStore;
  const w = new World({ key: `k-${backend.name}`, stores: ['file'], gate: true });
  const ledger = new KillLedger(SEED, Boolean(DEBUG));
  const counts = { locked: 0 };

  beforeAll(async () => {
    b = await startBackends(['file']);
    await prepareWorld(b, w);
    const ws = writeWorkspace(() => b, [w], `chaos-kill-${backend.name}`, {
      leaseTtl: `${LEASE_TTL_MS}ms`,
      state: backend.stateYaml(),
    });
    configFile = ws.configFile;
    stateDir = ws.stateDir;
    store = backend.store();
    const init = await cli(['state', 'init']);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await store?.close?.();
    await closeBackends(b);
  });

  const env = (): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
    KEYROTOR_LOG_LEVEL: 'debug',
    OPENAI_ADMIN_KEY: b.openai.adminKey,
    KEYROTOR_MASTER_KEY: MASTER_KEY,
    ...backend.env(),
  });

  const violation = (where: string, v: string[], detail: string) => ledger.violation(backend.name, where, v, detail);

  async function activeRef(): Promise<ActiveRef | null> {
    const rec = await store.read(w.key);
    if (!rec?.active) return null;
    const ctx =
      (rec.active.snapshot as { context?: { oldKeyId?: string | null; newKeyId?: string | null } }).context ?? {};
    return { rotationId: rec.active.rotationId, oldKeyId: ctx.oldKeyId ?? null, newKeyId: ctx.newKeyId ?? null };
  }

  async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await cliInProcess(['-c', configFile, '--log-level', 'error', ...args], {
      env: env(),
      name: `kill-${backend.name}-${args[0]}`,
    });
    if ((r.stdout + r.stderr).includes(CANARY)) violation(`keyrotor ${args[0]}`, ['printed a secret value'], '');
    return r;
  }

  const settleResult = (r: KeyResult, detail: string) => ledger.settle(w, b, r, detail, backend.name);

  async function spawnKill(args: string[], plan: KillPlan) {
    const r = await spawnAndKill({ configFile, args, env: env(), name: `kill-${backend.name}`, b, plan });
    if (r.printedSecret) violation(`child ${args[0]}`, ['printed a secret value'], 'spawned');
    return r;
  }

  function killPlan(rng: Rng, i: number): KillPlan {
    if (i % 2 === 0) {
      const stage = [...FORWARD_STAGES, 'rotated'][(i / 2) % (FORWARD_STAGES.length + 1)]!;
      return { kind: 'transition', stage, start: stage !== 'rotated' && rng.chance(0.5) };
    }
    if (rng.chance(0.5)) return { kind: 'timer', ms: rng.int(0, 300) };
    return {
      kind: 'request',
      route: rng.pick<FakeRoute>([
        'serviceAccounts.apiKeys.create',
        'projects.apiKeys.delete',
        'projects.apiKeys.list',
        'models.list',
      ]),
    };
  }

  async function killOnce(rng: Rng, i: number, forced?: KillPlan): Promise<boolean> {
    const detail: string[] = [`kill ${i}`];
    const latency = rng.int(0, 25);
    b.openai.setLatency(latency);
    const plan = forced ?? killPlan(rng, i);
    detail.push(planName(plan));
    const active = await activeRef();
    const args = active && rng.chance(0.3) ? ['resume', w.key, '--json'] : ['rotate', '--now', w.key, '--json'];
    detail.push(args[0]!);
    const r = await spawnKill(args, plan);
    b.openai.setLatency(0);
    if (!r.killed) {
      ledger.finishedBeforeKill++;
      const res = resultOf(r.stdout);
      if (res) settleResult(res, detail.join(', '));
      else violation('child', [`exited without a result: ${r.stderr.slice(-300)}`], detail.join(', '));
    } else {
      ledger.killed(plan, r.stage);
      detail.push(`killed in ${r.stage}`);
      await new Promise((res) => setTimeout(res, latency + 40));
      ledger.absorbLast(w, b, (await store.read(w.key))?.last, detail.join(', '), backend.name);
      violation(
        'at the kill',
        await checkInvariant(b, w, stateDir, { phase: 'instant', active: await activeRef() }),
        detail.join(', '),
      );
      // recovery at once: the dead process (this host, reaped) is provably gone, so its lease is taken
      // over without waiting for the ttl (src/app/state/holder.ts); exit 3 is retried for a run whose
      // own lease a (false) conditional check refused, which stays until it expires
      let rec = await cli(['resume', w.key, '--json']);
      for (let n = 0; rec.code === 3 && n < 10; n++) {
        counts.locked++;
        await new Promise((res) => setTimeout(res, LEASE_TTL_MS / 4));
        rec = await cli(['resume', w.key, '--json']);
      }
      const res = resultOf(rec.stdout);
      detail.push(`recovered: ${res?.outcome ?? `exit ${rec.code}`}`);
      if (res) settleResult(res, detail.join(', '));
      else if (active || (await activeRef()))
        violation('recovery', [`no result (exit ${rec.code}): ${rec.stderr.slice(0, 300)}`], detail.join(', '));
      if (await activeRef()) violation('after recovery', ['an unfinished rotation is still there'], detail.join(', '));
    }
    b.openai.resetFaults();
    if (w.needsAttention) {
      const sw = await cli(['sweep', w.key, '--json']);
      if (sw.code !== 0) violation('sweep after needs_attention', [`exit ${sw.code}`], detail.join(', '));
    }
    violation(
      'at rest',
      await checkInvariant(b, w, stateDir, { phase: 'rest', active: null, allowSplit: w.needsAttention }),
      detail.join(', '),
    );
    if (DEBUG) console.log(`${backend.name} ${detail.join(', ')}`);
    return r.killed;
  }

  it(`${KILLS} SIGKILLs of the CLI with the ${backend.name} state backend: the invariant holds, the audit chain verifies`, async () => {
    const rng = mulberry32(SEED);
    const started = Date.now();
    for (const what of ['bootstrap', 'full rotation']) {
      const r = await cli(['rotate', '--now', w.key, '--json']);
      const res = resultOf(r.stdout);
      expect(res, `${what}: ${r.stderr.slice(-500)}`).toBeDefined();
      settleResult(res!, what);
    }
    let killed = 0;
    for (let i = 0; killed < KILLS && i < KILLS * 3 && Date.now() - started < TIME_BUDGET_MS; i++)
      if (await killOnce(rng.fork(`${backend.name}:${i}`), i)) killed++;
    // top up: a forward stage the seeded plans missed gets a kill of its own
    for (let extra = 0; SCALE >= 1 && extra < 6 && Date.now() - started < TIME_BUDGET_MS; extra++) {
      const miss = ledger.missingStages()[0];
      if (!miss) break;
      await killOnce(rng.fork(`top-up:${extra}`), 0, { kind: 'transition', stage: miss, start: extra % 2 === 1 });
    }
    await ledger.finalChecks(
      [w],
      () => cli,
      () => backend.name,
      (code, stderr) => expect(code, stderr).toBe(0),
    );
    const report = {
      seed: SEED,
      backend: backend.name,
      kills: ledger.kills,
      finishedBeforeKill: ledger.finishedBeforeKill,
      lockedRetries: counts.locked,
      byPlan: ledger.byPlan,
      byStage: ledger.byStage,
      outcomes: ledger.outcomes,
      seconds: Math.round((Date.now() - started) / 1000),
      violations: ledger.violations.length,
    };
    console.log(`chaos kill (${backend.name}): ${JSON.stringify(report)}`);
    for (const v of ledger.violations.slice(0, 20)) console.log(`VIOLATION ${v}`);
    capture(`chaos-kill-${backend.name}.json`, JSON.stringify({ ...report, list: ledger.violations }, null, 2));
    expect(ledger.violations, `seed ${SEED}`).toEqual([]);
    expect(ledger.kills).toBeGreaterThanOrEqual(Math.min(KILLS, 8));
  }, 120_000);
}

const PG = postgresSupportOrSkip('chaos: SIGKILL with the PostgreSQL state backend');
describe.skipIf(!PG).concurrent(`chaos: SIGKILL, PostgreSQL state backend (seed ${SEED})`, () => {
  const db = usePostgresDatabase('chaos_kill');
  killSuite({
    name: 'postgres',
    stateYaml: () => 'state: { type: postgres }',
    env: () => ({ KEYROTOR_DATABASE_URL: db.url() }),
    store: () =>
      createPostgresStateStore(
        { type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema: 'keyrotor' },
        {
          KEYROTOR_DATABASE_URL: db.url(),
        },
      ),
  });
});

const MOTO = motoSupportOrSkip('chaos: SIGKILL with the DynamoDB state backend');
describe.skipIf(!MOTO).concurrent(`chaos: SIGKILL, DynamoDB state backend (seed ${SEED})`, () => {
  let moto: Moto | undefined;
  const creds = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' };
  const saved = { ...process.env };
  beforeAll(async () => {
    Object.assign(process.env, creds); // the SDK's default credential chain reads process.env
    moto = await startMoto({ serial: true });
  }, 60_000);
  afterAll(async () => {
    await moto?.close();
    for (const k of Object.keys(creds)) if (saved[k] === undefined) delete process.env[k];
  });
  const cfg = () => ({ type: 'dynamodb', table: 'chaos-kill', region: 'us-east-1', endpoint: moto!.endpoint }) as const;
  killSuite({
    name: 'dynamodb',
    stateYaml: () => `state: { type: dynamodb, table: chaos-kill, region: us-east-1, endpoint: "${moto!.endpoint}" }`,
    env: () => creds,
    store: () => createDynamoStateStore(cfg(), creds),
  });
});
