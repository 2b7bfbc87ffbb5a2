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
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import type { FakeRoute } from '../fakes/openai-admin.ts';
import { CLI, cliInProcess } from '../entrypoints/cli-helpers.ts';
import { chaosSeed, mulberry32, type Rng } from './rng.ts';
import {
  checkInvariant,
  closeBackends,
  configText,
  MASTER_KEY,
  noteLeftovers,
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
import type { SweepKeyResult } from '../../src/app/sweep.ts';

const SEED = chaosSeed();
const SCALE = Number(process.env.KEYROTOR_CHAOS_SCALE ?? '1') || 1;
const DEBUG = process.env.KEYROTOR_CHAOS_DEBUG;
const KILLS = Math.max(1, Math.ceil(12 * SCALE));
const FORWARD_STAGES = ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked'];
const LEASE_TTL_MS = 1_000;
/** stop spawning after this long per backend (the floor assertion then says what is missing) */
const TIME_BUDGET_MS = 55_000;

type KillPlan =
  | { kind: 'transition'; stage: string; start: boolean }
  | { kind: 'request'; route: FakeRoute }
  | { kind: 'timer'; ms: number };

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
  const counts = {
    kills: 0,
    finishedBeforeKill: 0,
    locked: 0,
    byPlan: {} as Record<string, number>,
    byStage: {} as Record<string, number>,
    outcomes: {} as Record<string, number>,
    violations: [] as string[],
  };

  beforeAll(async () => {
    b = await startBackends(['file']);
    await prepareWorld(b, w);
    const ws = writeWorkspace(() => b, [w], `chaos-kill-${backend.name}`, { leaseTtl: `${LEASE_TTL_MS}ms` });
    configFile = ws.configFile;
    stateDir = ws.stateDir;
    writeFileSync(
      configFile,
      configText(() => b, [w], { leaseTtl: `${LEASE_TTL_MS}ms` }).replace(
        /^version: 1\n/,
        `version: 1\n${backend.stateYaml()}\n`,
      ),
    );
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
    KEYROTOR_LOG_LEVEL: 'debug',
    OPENAI_ADMIN_KEY: b.openai.adminKey,
    KEYROTOR_MASTER_KEY: MASTER_KEY,
    ...backend.env(),
  });

  function violation(where: string, v: string[], detail: string) {
    for (const x of v) counts.violations.push(`[seed ${SEED}] ${backend.name} ${where}: ${x} (${detail})`);
  }

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

  const resultOf = (stdout: string): KeyResult | undefined => {
    try {
      return (JSON.parse(stdout) as { results: KeyResult[] }).results[0];
    } catch {
      return undefined;
    }
  };

  function settleResult(r: KeyResult, detail: string): void {
    if (r.rotationId && r.finishedAt) w.seenResults.add(`${r.rotationId}@${r.finishedAt}`);
    w.needsAttention = r.outcome === 'needs_attention' || (w.needsAttention && r.outcome !== 'rotated');
    counts.outcomes[r.outcome] = (counts.outcomes[r.outcome] ?? 0) + 1;
    if (DEBUG && r.outcome !== 'rotated') console.log(`${w.key} ${detail}: ${JSON.stringify(r.error ?? r.leftovers)}`);
    const bad: string[] = [];
    if (!['rotated', 'rolled_back', 'needs_attention', 'skipped'].includes(r.outcome))
      bad.push(`ended ${r.outcome}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`);
    if ((r.outcome === 'rolled_back' || r.outcome === 'needs_attention') && !r.error && !r.leftovers?.length)
      bad.push(`${r.outcome} without a reason`);
    if (r.outcome === 'rotated') w.bootstrapped = true;
    if (r.outcome === 'needs_attention') noteLeftovers(b, w, r.leftovers);
    violation(`result ${r.rotationId}`, bad, detail);
  }

  async function spawnAndKill(args: string[], plan: KillPlan) {
    const child = spawn(process.execPath, [CLI, '-c', configFile, ...args], {
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let buf = '';
    let stage = 'start';
    let killed = false;
    const kill = () => {
      if (killed || child.exitCode !== null) return;
      killed = child.kill('SIGKILL');
    };
    let timer: NodeJS.Timeout | undefined;
    const unlisten =
      plan.kind === 'request'
        ? b.openai.onRequest((e) => {
            if (e.route === plan.route) kill();
          })
        : undefined;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const text = d.toString();
      stderr += text;
      buf += text;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const raw = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let l: { stage?: string; msg?: string };
        try {
          l = JSON.parse(raw) as typeof l;
        } catch {
          continue;
        }
        if (!l.stage) continue;
        const entered = l.msg === l.stage;
        const starting = l.msg === `${l.stage} start`;
        if (entered || starting) stage = l.stage;
        if (plan.kind === 'timer' && entered && l.stage === 'preflight' && !timer) timer = setTimeout(kill, plan.ms);
        if (plan.kind === 'transition' && l.stage === plan.stage && (plan.start ? starting : entered)) kill();
      }
    });
    const exit = await new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_c, s) => resolve(s)));
    unlisten?.();
    if (timer) clearTimeout(timer);
    capture(`kill-${backend.name}-child.stdout`, stdout);
    capture(`kill-${backend.name}-child.stderr`, stderr);
    if ((stdout + stderr).includes(CANARY)) violation(`child ${args[0]}`, ['printed a secret value'], 'spawned');
    return { killed: exit === 'SIGKILL', stage, stdout, stderr };
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
    detail.push(plan.kind === 'transition' ? `${plan.stage}${plan.start ? ' start' : ''}` : plan.kind);
    const active = await activeRef();
    const args = active && rng.chance(0.3) ? ['resume', w.key, '--json'] : ['rotate', '--now', w.key, '--json'];
    detail.push(args[0]!);
    const r = await spawnAndKill(args, plan);
    b.openai.setLatency(0);
    if (!r.killed) {
      counts.finishedBeforeKill++;
      const res = resultOf(r.stdout);
      if (res) settleResult(res, detail.join(', '));
      else violation('child', [`exited without a result: ${r.stderr.slice(-300)}`], detail.join(', '));
    } else {
      counts.kills++;
      counts.byPlan[plan.kind] = (counts.byPlan[plan.kind] ?? 0) + 1;
      counts.byStage[r.stage] = (counts.byStage[r.stage] ?? 0) + 1;
      detail.push(`killed in ${r.stage}`);
      await new Promise((res) => setTimeout(res, latency + 40));
      const last = (await store.read(w.key))?.last;
      if (last?.rotationId && !w.seenResults.has(`${last.rotationId}@${last.finishedAt}`))
        settleResult(last, `${detail.join(', ')} (result read from the state store)`);
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
      const miss = FORWARD_STAGES.find((s) => !((counts.byStage[s] ?? 0) > 0));
      if (!miss) break;
      await killOnce(rng.fork(`top-up:${extra}`), 0, { kind: 'transition', stage: miss, start: extra % 2 === 1 });
    }
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
    const history = await cli(['history', '--json']);
    const { rotations } = JSON.parse(history.stdout || '{"rotations":[]}') as {
      rotations: { rotationId: string | null; stages: { state: string }[] }[];
    };
    for (const h of rotations)
      if (h.rotationId && h.stages.filter((x) => x.state === 'rotated').length > 1)
        violation('history', [`${h.rotationId} recorded "rotated" more than once`], 'end');
    const report = {
      seed: SEED,
      backend: backend.name,
      kills: counts.kills,
      finishedBeforeKill: counts.finishedBeforeKill,
      lockedRetries: counts.locked,
      byPlan: counts.byPlan,
      byStage: counts.byStage,
      outcomes: counts.outcomes,
      seconds: Math.round((Date.now() - started) / 1000),
      violations: counts.violations.length,
    };
    console.log(`chaos kill (${backend.name}): ${JSON.stringify(report)}`);
    for (const v of counts.violations.slice(0, 20)) console.log(`VIOLATION ${v}`);
    capture(`chaos-kill-${backend.name}.json`, JSON.stringify({ ...report, list: counts.violations }, null, 2));
    expect(counts.violations, `seed ${SEED}`).toEqual([]);
    expect(counts.kills).toBeGreaterThanOrEqual(Math.min(KILLS, 8));
  }, 120_000);
}

const PG = postgresSupportOrSkip('chaos: SIGKILL with the PostgreSQL state backend');
describe.skipIf(!PG)(`chaos: SIGKILL, PostgreSQL state backend (seed ${SEED})`, () => {
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
describe.skipIf(!MOTO)(`chaos: SIGKILL, DynamoDB state backend (seed ${SEED})`, () => {
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
