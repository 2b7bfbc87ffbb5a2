/**
 * Chaos with real processes: `keyrotor rotate --now <key>` (and `keyrotor resume <key>`) is spawned as
 * a child process (Node 24, the real CLI) against the loopback OpenAI fake and real stores — the file
 * store, AWS Secrets Manager on moto, GCP Secret Manager on its gRPC fake (reachable from the child
 * through the insecure loopback config) — and killed with SIGKILL:
 *   - at stage transitions: when its JSON log (stderr, KEYROTOR_LOG_LEVEL=debug) shows it entering a
 *     stage (`"msg":"<stage>"`) or starting the stage's side effect (`"<stage> start"`, i.e. after the
 *     write-ahead snapshot and before the provider call); every stage of the machine is hit;
 *   - inside provider calls: when the OpenAI fake receives the n-th request of a route (key create,
 *     delete, list, GET /models) or the GCP fake is about to handle a method — the server then applies
 *     the request and its answer is lost — or at a random moment while injected latency keeps the
 *     child inside its calls.
 * Azure Key Vault is not here: a child process can only authenticate with DefaultAzureCredential,
 * which cannot work offline; Azure gets its crashes in process (crash.test.ts).
 *
 * After each kill: the invariant is checked against the fakes (a rotation may be half done), then
 * `keyrotor resume` or `keyrotor rotate` runs (through the CLI's main() in this process, to keep the
 * number of processes at what the kill floor needs) once the dead process's lease has expired — or,
 * up to twice per key, right away: the dead process ran on this host, so its unexpired lease must be
 * taken over at once (`locked`, exit 3, is a violation there). Then the invariant is checked at
 * rest: every store serves the same working key and no other keyrotor key is alive at the issuer.
 * This is checked directly after resume/rotate, without a sweep; at the end `keyrotor sweep --dry-run`
 * must agree that there is nothing to delete.
 *
 * Reproduce with KEYROTOR_CHAOS_SEED=<seed> (kill points are seeded; where a kill lands inside a call
 * also depends on timing).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import type { FakeRoute } from '../fakes/openai-admin.ts';
import type { GcpMethod } from '../fakes/gcp-secret-manager.ts';
import { cliInProcess } from '../entrypoints/cli-helpers.ts';
import { chaosSeed, mulberry32, type Rng } from './rng.ts';
import { FORWARD_STAGES, KillLedger, planName, resultOf, spawnAndKill, type KillPlan } from './harness.ts';
import {
  checkInvariant,
  closeBackends,
  MASTER_KEY,
  prepareWorld,
  served,
  startBackends,
  workingKey,
  World,
  writeWorkspace,
  type Backends,
} from './world.ts';
import { main as _main } from '../../src/entrypoints/cli.ts';
import type { KeyResult } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';

const MOTO = motoSupportOrSkip('chaos: SIGKILL of the CLI (AWS on moto)');
const SEED = chaosSeed();
const SCALE = Number(process.env.KEYROTOR_CHAOS_SCALE ?? '1') || 1;
const DEBUG = process.env.KEYROTOR_CHAOS_DEBUG;

/** kills per key (the keys run at the same time); the four-store fan-out is crashed in process */
const PLAN = [
  { spec: { key: 'k-file', stores: ['file'] as const, gate: true }, kills: 20 },
  { spec: { key: 'k-aws', stores: ['aws'] as const, gate: false }, kills: 16 },
  { spec: { key: 'k-gcp', stores: ['gcp'] as const, gate: true }, kills: 16 },
];
const MIN_KILLS = 50;
const LEASE_TTL_MS = 1_000;
/** stop spawning after this long (the floor assertion then says what is missing) */
const TIME_BUDGET_MS = 260_000;

