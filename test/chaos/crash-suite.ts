/**
 * The in-process crash suite, parameterized by the state backend (test/chaos/crash.test.ts runs it on
 * the file backend, test/chaos/crash-backends.test.ts on PostgreSQL and DynamoDB): simulated crashes of
 * real rotations (src/app/run.ts `rotateKey`, the real machine, the real state store and lease, the real
 * providers over their wire protocols). Every crash keeps exactly what was persisted (see
 * crash-switch.ts); then `rotate` or `resume` runs again and the invariant is checked against the
 * fakes' own state (world.ts) after every crash and at rest.
 *
 * Two ways to pick the crash points:
 *   - `random` (crash.test.ts): seeded scenarios, 2 to 6 crashes in a row, with random provider faults
 *     from the fakes' knobs, over several worlds at the same time, until each world's crash quota;
 *   - `everyPoint` (crash-backends.test.ts): one rotation of a world with the file secret store and a
 *     gate, crashed before and after each of its events in turn (every issuer/store call and every
 *     state write: each transition's snapshot write, the result), each crash followed by a recovery
 *     (`resume` or `rotate`, which a seeded quarter of the time crashes once more at a random point of
 *     its own). The audit trail is the backend's own here (written with each snapshot): at the end it
 *     must verify and no rotation may have recorded `rotated` twice.
 *
 * A crashed run's lease: each simulated process's lease clock is past every earlier run's lease (the
 * file and DynamoDB backends judge expiry by the acquirer's clock); PostgreSQL judges it by the
 * server's `now()`, so there the test ends the dead run's lease (`expires_at = now()`) as its ttl
 * running out would. A dead run is this very process (alive), so the backends' at-once takeover of a
 * dead local holder does not apply (test/state/dead-holder.test.ts covers that with real processes).
 *
 * Reproduce with KEYROTOR_CHAOS_SEED=<seed printed>; KEYROTOR_CHAOS_SCALE=<x> scales the crash
 * quotas; KEYROTOR_CHAOS_DEBUG=1 prints every scenario.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { startMoto, type Moto } from '../fakes/moto.ts';
import type { FakeRoute } from '../fakes/openai-admin.ts';
import type { GcpMethod } from '../fakes/gcp-secret-manager.ts';
import type { AzureFakeOp } from '../fakes/azure-key-vault.ts';
import { chaosSeed, mulberry32, type Rng } from './rng.ts';
import { CrashSwitch, type CrashPlan } from './crash-switch.ts';
import { azureCa } from './crash-providers.ts';
import {
  checkInvariant,
  closeBackends,
  MASTER_KEY,
  noteLeftovers,
  prepareWorld,
  served,
  startBackends,
  workingKey,
  World,
  writeWorkspace,
  type Backends,
  type StoreKind,
} from './world.ts';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import { systemClock, type Clock } from '../../src/core/clock.ts';
import type { Logger, StateStore } from '../../src/core/ports.ts';
import { rotateKey, type KeyResult, type RotationObserver } from '../../src/app/run.ts';
import { closeProviders, composeKey } from '../../src/app/compose.ts';
import { newRotationId } from '../../src/core/ids.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { Secret } from '../../src/core/secret.ts';
import { sweepKey } from '../../src/app/sweep.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { auditObserver } from '../../src/app/audit/index.ts';
import type { AuditLog } from '../../src/app/audit/sink.ts';

export const SEED = chaosSeed();
const SCALE = Number(process.env.KEYROTOR_CHAOS_SCALE ?? '1') || 1;
const DEBUG = process.env.KEYROTOR_CHAOS_DEBUG;
/** replay only these worlds (comma-separated keys), e.g. KEYROTOR_CHAOS_ONLY=c-gcp */
const ONLY = process.env.KEYROTOR_CHAOS_ONLY;

type StateStoreWithAudit = StateStore & { auditLog(): AuditLog };

/** The state backend a crash suite runs on. */
export interface CrashBackend {
  name: 'file' | 'postgres' | 'dynamodb';
  /**
   * The state store of one simulated process. `clock` is that process's clock, past every earlier
   * run's lease (the file and DynamoDB backends judge lease expiry by it).
   */
  open(stateDir: string, clock: Clock): StateStoreWithAudit;
  /** The dead run's lease runs out (PostgreSQL: by the server's clock, so the test ends it). */
  leaseExpired?(keyName: string): Promise<void>;
}

export const fileCrashBackend: CrashBackend = {
  name: 'file',
  open: (stateDir, clock) => createFileStateStore(stateDir, { clock }),
};

export interface WorldPlan {
  spec: { key: string; stores: readonly StoreKind[]; gate: boolean };
  /** the crash quota of `random` */
  crashes: number;
}

export interface CrashSuiteOptions {
  /** names the artifacts */
  name: string;
  backend: () => CrashBackend;
  worlds: WorldPlan[];
  /** seeded random scenarios with faults, until each world's quota (all worlds at the same time) */
  random?: { minCrashes: number; timeBudgetMs: number; testTimeoutMs: number };
  /**
   * every crash point (before and after each event of one rotation) of the first world, each resumed;
   * `only` names a sample instead (each must exist): `<label>#<nth>/<mode>`, e.g. `state.saveActive#2/after`
   * is the crash right after the third snapshot write (`nth` counts the events of that label from 0)
   */
  everyPoint?: { only?: ReadonlySet<string>; testTimeoutMs: number };
}

interface Counts {
  scenarios: number;
  crashes: number;
  byMode: Record<string, number>;
  byStore: Record<string, number>;
  /** everyPoint: the crash points by the call or write they hit */
  byEvent: Record<string, number>;
  /** everyPoint: planned points the run ended before (none expected: each run takes the same path) */
  notReached: number;
  faults: number;
  outcomes: Record<string, number>;
  sweeps: number;
  /** recoveries that continued the very rotation a crash interrupted */
  resumed: number;
  /** needs_attention results followed up the way their leftovers ask */
  repairs: number;
  /** of those, stores left serving different keys */
  splits: number;
  targeted: number;
  violations: string[];
}