describe.skipIf(!MOTO)(`chaos: SIGKILL of the keyrotor CLI (seed ${SEED})`, () => {
  let moto: Moto;
  let configFile: string;
  let stateDir: string;
  let compileCache: string;
  const worlds: World[] = [];
  const backends = new Map<string, Backends>();
  const B = (w: World) => backends.get(w.key)!;
  const ledger = new KillLedger(SEED, Boolean(DEBUG));
  const counts = { takenOverAtOnce: 0, faults: 0 };
  let spawned = 0;

  beforeAll(async () => {
    console.log(`chaos kill suite: seed ${SEED} (replay with KEYROTOR_CHAOS_SEED=${SEED})`);
    moto = await startMoto();
    for (const p of PLAN) {
      const w = new World({ key: p.spec.key, stores: [...p.spec.stores], gate: p.spec.gate });
      worlds.push(w);
      const b = await startBackends(w.spec.stores, { moto });
      backends.set(w.key, b);
      await prepareWorld(b, w);
    }
    const ws = writeWorkspace(B, worlds, 'chaos-kill', { issuerTimeout: '2s', leaseTtl: `${LEASE_TTL_MS}ms` });
    configFile = ws.configFile;
    stateDir = ws.stateDir;
    compileCache = process.env.NODE_COMPILE_CACHE ?? tempDir('node-compile-cache');
  }, 60_000);

  afterAll(async () => {
    for (const b of backends.values()) await closeBackends(b, { keepMoto: true });
    await moto?.close();
  });

  const env = (w: World): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    KEYROTOR_LOG_LEVEL: 'debug',
    OPENAI_ADMIN_KEY: B(w).openai.adminKey,
    KEYROTOR_MASTER_KEY: MASTER_KEY,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_EC2_METADATA_DISABLED: 'true',
    METADATA_SERVER_DETECTION: 'none',
    // Node's on-disk compile cache: the 50+ children start faster (it holds compiled code, no data)
    NODE_COMPILE_CACHE: compileCache,
  });

  const violation = (w: World, where: string, v: string[], detail: string) => ledger.violation(w.key, where, v, detail);

  /** The unfinished rotation in the state store (only to tell its own keys apart at an instant). */
  async function activeRef(w: World) {
    const rec = await createFileStateStore(stateDir).read(w.key);
    if (!rec?.active) return null;
    const ctx =
      (rec.active.snapshot as { context?: { oldKeyId?: string | null; newKeyId?: string | null } }).context ?? {};
    return { rotationId: rec.active.rotationId, oldKeyId: ctx.oldKeyId ?? null, newKeyId: ctx.newKeyId ?? null };
  }

  /** Wait until the lease a dead process left on the key has expired. */
  async function leaseExpiry(w: World): Promise<number | null> {
    try {
      const lock = JSON.parse(readFileSync(path.join(stateDir, 'locks', `${w.key}.lock`), 'utf8')) as {
        expiresAt: string;
      };
      return Date.parse(lock.expiresAt);
    } catch {
      return null;
    }
  }

  /** Run the CLI in this process (recoveries, sweeps): same code as the binary, no process to spawn. */
  async function cli(w: World, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    // (main()'s logger writes to this process's stderr, not to io: keep it to errors)
    const { code, stdout, stderr } = await cliInProcess(['-c', configFile, '--log-level', 'error', ...args], {
      env: env(w),
      name: `kill-${w.key}-${args[0]}`,
    });
    if ((stdout + stderr).includes(CANARY))
      violation(w, `keyrotor ${args[0]}`, ['printed a secret value'], 'in process');
    return { code, stdout, stderr };
  }

  const settleResult = (w: World, r: KeyResult, detail: string) => ledger.settle(w, B(w), r, detail);

  /** Spawn the real CLI and kill it with SIGKILL at the planned point. */
  async function spawnKill(w: World, args: string[], plan: KillPlan | null) {
    spawned++;
    const r = await spawnAndKill({ configFile, args, env: env(w), name: `kill-${w.key}`, b: B(w), plan });
    if (r.printedSecret) violation(w, `child ${args[0]}`, ['printed a secret value'], 'spawned');
    return r;
  }

  function randomKillPlan(rng: Rng, w: World, i: number, worldIndex: number): KillPlan {
    const stages = [...FORWARD_STAGES.filter((s) => s !== 'confirm' || w.spec.gate), 'rotated'];
    if (i % 2 === 0) {
      // stage transitions, cycled so that every stage is hit (offset per world)
      const stage = stages[(i / 2 + worldIndex * 3) % stages.length]!;
      const multi = stage === 'stage' || stage === 'promote' ? w.spec.stores.length : 1;
      return { kind: 'transition', stage, start: stage !== 'rotated' && rng.chance(0.5), nth: rng.int(0, multi - 1) };
    }
    const r = rng.int(0, w.spec.stores.includes('gcp') ? 3 : 2);
    if (r === 0)
      return {
        kind: 'request',
        route: rng.pick<FakeRoute>(['projects.apiKeys.delete', 'projects.apiKeys.list', 'models.list']),
        nth: 0,
      };
    if (r === 1) return { kind: 'timer', ms: rng.int(0, 250) };
    if (r === 2) return { kind: 'request', route: 'serviceAccounts.apiKeys.create', nth: 0 };
    return {
      kind: 'gcp',
      method: rng.pick<GcpMethod>(['AddSecretVersion', 'UpdateSecret', 'AccessSecretVersion', 'DisableSecretVersion']),
    };
  }

  function injectFault(rng: Rng, w: World): void {
    const b = B(w);
    counts.faults++;
    const quick = { 'retry-after-ms': '15', 'retry-after': '0' };
    if (w.spec.stores.includes('gcp') && rng.chance(0.3)) {
      b.gcp!.failNext(rng.pick<GcpMethod>(['UpdateSecret', 'AddSecretVersion', 'AccessSecretVersion']), {
        code: grpc.status.UNAVAILABLE,
        afterApply: rng.chance(0.5),
      });
      return;
    }
    const route = rng.pick<FakeRoute>([
      'projects.apiKeys.list',
      'projects.apiKeys.delete',
      'serviceAccounts.apiKeys.create',
      'models.list',
    ]);
    const f = rng.int(0, 3);
    if (f === 0) b.openai.failNext(route, { status: rng.pick([500, 503]), headers: quick });
    else if (f === 1) b.openai.failNext(route, { status: 429, headers: quick });
    else if (f === 2) b.openai.loseResponse(route);
    else b.openai.failNext(route, { status: 502, times: 3, headers: quick });
  }

  /** One spawned run, killed at a seeded point (or finishing first); true when it was killed. */
  async function killOnce(w: World, rng: Rng, i: number, worldIndex: number, forced?: KillPlan): Promise<boolean> {
    const b = B(w);
    const detail: string[] = [`kill ${i}`];
    // latency keeps the child inside its provider calls for a while (and lands timer kills there)
    const latency = rng.int(0, 25);
    b.openai.setLatency(latency);
    b.gcp?.setLatency('*', rng.int(0, 10));
    if (!forced && rng.chance(0.25)) {
      injectFault(rng, w);
      detail.push('fault');
    }
    let leaked = false;
    const active = await activeRef(w);
    if (!forced && !active && w.bootstrapped && rng.chance(0.15)) {
      const cur = (await served(b, w, stateDir))[0]?.value;
      const k = cur ? workingKey(b, cur) : undefined;
      if (k) {
        leaked = true;
        w.leak = { value: cur!, keyId: k.id, switched: [] };
        detail.push('leak mode');
      }
    }
    const plan = forced ?? randomKillPlan(rng, w, i, worldIndex);
    detail.push(planName(plan));
    const args =
      active && !forced && rng.chance(0.3)
        ? ['resume', w.key, '--json']
        : ['rotate', '--now', ...(leaked ? ['--leaked'] : []), w.key, '--json'];
    detail.push(args[0]!);
    const t0 = Date.now();
    const r = await spawnKill(w, args, plan);
    const tChild = Date.now() - t0;
    b.openai.setLatency(0);
    b.gcp?.setLatency('*', 0);

    if (!r.killed) {
      ledger.finishedBeforeKill++;
      const res = resultOf(r.stdout);
      if (!res)
        violation(
          w,
          'child',
          [
            `exited without a result and without being killed: ${r.stderr.split('\n').filter(Boolean).slice(-2).join(' | ').slice(0, 300)}`,
          ],
          detail.join(', '),
        );
      else settleResult(w, res, detail.join(', '));
    } else {
      ledger.killed(plan, r.stage);
      detail.push(`killed in ${r.stage}`);
      // the server may still be handling the dead client's last request
      await new Promise((res) => setTimeout(res, latency + 40));
      // a process killed right after recording its result never printed it (`keyrotor status` shows it)
      ledger.absorbLast(w, b, (await createFileStateStore(stateDir).read(w.key))?.last, detail.join(', '));
      violation(
        w,
        'at the kill',
        await checkInvariant(b, w, stateDir, { phase: 'instant', active: await activeRef(w) }),
        detail.join(', '),
      );

      let rec: { code: number; stdout: string; stderr: string } | undefined;
      let recovery = ['resume', w.key, '--json'];
      const expiry = await leaseExpiry(w);
      if (
        (await activeRef(w)) &&
        expiry !== null &&
        expiry - Date.now() > 200 &&
        counts.takenOverAtOnce < worlds.length * 2
      ) {
        // an unfinished rotation, and the dead process's lease has not expired yet: that process ran on
        // this host and is gone for sure (pid and start time), so the next run takes over at once
        const early = await cli(w, recovery);
        if (early.code === 3)
          violation(
            w,
            'resume while the dead lease is valid',
            ['exit 3 (locked): the lease of a dead process on this host was not taken over at once'],
            detail.join(', '),
          );
        else {
          counts.takenOverAtOnce++;
          rec = early; // this was the recovery
        }
      }
      if (!rec) {
        const wait = ((await leaseExpiry(w)) ?? 0) - Date.now();
        if (wait > 0) await new Promise((res) => setTimeout(res, wait + 30));
        if (!active && rng.chance(0.5)) recovery = ['rotate', '--now', w.key, '--json'];
        rec = await cli(w, recovery);
      }
      const res = resultOf(rec.stdout);
      detail.push(`recovered by ${recovery[0]}: ${res?.outcome ?? `exit ${rec.code}`}`);
      if (!res)
        violation(w, 'recovery', [`no result (exit ${rec.code}): ${rec.stderr.slice(0, 300)}`], detail.join(', '));
      else settleResult(w, res, detail.join(', '));
      if (await activeRef(w))
        violation(w, 'after recovery', ['an unfinished rotation is still in the state store'], detail.join(', '));
    }
    b.openai.resetFaults();
    b.gcp?.resetKnobs();
    if (w.needsAttention) {
      // what the operator does after needs_attention: read the leftovers, then sweep
      const sw = await cli(w, ['sweep', w.key, '--json']);
      if (sw.code !== 0) violation(w, 'sweep after needs_attention', [`exit ${sw.code}`], detail.join(', '));
    }
    violation(
      w,
      'at rest',
      await checkInvariant(b, w, stateDir, { phase: 'rest', active: null, allowSplit: w.needsAttention }),
      detail.join(', '),
    );
    if (DEBUG) console.log(`${w.key} ${detail.join(', ')}: child ${tChild} ms, total ${Date.now() - t0} ms`);
    return r.killed;
  }

  it(`${MIN_KILLS}+ SIGKILLs of the CLI at every stage and inside provider calls (file, AWS, GCP): the invariant holds`, async () => {
    const rng = mulberry32(SEED);
    const started = Date.now();
    const settled = await Promise.allSettled(
      worlds.map(async (w, wi) => {
        // bootstrap and one full rotation, unkilled (in process: processes are spent on kills)
        for (const what of ['bootstrap', 'full rotation']) {
          const r = await cli(w, ['rotate', '--now', w.key, '--json']);
          const res = resultOf(r.stdout);
          expect(res, `${w.key} ${what}: ${r.stderr.slice(-500)}`).toBeDefined();
          settleResult(w, res!, what);
        }
        const quota = Math.ceil(PLAN[wi]!.kills * SCALE);
        let killed = 0;
        for (let i = 0; killed < quota && i < quota * 3 && Date.now() - started < TIME_BUDGET_MS; i++)
          if (await killOnce(w, rng.fork(`${w.key}:${i}`), i, wi)) killed++;
      }),
    );
    // top up: a stage the seeded plans happened to miss (a fault or leak mode changed the path) gets
    // a kill of its own, so every forward stage is covered on every seed
    const missing = () => ledger.missingStages();
    for (
      let extra = 0;
      SCALE >= 1 && missing().length > 0 && extra < 12 && Date.now() - started < TIME_BUDGET_MS;
      extra++
    ) {
      const stage = missing()[0]!;
      const wi = worlds.findIndex((w) => stage !== 'confirm' || w.spec.gate);
      if (wi < 0) break;
      await killOnce(worlds[wi]!, rng.fork(`top-up:${extra}`), 0, wi, {
        kind: 'transition',
        stage,
        start: extra % 2 === 1,
        nth: 0,
      });
    }
    for (const [i, r] of settled.entries())
      if (r.status === 'rejected')
        ledger.violation(
          worlds[i]!.key,
          'kill loop',
          [`threw: ${String((r.reason as Error)?.stack ?? r.reason).slice(0, 600)}`],
          'loop',
        );
    // sweep agrees: nothing left to delete anywhere; the audit trail survived every kill: each record
    // was committed with its snapshot (or not at all), so the chain verifies and every rotation's
    // records end with at most one result
    await ledger.finalChecks(
      worlds,
      (w) => (args) => cli(w, args),
      (w) => w.key,
      (code, stderr) => expect(code, stderr).toBe(0),
    );

    const report = {
      seed: SEED,
      kills: ledger.kills,
      processes: spawned,
      finishedBeforeKill: ledger.finishedBeforeKill,
      byPlan: ledger.byPlan,
      byStage: ledger.byStage,
      takenOverAtOnce: counts.takenOverAtOnce,
      faults: counts.faults,
      outcomes: ledger.outcomes,
      seconds: Math.round((Date.now() - started) / 1000),
      violations: ledger.violations.length,
    };
    console.log(`chaos kill suite: ${JSON.stringify(report)}`);
    for (const v of ledger.violations.slice(0, 30)) console.log(`VIOLATION ${v}`);
    capture('chaos-kill-report.json', JSON.stringify({ ...report, list: ledger.violations }, null, 2));
    expect(ledger.violations, `seed ${SEED}`).toEqual([]);
    expect(ledger.kills, `kills within ${TIME_BUDGET_MS / 1000} s`).toBeGreaterThanOrEqual(
      Math.min(MIN_KILLS, Math.ceil(MIN_KILLS * SCALE)),
    );
    if (SCALE >= 1)
      for (const s of FORWARD_STAGES) expect(ledger.byStage[s] ?? 0, `kills in stage ${s}`).toBeGreaterThan(0);
    expect(counts.takenOverAtOnce).toBeGreaterThan(0);
  }, 300_000);
});