/** Registers the suite's hooks and tests in the enclosing `describe`. */
export function crashSuite(o: CrashSuiteOptions): void {
  let moto: Moto | undefined;
  /** the backend's own store for the test's reads (the unfinished rotation, the last result, the audit trail) */
  let reader: StateStoreWithAudit;
  const opened: StateStoreWithAudit[] = [];
  let cfg: LoadedConfig;
  let stateDir: string;
  const worlds: World[] = [];
  const backends = new Map<string, Backends>();
  const B = (w: World) => backends.get(w.key)!;
  const logLines: string[] = [];
  const logger: Logger = pino({ level: 'info', base: null }, { write: (s: string) => void logLines.push(s) });
  const counts: Counts = {
    scenarios: 0,
    crashes: 0,
    byMode: {},
    byStore: {},
    byEvent: {},
    notReached: 0,
    faults: 0,
    outcomes: {},
    sweeps: 0,
    resumed: 0,
    repairs: 0,
    splits: 0,
    targeted: 0,
    violations: [],
  };
  /** per world and kind of run (fresh or resuming): how many events / wire requests a whole run takes */
  const span = new Map<string, { events: number; wire: number }>();
  const spanKey = (w: World, resuming: boolean) => `${w.key}:${resuming ? 'resume' : 'fresh'}`;
  let runNo = 0;

  beforeAll(async () => {
    console.log(`chaos crash suite: seed ${SEED} (replay with KEYROTOR_CHAOS_SEED=${SEED})`);
    if (o.worlds.some((p) => p.spec.stores.includes('aws'))) moto = await startMoto();
    for (const p of o.worlds) {
      if (ONLY && !ONLY.split(',').includes(p.spec.key)) continue;
      const w = new World({ key: p.spec.key, stores: [...p.spec.stores], gate: p.spec.gate });
      worlds.push(w);
      const b = await startBackends(w.spec.stores, moto ? { moto } : {});
      backends.set(w.key, b);
      if (b.azure) azureCa.set(w.key, b.azure.ca);
      await prepareWorld(b, w);
    }
    const ws = writeWorkspace(B, worlds, o.name, { issuerTimeout: '400ms' });
    stateDir = ws.stateDir;
    cfg = parseConfig(readFileSync(ws.configFile, 'utf8'), ws.configFile, {});
    reader = o.backend().open(stateDir, systemClock);
  }, 60_000);

  afterAll(async () => {
    capture(`${o.name}.log`, logLines.join(''));
    for (const b of backends.values()) await closeBackends(b, { keepMoto: true });
    await moto?.close();
    await Promise.allSettled([...opened, reader].map(async (s) => s?.close?.()));
  });

  /** Each run sees every earlier run's lease as expired: a crashed run's lease is taken over, not waited for. */
  function leaseClock(): Clock {
    const offset = ++runNo * 61_000;
    return { now: () => Date.now() + offset, sleep: systemClock.sleep };
  }

  /**
   * Everything one run (one simulated process) gets: its crash switch, a state store whose lease clock
   * is past every earlier run's lease, and its own admin key at the OpenAI fake (forgotten when it dies).
   */
  function newProcess(w: World, plan: CrashPlan | null) {
    const b = B(w);
    const adminKey = `${CANARY}-admin-run-${runNo + 1}`;
    b.openai.state.adminKeys.set(adminKey, 'full');
    const sw = new CrashSwitch(w.key, plan, b.openai, adminKey);
    const own = o.backend().open(stateDir, leaseClock());
    // a database store's connections die with its process: closed when the run ends or has settled
    if (own.close) {
      opened.push(own);
      sw.closers.push(async () => {
        opened.splice(opened.indexOf(own), 1);
        await own.close?.();
      });
    }
    const stateStore = sw.wrapStateStore(own);
    // everyPoint: the backend's own audit trail, written with each snapshot (one write per transition)
    const observers: RotationObserver[] = o.everyPoint
      ? [auditObserver({ sink: own.auditLog(), trail: own.auditTrail, actor: 'chaos' })]
      : [];
    return { sw, stateStore, observers, env: { OPENAI_ADMIN_KEY: adminKey, KEYROTOR_MASTER_KEY: MASTER_KEY } };
  }

  /** a run that ended normally: its state store's connections are closed too */
  async function finish(sw: CrashSwitch): Promise<void> {
    sw.finish();
    await Promise.allSettled(sw.closers.splice(0).map((c) => c()));
  }
  const keyOf = (w: World) => cfg.keys.find((k) => k.name === w.key)!;

  async function activeRef(w: World) {
    const rec = await reader.read(w.key);
    if (!rec?.active) return null;
    const ctx =
      (rec.active.snapshot as { context?: { oldKeyId?: string | null; newKeyId?: string | null } }).context ?? {};
    return { rotationId: rec.active.rotationId, oldKeyId: ctx.oldKeyId ?? null, newKeyId: ctx.newKeyId ?? null };
  }

  function violation(w: World, where: string, v: string[], detail: string) {
    for (const x of v) counts.violations.push(`[seed ${SEED}] ${w.key} ${where}: ${x} (${detail})`);
  }

  function randomPlan(rng: Rng, w: World, resuming: boolean): CrashPlan {
    const s = span.get(spanKey(w, resuming)) ?? span.get(spanKey(w, false)) ?? { events: 20, wire: 10 };
    if (rng.chance(0.25)) return { kind: 'wire', at: rng.int(0, Math.max(1, s.wire - 1)), applied: rng.chance(0.5) };
    return { kind: 'event', at: rng.int(0, Math.max(1, s.events - 1)), mode: rng.chance(0.5) ? 'before' : 'after' };
  }

  function injectFaults(rng: Rng, w: World, storesToo: boolean): void {
    const b = B(w);
    const n = rng.int(1, 2);
    for (let i = 0; i < n; i++) {
      const target = rng.pick([
        'openai',
        'openai',
        ...(storesToo ? w.spec.stores.filter((s) => s === 'gcp' || s === 'azure') : []),
      ] as const);
      counts.faults++;
      if (target === 'openai') {
        const route = rng.pick<FakeRoute>([
          'projects.apiKeys.list',
          'projects.apiKeys.delete',
          'serviceAccounts.apiKeys.create',
          'serviceAccounts.retrieve',
          'models.list',
        ]);
        // 5xx/429 answers carry retry-after(-ms) so the SDK's retries stay quick; resets, lost answers
        // and timeouts use its default backoff (~0.5 s), so they are drawn less often
        const quick = { 'retry-after-ms': '15', 'retry-after': '0' };
        const f = rng.int(0, 10);
        if (f <= 2)
          b.openai.failNext(route, { status: rng.pick([500, 502, 503]), times: rng.int(1, 2), headers: quick });
        else if (f <= 4) b.openai.failNext(route, { status: 429, headers: quick, times: rng.int(1, 2) });
        else if (f === 5)
          b.openai.failNext(route, { status: 500, times: 3, headers: quick }); // outlasts the SDK's retries
        else if (f === 6) b.openai.loseResponse(route);
        else if (f === 7) b.openai.resetConnection(route);
        else if (f === 8)
          b.openai.slowResponse(route, 500); // past the 400 ms issuer timeout
        else if (f === 9)
          b.openai.malformedResponse(route, {
            kind: rng.pick(['truncated', 'html', 'shape'] as const),
            applied: rng.chance(0.5),
          });
        else b.openai.failNext(route, { status: 503, headers: quick });
      } else if (target === 'gcp') {
        const method = rng.pick<GcpMethod>([
          'GetSecret',
          'UpdateSecret',
          'AddSecretVersion',
          'AccessSecretVersion',
          'ListSecretVersions',
          'DisableSecretVersion',
        ]);
        b.gcp!.failNext(method, {
          code: rng.pick([
            grpc.status.UNAVAILABLE,
            grpc.status.INTERNAL,
            grpc.status.ABORTED,
            grpc.status.DEADLINE_EXCEEDED,
          ]),
          afterApply: rng.chance(0.5),
        });
      } else {
        const op = rng.pick<AzureFakeOp>(['setSecret', 'getSecret', 'getSecretVersions', 'updateSecret']);
        b.azure!.fault(
          rng.chance(0.3) ? { op, drop: true } : { op, status: rng.pick([500, 503, 429]), times: rng.int(1, 2) },
        );
      }
    }
  }

  /** A run of faults armed when `on` (an issuer/store call label) is first called. */
  interface Targeted {
    on: string;
    arm(): void;
    armed: boolean;
  }
  function targetedFault(rng: Rng, w: World): Targeted {
    const b = B(w);
    const n = rng.int(1, 12);
    const quick = { 'retry-after-ms': '5', 'retry-after': '0' };
    const options: { on: string; arm(): void }[] = [
      {
        on: 'issuer.revoke',
        arm: () => b.openai.failNext('projects.apiKeys.delete', { status: 500, times: n, headers: quick }),
      },
    ];
    for (const stage of ['stage', 'promote']) {
      if (b.gcp)
        options.push({
          on: `store:gcp-secret-manager.${stage}`,
          arm: () => b.gcp!.failNext('UpdateSecret', { code: grpc.status.UNAVAILABLE, count: n }),
        });
      if (b.azure)
        options.push({
          on: `store:azure-key-vault.${stage}`,
          arm: () => b.azure!.fault({ op: stage === 'stage' ? '*' : 'setSecret', status: 503, times: n }),
        });
    }
    const t = rng.pick(options);
    return { ...t, armed: false };
  }

  /**
   * What the leftovers of a needs_attention result ask of an operator: remove the failed rotation's
   * pending versions, make every store serve the same working key if they were left split (by hand:
   * here through the stores' own code), then sweep the keys nothing serves.
   */
  async function operatorRepair(
    w: World,
    followUps: readonly { rotationId: string; leftovers: readonly string[] }[],
  ): Promise<void> {
    const b = B(w);
    const now = await served(b, w, stateDir);
    const target = now.map((x) => x.value).find((v): v is string => v !== null && workingKey(b, v) !== undefined);
    if (new Set(now.map((x) => x.value)).size > 1) counts.splits++;
    const { sw, stateStore, env } = newProcess(w, null);
    const p = await composeKey({
      config: cfg,
      key: keyOf(w),
      stateStore,
      record: await stateStore.read(w.key),
      logger,
      env,
    });
    try {
      const manual = newRotationId();
      for (const [i, store] of p.stores.entries()) {
        // "… still hold the new key … as pending …: remove that pending version"
        for (const f of followUps)
          if (f.leftovers.some((l) => l.includes('as pending'))) await store.unstage(f.rotationId);
        if (!target || now[i]!.value === target) continue;
        const secret = Secret.of(target);
        await store.stage({
          rotationId: manual,
          secret,
          meta: { rotationId: manual, issuerKeyId: workingKey(b, target)!.id, fingerprint: fingerprint(secret) },
        });
        await store.promote(manual);
      }
    } finally {
      await closeProviders(p);
      await finish(sw);
    }
    const again = newProcess(w, null);
    const sweep = await sweepKey(keyOf(w), { config: cfg, stateStore: again.stateStore, logger, env: again.env });
    await finish(again.sw);
    counts.sweeps++;
    if (sweep.outcome === 'locked' || sweep.outcome === 'incomplete')
      violation(
        w,
        'sweep after needs_attention',
        [`${sweep.outcome}: ${sweep.error?.message ?? ''}`],
        followUps.map((f) => f.rotationId).join(', '),
      );
    counts.repairs++;
    w.needsAttention = false;
  }

  function clearFaults(w: World): void {
    const b = B(w);
    b.openai.resetFaults();
    b.gcp?.resetKnobs();
    b.azure?.clearFaults();
  }

  /** One run: crashes per `plan` (or runs to its end when the plan lies beyond it). */
  async function run(
    w: World,
    plan: CrashPlan | null,
    opts: { now?: boolean; leaked?: boolean; resumeOnly?: boolean },
    resuming: boolean,
    targeted: Targeted | null = null,
    trace?: string[],
  ): Promise<{ crashed: false; result: KeyResult; sw: CrashSwitch } | { crashed: true; sw: CrashSwitch }> {
    const { sw, stateStore, env, observers } = newProcess(w, plan);
    if (trace) sw.onCall = (label) => void trace.push(label);
    arm(sw, targeted);
    const p = rotateKey(keyOf(w), { config: cfg, stateStore, logger, env, observers, actor: 'chaos', ...opts });
    const first = await Promise.race([p.then((result) => ({ result })), sw.died.then(() => 'died' as const)]);
    if (first === 'died') {
      if (!(await sw.settle()))
        violation(w, 'settle', ['a call of the dead run was still in flight after 10 s'], sw.where);
      await o.backend().leaseExpired?.(w.key);
      return { crashed: true, sw };
    }
    await finish(sw);
    const k = spanKey(w, resuming);
    const s = span.get(k) ?? { events: 0, wire: 0 };
    span.set(k, { events: Math.max(s.events, sw.events), wire: Math.max(s.wire, sw.wire) });
    return { crashed: false, result: first.result, sw };
  }

  function arm(sw: CrashSwitch, t: Targeted | null): void {
    if (!t) return;
    sw.onCall = (label) => {
      if (t.armed || label !== t.on) return;
      t.armed = true;
      counts.targeted++;
      t.arm();
    };
  }

  /**
   * A run that died right after recording its result never returned it: read it where an operator
   * would (`keyrotor status` shows the state store's last result) and take it into account.
   */
  async function absorbLastResult(w: World, detail: string): Promise<void> {
    const last = (await reader.read(w.key))?.last;
    if (!last?.rotationId || w.seenResults.has(`${last.rotationId}@${last.finishedAt}`)) return;
    await settleResult(w, last, `${detail} (result read from the state store)`);
  }

  /** Check a finished run's result (needs_attention is followed up at the end of the scenario). */
  async function settleResult(w: World, r: KeyResult, detail: string): Promise<void> {
    if (r.rotationId && r.finishedAt) w.seenResults.add(`${r.rotationId}@${r.finishedAt}`);
    w.needsAttention = r.outcome === 'needs_attention' || (w.needsAttention && r.outcome !== 'rotated');
    if (r.outcome === 'needs_attention' && r.rotationId)
      w.followUps.push({ rotationId: r.rotationId, leftovers: r.leftovers ?? [] });
    counts.outcomes[r.outcome] = (counts.outcomes[r.outcome] ?? 0) + 1;
    if (DEBUG && (r.outcome !== 'rotated' || DEBUG === '2'))
      console.log(
        `${w.key} ${detail}: ${JSON.stringify({ rotationId: r.rotationId, outcome: r.outcome, error: r.error, leftovers: r.leftovers, stage: r.stage })}`,
      );
    const bad: string[] = [];
    // a pending version left by a failed rollback blocks the key (LOCKED) until the operator removes
    // it, as its needs_attention leftovers ask: expected while that follow-up is outstanding
    const blockedByLeftover =
      r.outcome === 'locked' && w.followUps.some((f) => r.error?.message.includes(f.rotationId));
    if (!['rotated', 'rolled_back', 'needs_attention', 'skipped'].includes(r.outcome) && !blockedByLeftover)
      bad.push(`ended ${r.outcome}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`);
    if ((r.outcome === 'rolled_back' || r.outcome === 'needs_attention') && !r.error && !r.leftovers?.length)
      bad.push(`${r.outcome} without a reason`);
    if (r.outcome === 'rotated') {
      w.bootstrapped = true;
      if (w.leak && r.leaked && workingKey(B(w), w.leak.value))
        bad.push(`leak rotation ${r.rotationId} ended rotated but the leaked key still works`);
    }
    if (r.outcome === 'needs_attention') noteLeftovers(B(w), w, r.leftovers);
    violation(w, `result ${r.rotationId}`, bad, detail);
  }

  /**
   * After the crashes of a scenario: recovery by `keyrotor resume` or `keyrotor rotate` (which resumes
   * first), without crashing; then the invariant at rest, and what an operator does after a
   * needs_attention result.
   */
  async function recover(
    w: World,
    rng: Rng,
    leaked: boolean,
    targeted: Targeted | null,
    detail: string[],
  ): Promise<void> {
    const b = B(w);
    const unfinished = await activeRef(w);
    if (unfinished) {
      const resumeOnly = rng.chance(0.5);
      const { sw, stateStore, env, observers } = newProcess(w, null);
      arm(sw, targeted);
      const r = await rotateKey(keyOf(w), {
        config: cfg,
        stateStore,
        logger,
        env,
        observers,
        actor: 'chaos',
        now: true,
        leaked,
        resumeOnly,
      });
      await finish(sw);
      if (r.rotationId === unfinished.rotationId) counts.resumed++;
      else
        violation(
          w,
          'recovery',
          [`started rotation ${r.rotationId} instead of resuming ${unfinished.rotationId}`],
          detail.join(', '),
        );
      detail.push(`recovered by ${resumeOnly ? 'resume' : 'rotate'}: ${r.outcome}`);
      await settleResult(w, r, detail.join(', '));
      if (r.outcome === 'needs_attention' && r.leaked && r.error?.stage === 'promote' && (await activeRef(w))) {
        // leak mode cannot go back: the rotation stays unfinished at promote, and its leftover asks to
        // fix the store and resume. Do exactly that (the fault is the "broken store").
        clearFaults(w);
        const again = newProcess(w, null);
        const r2 = await rotateKey(keyOf(w), {
          config: cfg,
          stateStore: again.stateStore,
          logger,
          env: again.env,
          observers: again.observers,
          actor: 'chaos',
          resumeOnly: true,
        });
        await finish(again.sw);
        detail.push(`store fixed, resumed: ${r2.outcome}`);
        if (r2.rotationId !== unfinished.rotationId)
          violation(
            w,
            'leak resume',
            [`resumed ${r2.rotationId} instead of ${unfinished.rotationId}`],
            detail.join(', '),
          );
        if (r2.outcome !== 'rotated')
          violation(
            w,
            'leak resume',
            [`ended ${r2.outcome}${r2.error ? ` (${r2.error.code}: ${r2.error.message})` : ''}`],
            detail.join(', '),
          );
        const done = w.followUps.findIndex((f) => f.rotationId === unfinished.rotationId);
        if (done >= 0) w.followUps.splice(done, 1);
        await settleResult(w, r2, detail.join(', '));
      }
      if (await activeRef(w))
        violation(w, 'after recovery', ['an unfinished rotation is still in the state store'], detail.join(', '));
    }
    clearFaults(w);
    violation(
      w,
      'at rest',
      await checkInvariant(b, w, stateDir, { phase: 'rest', active: null, allowSplit: w.needsAttention }),
      detail.join(', '),
    );
    if (w.needsAttention) {
      await operatorRepair(w, w.followUps.splice(0));
      detail.push('operator followed the leftovers');
      violation(
        w,
        'after the operator repair',
        await checkInvariant(b, w, stateDir, { phase: 'rest', active: null }),
        detail.join(', '),
      );
    }
  }

  async function scenario(w: World, rng: Rng, index: number): Promise<void> {
    const t0 = Date.now();
    counts.scenarios++;
    const b = B(w);
    const detail: string[] = [`scenario ${index}`];
    let leaked = false;
    if (w.bootstrapped && rng.chance(0.15)) {
      const cur = (await served(b, w, stateDir))[0]?.value;
      const k = cur ? workingKey(b, cur) : undefined;
      if (k) {
        leaked = true;
        w.leak = { value: cur!, keyId: k.id, switched: [] };
        detail.push('leak mode');
      }
    }
    if (rng.chance(0.35)) {
      injectFaults(rng, w, true);
      detail.push('faults');
    }
    const targeted = rng.chance(0.15) ? targetedFault(rng, w) : null;
    if (targeted) detail.push(`faults armed at ${targeted.on}`);
    const chain = rng.int(2, 6);
    for (let j = 0; j < chain; j++) {
      const resuming = (await activeRef(w)) !== null;
      const plan = randomPlan(rng, w, resuming);
      const r = await run(w, plan, { now: true, leaked }, resuming, targeted);
      if (!r.crashed) {
        detail.push(`run ${j} ended before its crash point`);
        await settleResult(w, r.result, detail.join(', '));
        break;
      }
      counts.crashes++;
      w.crashes++;
      const mode = plan.kind === 'wire' ? `wire-${plan.applied ? 'applied' : 'unapplied'}` : plan.mode;
      counts.byMode[mode] = (counts.byMode[mode] ?? 0) + 1;
      for (const s of new Set(w.spec.stores)) counts.byStore[s] = (counts.byStore[s] ?? 0) + 1;
      detail.push(`crash ${j} ${r.sw.where}`);
      await absorbLastResult(w, detail.join(', '));
      if (w.followUps.length) detail.push('(needs attention: the chain stops for the operator)');
      violation(
        w,
        'at the crash',
        await checkInvariant(b, w, stateDir, { phase: 'instant', active: await activeRef(w) }),
        detail.join(', '),
      );
      if (w.followUps.length) break;
    }
    await recover(w, rng, leaked, targeted, detail);
    if (DEBUG) console.log(`${w.key} ${detail.join(', ')}: ${Date.now() - t0} ms`);
  }

  const random = o.random;
  if (random) {
    const MIN_CRASHES = random.minCrashes;
    const TIME_BUDGET_MS = random.timeBudgetMs;
    it(
      `${MIN_CRASHES}+ crashes across ${o.worlds.map((p) => p.spec.stores.join('+')).join(', ')} (${o.backend().name} state): the invariant holds after each`,
      async () => {
        const rng = mulberry32(SEED);
        const quota = worlds.map((w) => Math.ceil(o.worlds.find((p) => p.spec.key === w.key)!.crashes * SCALE));
        const started = Date.now();
        const elapsed: Record<string, number> = {};
        const settled = await Promise.allSettled(
          worlds.map(async (w, i) => {
            // bootstrap, then one full rotation (which also measures how long a run is)
            for (const what of ['bootstrap', 'first full rotation']) {
              const r = await run(w, null, { now: true }, false);
              if (r.crashed) throw new Error('a run without a crash plan crashed');
              await settleResult(w, r.result, what);
            }
            // each scenario has its own generator forked from the seed: a seed replays a world exactly
            for (let n = 0; w.crashes < quota[i]! && Date.now() - started < TIME_BUDGET_MS; n++)
              await scenario(w, rng.fork(`${w.key}:${n}`), n);
            elapsed[w.key] = Math.round((Date.now() - started) / 1000);
          }),
        );
        for (const [i, r] of settled.entries())
          if (r.status === 'rejected')
            counts.violations.push(
              `[seed ${SEED}] ${worlds[i]!.key}: the scenario loop threw: ${String((r.reason as Error)?.stack ?? r.reason).slice(0, 600)}`,
            );

        const report = {
          seed: SEED,
          crashes: counts.crashes,
          byMode: counts.byMode,
          byStore: counts.byStore,
          faults: counts.faults,
          scenarios: counts.scenarios,
          outcomes: counts.outcomes,
          sweeps: counts.sweeps,
          resumed: counts.resumed,
          targeted: counts.targeted,
          repairs: counts.repairs,
          splits: counts.splits,
          seconds: Math.round((Date.now() - started) / 1000),
          secondsPerWorld: elapsed,
          violations: counts.violations.length,
        };
        console.log(`chaos crash suite: ${JSON.stringify(report)}`);
        for (const v of counts.violations.slice(0, 30)) console.log(`VIOLATION ${v}`);
        capture(`${o.name}-report.json`, JSON.stringify({ ...report, list: counts.violations }, null, 2));
        expect(logLines.join('')).not.toContain(CANARY);
        expect(counts.violations, `seed ${SEED}`).toEqual([]);
        expect(counts.crashes, `crashes within ${TIME_BUDGET_MS / 1000} s`).toBeGreaterThanOrEqual(
          Math.min(
            MIN_CRASHES,
            quota.reduce((a, x) => a + x, 0),
          ),
        );
      },
      random.testTimeoutMs,
    );
  }

  if (random)
    it('the invariant checker is not vacuous: planted violations are reported', async () => {
      const w = worlds.find((x) => x.key === 'c-file') ?? worlds[0]!;
      const b = B(w);
      const check = (
        phase: 'instant' | 'rest',
        active: { rotationId: string; oldKeyId: string | null; newKeyId: string | null } | null = null,
      ) => checkInvariant(b, w, stateDir, { phase, active, allowSplit: false });
      w.needsAttention = false;
      // bring the world to rest first (the main test may have left it anywhere)
      const { sw, stateStore, env, observers } = newProcess(w, null);
      const r = await rotateKey(keyOf(w), { config: cfg, stateStore, logger, env, observers, now: true });
      await finish(sw);
      expect(r.outcome, JSON.stringify(r.error)).toBe('rotated');
      expect(await check('rest')).toEqual([]);

      const orphan = b.openai.state.plantKey({
        name: `${w.markerPrefix}rot-20260101t000000z-0000dead`,
        owner: { type: 'service_account', serviceAccountId: w.saId },
      });
      expect((await check('rest')).join('\n')).toMatch(new RegExp(`orphan key ${orphan.id}`));
      const second = b.openai.state.plantKey({
        name: `${w.markerPrefix}rot-20260101t000000z-0000beef`,
        owner: { type: 'service_account', serviceAccountId: w.saId },
      });
      const instant = await check('instant', {
        rotationId: 'rot-20260101t000000z-0000dead',
        oldKeyId: null,
        newKeyId: orphan.id,
      });
      expect(instant.join('\n')).toMatch(new RegExp(`orphan key ${second.id} .*not part of the unfinished rotation`));
      b.openai.state.deleteKey(orphan);
      b.openai.state.deleteKey(second);

      const cur = workingKey(b, (await served(b, w, stateDir))[0]!.value!)!;
      b.openai.state.deleteKey(cur);
      expect((await check('rest')).join('\n')).toMatch(/serves a key that does not work at the issuer/);
      cur.deleted = false;

      w.leak = { value: cur.value, keyId: cur.id, switched: [true] };
      expect((await check('rest')).join('\n')).toMatch(/serves the LEAKED key/);
      w.leak = null;
      expect(await check('rest')).toEqual([]);
    });

  // ------------------------------------------------------------------ everyPoint

  /** (label, mode) of each crash point hit, e.g. `state.saveActive/after` */
  const hit = new Map<string, number>();

  /** One crash at `plan` in a fresh rotation, sometimes a second one in its recovery, then the recovery. */
  async function pointScenario(w: World, plan: CrashPlan, rng: Rng, index: number): Promise<void> {
    const t0 = Date.now();
    counts.scenarios++;
    const b = B(w);
    const detail: string[] = [`point ${index} (${plan.kind === 'event' ? `${plan.mode} event ${plan.at}` : 'wire'})`];
    const crashAt = async (p: CrashPlan, resuming: boolean, j: number): Promise<boolean> => {
      const r = await run(w, p, { now: true }, resuming);
      if (!r.crashed) {
        detail.push(`run ${j} ended before its crash point`);
        await settleResult(w, r.result, detail.join(', '));
        return false;
      }
      counts.crashes++;
      w.crashes++;
      const mode = p.kind === 'wire' ? `wire-${p.applied ? 'applied' : 'unapplied'}` : p.mode;
      counts.byMode[mode] = (counts.byMode[mode] ?? 0) + 1;
      const label = /\(([^,)]+)/.exec(r.sw.where)?.[1] ?? r.sw.where;
      if (p.kind === 'event') {
        counts.byEvent[label] = (counts.byEvent[label] ?? 0) + 1;
        if (j === 0) hit.set(`${label}/${p.mode}`, (hit.get(`${label}/${p.mode}`) ?? 0) + 1);
      }
      detail.push(`crash ${j} ${r.sw.where}`);
      await absorbLastResult(w, detail.join(', '));
      violation(
        w,
        'at the crash',
        await checkInvariant(b, w, stateDir, { phase: 'instant', active: await activeRef(w) }),
        detail.join(', '),
      );
      return true;
    };
    if (!(await crashAt(plan, false, 0))) counts.notReached++;
    // a quarter of the time the recovery crashes too (anywhere in its run, also inside an issuer request)
    if (!w.followUps.length && (await activeRef(w)) && rng.chance(0.25))
      await crashAt(randomPlan(rng, w, true), true, 1);
    await recover(w, rng, false, null, detail);
    if (DEBUG) console.log(`${w.key} ${detail.join(', ')}: ${Date.now() - t0} ms`);
  }

  const every = o.everyPoint;
  if (every)
    it(
      `a crash before and after every issuer/store call and state write of a rotation, each resumed (${o.backend().name} state): the invariant holds, the audit chain verifies`,
      async () => {
        const w = worlds[0]!;
        const started = Date.now();
        const trace: string[] = [];
        for (const what of ['bootstrap', 'first full rotation']) {
          trace.length = 0;
          const r = await run(w, null, { now: true }, false, null, trace);
          if (r.crashed) throw new Error('a run without a crash plan crashed');
          await settleResult(w, r.result, what);
        }
        // the crash points: before and after each event of a whole rotation (as measured just now)
        const points: { plan: CrashPlan; name: string }[] = [];
        const nth = new Map<string, number>();
        for (let at = 0; at < trace.length; at++) {
          const label = trace[at]!;
          const n = nth.get(label) ?? 0;
          nth.set(label, n + 1);
          for (const mode of ['before', 'after'] as const)
            points.push({ plan: { kind: 'event', at, mode }, name: `${label}#${n}/${mode}` });
        }
        const only = every.only;
        if (only)
          expect(
            [...only].filter((n) => !points.some((p) => p.name === n)),
            'sampled points',
          ).toEqual([]);
        const chosen = points.filter((p) => !only || only.has(p.name)).map((p) => p.plan);
        const rng = mulberry32(SEED);
        for (const [i, plan] of chosen.entries()) await pointScenario(w, plan, rng.fork(`${w.key}:point:${i}`), i);

        // the audit trail, written with each snapshot: intact, and no rotation recorded `rotated` twice
        const audit = reader.auditLog();
        const verified = await audit.verify();
        if (!verified.ok) counts.violations.push(`audit verify: ${JSON.stringify(verified).slice(0, 800)}`);
        const rotatedBy = new Map<string, number>();
        for (const r of (await audit.read()).records)
          if (r.type === 'transition' && r.state === 'rotated' && r.rotationId)
            rotatedBy.set(r.rotationId, (rotatedBy.get(r.rotationId) ?? 0) + 1);
        for (const [id, n] of rotatedBy)
          if (n > 1) counts.violations.push(`audit: ${id} recorded "rotated" ${n} times`);

        const expected = new Set(chosen.map((p) => (p.kind === 'event' ? `${trace[p.at]}/${p.mode}` : '')));
        const missed = [...expected].filter((k) => !hit.has(k));
        const report = {
          seed: SEED,
          backend: o.backend().name,
          events: trace.length,
          trace: trace.join(' '),
          points: chosen.length,
          crashes: counts.crashes,
          notReached: counts.notReached,
          byMode: counts.byMode,
          byEvent: counts.byEvent,
          outcomes: counts.outcomes,
          resumed: counts.resumed,
          repairs: counts.repairs,
          auditRecords: verified.records,
          rotations: rotatedBy.size,
          seconds: Math.round((Date.now() - started) / 1000),
          violations: counts.violations.length,
        };
        console.log(`chaos crash, every point: ${JSON.stringify(report)}`);
        for (const v of counts.violations.slice(0, 30)) console.log(`VIOLATION ${v}`);
        capture(`${o.name}-report.json`, JSON.stringify({ ...report, list: counts.violations }, null, 2));
        expect(logLines.join('')).not.toContain(CANARY);
        expect(counts.violations, `seed ${SEED}`).toEqual([]);
        // every call and write of the rotation was crashed before and after (at its own index or another)
        expect(missed, 'crash points never hit').toEqual([]);
        expect(trace).toEqual(
          expect.arrayContaining(['state.saveActive', 'state.finish', 'issuer.create', 'issuer.revoke']),
        );
        expect(verified.records).toBeGreaterThan(chosen.length);
        expect(rotatedBy.size).toBeGreaterThan(chosen.length / 2);
      },
      every.testTimeoutMs,
    );
}
