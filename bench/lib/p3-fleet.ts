/**
 * P3 (fleet) and P5 (memory), both on one world: N keys across P projects of the OpenAI fake, each
 * with a file store that already holds a live key (planted in the fake, staged and promoted in the
 * store before the clock starts), rotated by a forked keyrotor process (fleet-child.ts) while the fake
 * runs here.
 *
 * P3: the fake adds `latencyMs` to every request and answers 429 + retry-after beyond `rps` (a token
 * bucket, one second of burst); every key's issuer is configured with `rateLimit: rps`. Reported: wall
 * time of `rotateKeys` vs. the bound (issuer requests answered ÷ rps, or the latency bound of the
 * chosen concurrency if larger), failures, and the share of 429s.
 *
 * P5: the same keys, each rotation waiting at a `manual` health gate: parked by one worker process
 * (durable waits: saved with a wake time, nothing held in memory), then confirmed and continued by a
 * second one; peak RSS (VmHWM) of each worker.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startOpenAIFake, type OpenAIFake } from '../../test/fakes/openai-admin.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { issuedKeyName, newRotationId } from '../../src/core/ids.ts';
import { Secret } from '../../src/core/secret.ts';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createFileStore } from '../../providers/stores/file/index.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { workerHeapFlags } from '../../src/entrypoints/heap.ts';
import { fileStoreSchema } from '../../providers/stores/file/file.schema.ts';
import { progress, ratio, round, sleep } from './util.ts';

const MASTER_HEX = 'cd'.repeat(32);
const CHILD = fileURLToPath(new URL('./fleet-child.ts', import.meta.url));

export interface FleetWorld {
  fake: OpenAIFake;
  dir: string;
  stateDir: string;
  keys: { name: string; project: string; serviceAccount: string }[];
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

export async function createFleetWorld(tmp: string, keyCount: number, projectCount: number): Promise<FleetWorld> {
  const projects = Array.from({ length: projectCount }, (_, i) => `proj_fleet${String(i).padStart(2, '0')}`);
  const fake = await startOpenAIFake({ projects });
  const dir = path.join(tmp, 'fleet');
  const stateDir = path.join(dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const sas = projects.map((p) => fake.state.addServiceAccount(`keyrotor-fleet-${p}`, p).id);
  const keys = Array.from({ length: keyCount }, (_, i) => ({
    name: `fleet-${String(i).padStart(4, '0')}`,
    project: projects[i % projectCount]!,
    serviceAccount: sas[i % projectCount]!,
  }));
  const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER_HEX };

  // every key starts with a live issuer key that its store serves (as after an earlier rotation)
  const seedRotation = newRotationId(new Date(Date.now() - 40 * 86_400_000));
  const cfg = fileStoreSchema.parse({ type: 'file' });
  const seedOne = async (k: (typeof keys)[number]) => {
    const planted = fake.state.plantKey({
      projectId: k.project,
      name: issuedKeyName(k.name, seedRotation),
      owner: { type: 'service_account', serviceAccountId: k.serviceAccount },
    });
    const store = await createFileStore(cfg, {
      keyName: k.name,
      stateDir,
      configDir: dir,
      logger: silentLogger(),
      clock: systemClock,
      env: { KEYROTOR_MASTER_KEY: MASTER_HEX },
      providerState: { get: () => undefined, set: async () => {} },
    });
    const secret = Secret.of(planted.value);
    await store.stage({
      rotationId: seedRotation,
      secret,
      meta: {
        rotationId: seedRotation,
        issuerKeyId: planted.id,
        fingerprint: fingerprint(secret),
        createdAt: new Date().toISOString(),
      },
    });
    await store.promote(seedRotation);
  };
  for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map(seedOne));
  return { fake, dir, stateDir, keys, env, close: () => fake.close() };
}

export function writeConfig(w: FleetWorld, file: string, issuerExtra: string, health: string): string {
  // JSON is YAML: one document, no templating of 1,000 entries
  const cfg = {
    version: 1,
    stateDir: w.stateDir,
    defaults: { lease: { ttl: '15m' } },
    keys: w.keys.map((k) => ({
      name: k.name,
      issuer: {
        type: 'openai',
        project: k.project,
        serviceAccount: k.serviceAccount,
        baseURL: w.fake.baseURL,
        timeout: '60s',
        ...JSON.parse(issuerExtra),
      },
      stores: [{ type: 'file' }],
      ...(health ? { health: [JSON.parse(health)] } : {}),
    })),
  };
  writeFileSync(file, JSON.stringify(cfg, null, 1));
  return file;
}

/** VmHWM / VmRSS of a process in MB, from /proc (Linux); undefined elsewhere */
export function procMemory(pid: number): { hwmMB: number; rssMB: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { hwmMB: round(kb('VmHWM') / 1024, 1), rssMB: round(kb('VmRSS') / 1024, 1) };
  } catch {
    return undefined;
  }
}

interface ChildMsg {
  type: string;
  [k: string]: unknown;
}

export function startChild(
  env: NodeJS.ProcessEnv,
  flags: string[] = [],
): Promise<{ child: ChildProcess; next: (type: string, timeoutMs: number) => Promise<ChildMsg> }> {
  // BENCH_CHILD_NODE_OPTIONS: extra node flags for the keyrotor process (to try e.g. heap limits)
  const execArgv = [...(process.env.BENCH_CHILD_NODE_OPTIONS ?? '').split(' ').filter(Boolean), ...flags];
  const child = fork(CHILD, [], {
    execPath: process.execPath,
    execArgv,
    env,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const inbox: ChildMsg[] = [];
  const waiters: Array<(m: ChildMsg) => void> = [];
  child.on('message', (m: ChildMsg) => {
    inbox.push(m);
    for (const w of waiters.splice(0)) w(m);
  });
  const next = async (type: string, timeoutMs: number): Promise<ChildMsg> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
      if (i >= 0) {
        const m = inbox.splice(i, 1)[0]!;
        if (m.type === 'error') throw new Error(`fleet child: ${String(m.message)}`);
        return m;
      }
      if (child.exitCode !== null) throw new Error(`fleet child exited (${child.exitCode}) before sending ${type}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`fleet child: no ${type} within ${timeoutMs} ms`);
      await Promise.race([new Promise<ChildMsg>((r) => waiters.push(r)), sleep(Math.min(left, 500))]);
    }
  };
  return next('ready', 30_000).then(() => ({ child, next }));
}

export interface P3Options {
  world: FleetWorld;
  rps: number;
  latencyMs: number;
  concurrency: number;
}

export async function runP3(o: P3Options) {
  const w = o.world;
  const file = writeConfig(w, path.join(w.dir, 'p3.config.yaml'), JSON.stringify({ rateLimit: o.rps }), '');
  w.fake.resetFaults();
  w.fake.setLatency(o.latencyMs);
  w.fake.setRateLimit({ requestsPerSecond: o.rps });
  const arrivals: number[] = [];
  w.fake.onRequest(() => arrivals.push(performance.now()));

  const { child, next } = await startChild(w.env);
  let peak = 0;
  const sampler = setInterval(() => {
    const m = child.pid ? procMemory(child.pid) : undefined;
    if (m) peak = Math.max(peak, m.hwmMB);
  }, 250);
  progress(
    `P3: rotating ${w.keys.length} keys, concurrency ${o.concurrency}, issuer limited to ${o.rps} requests/s, ${o.latencyMs} ms per request`,
  );
  child.send({
    cmd: 'run',
    config: file,
    logFile: path.join(w.dir, 'p3.keyrotor.log.jsonl'),
    concurrency: o.concurrency,
  });
  const done = await next('done', 15 * 60_000);
  clearInterval(sampler);
  const m = child.pid ? procMemory(child.pid) : undefined;
  if (m) peak = Math.max(peak, m.hwmMB);
  child.kill();
  w.fake.setRateLimit(null);
  w.fake.setLatency(0);

  const log = w.fake.log;
  const total = log.length;
  const rejected = log.filter((e) => e.status === 429).length;
  const answered = total - rejected;
  const byRoute: Record<string, number> = {};
  for (const e of log) byRoute[e.route] = (byRoute[e.route] ?? 0) + 1;
  const wallS = (done.wallMs as number) / 1000;
  const keys = w.keys.length;
  const rateBoundS = answered / o.rps;
  const callsPerRotation = answered / keys;
  // with `concurrency` rotations at a time, each needing callsPerRotation sequential requests of latencyMs
  const latencyBoundS = (Math.ceil(keys / o.concurrency) * callsPerRotation * o.latencyMs) / 1000;
  const boundS = Math.max(rateBoundS, latencyBoundS);
  // the busiest one-second window the fake saw
  let maxPerSecond = 0;
  for (let i = 0, j = 0; i < arrivals.length; i++) {
    while (arrivals[i]! - arrivals[j]! >= 1000) j++;
    maxPerSecond = Math.max(maxPerSecond, i - j + 1);
  }
  const outcomes = done.outcomes as Record<string, number>;
  const rotated = outcomes.rotated ?? 0;
  return {
    keys,
    projects: new Set(w.keys.map((k) => k.project)).size,
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    limitRps: o.rps,
    wallS: round(wallS, 1),
    boundS: round(boundS, 1),
    rateBoundS: round(rateBoundS, 1),
    latencyBoundS: round(latencyBoundS, 1),
    ratio: ratio(wallS, boundS),
    failures: keys - rotated,
    outcomes,
    errors: done.errors,
    firstError: done.firstError,
    requests: total,
    requestsAnswered: answered,
    requests429: rejected,
    share429Percent: round((100 * rejected) / Math.max(1, total), 2),
    issuerRequestsPerRotation: round(callsPerRotation, 2),
    byRoute,
    busiestSecond: maxPerSecond,
    achievedRps: round(answered / wallS, 1),
    limiter: done.limiters,
    peakRssMB: peak,
  };
}

export interface P5Options {
  world: FleetWorld;
  /** rotations a worker runs at the same time (P3's 32) */
  concurrency: number;
}

/** one keyrotor worker process running `rotateKeys` over every key; its peak RSS and what it reported */
async function p5Worker(
  w: FleetWorld,
  config: string,
  name: string,
  cmd: Record<string, unknown>,
  flags: string[] = [],
) {
  const { child, next } = await startChild(w.env, flags);
  const base = child.pid ? procMemory(child.pid) : undefined;
  let peak = 0;
  const sampler = setInterval(() => {
    const m = child.pid ? procMemory(child.pid) : undefined;
    if (m) peak = Math.max(peak, m.hwmMB);
  }, 250);
  const t0 = performance.now();
  child.send({ cmd: 'run', config, logFile: path.join(w.dir, `p5.${name}.log.jsonl`), ...cmd });
  let done: ChildMsg | undefined;
  let error: string | undefined;
  try {
    done = await next('done', 15 * 60_000);
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  const wallS = (performance.now() - t0) / 1000;
  const end = child.pid ? procMemory(child.pid) : undefined;
  clearInterval(sampler);
  child.send({ cmd: 'exit' });
  await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
  child.kill('SIGKILL');
  const memory = (done?.memory ?? {}) as Record<string, number>;
  const mb = (b: number | undefined) => (typeof b === 'number' ? round(b / 2 ** 20, 1) : null);
  return {
    peakRssMB: Math.max(
      peak,
      end?.hwmMB ?? 0,
      typeof memory.maxRssKB === 'number' ? round(memory.maxRssKB / 1024, 1) : 0,
    ),
    baselineRssMB: base?.rssMB ?? null,
    heapUsedAtEndMB: mb(memory.heapUsed),
    heapTotalAtEndMB: mb(memory.heapTotal),
    externalAtEndMB: mb(memory.external),
    rssAtEndMB: mb(memory.rss),
    wallS: round(wallS, 1),
    cpuS: done?.cpu
      ? round(
          ((done.cpu as { user: number; system: number }).user +
            (done.cpu as { user: number; system: number }).system) /
            1e6,
          1,
        )
      : null,
    outcomes: (done?.outcomes ?? {}) as Record<string, number>,
    firstError: (done?.firstError as string | null | undefined) ?? error ?? null,
  };
}

/** the unfinished rotations in the file state dir: parked (with wakeAt) or not (read as keyrotor reads them) */
async function parkedInState(w: FleetWorld): Promise<{ rotationIds: Map<string, string>; withWakeAt: number }> {
  const store = createFileStateStore(w.stateDir);
  const rotationIds = new Map<string, string>();
  let withWakeAt = 0;
  for (const k of w.keys) {
    const a = (await store.read(k.name))?.active;
    if (a?.rotationId) rotationIds.set(k.name, a.rotationId);
    if (a?.wakeAt) withWakeAt++;
  }
  return { rotationIds, withWakeAt };
}

/**
 * P5 with durable waits: 1,000 rotations waiting at a `manual` gate. Worker 1 starts every rotation
 * (concurrency as P3) and parks each at the gate (saved with its wake time, lease released, nothing
 * kept in memory); the decision for each is then recorded (the files `keyrotor confirm` writes); worker
 * 2, a new process, continues all of them (as `resume --now`) to `rotated`. Peak RSS of each worker.
 */
export async function runP5(o: P5Options) {
  const w = o.world;
  w.fake.resetFaults();
  w.fake.setLatency(0);
  w.fake.setRateLimit(null);
  const n = w.keys.length;
  const gate = { type: 'manual', timeout: '30m', interval: '60s' };
  const file = writeConfig(
    w,
    path.join(w.dir, 'p5.config.yaml'),
    JSON.stringify({ rateLimit: 10_000, maxConcurrentRequests: 16 }),
    JSON.stringify(gate),
  );
  // the same two workers with Node's default heap flags, and as keyrotor starts its long-running
  // workers (`daemon`, `serve`: the CLI starts Node again with these flags, src/entrypoints/heap.ts;
  // docs/operations.md#worker-memory), computed for this host as the CLI computes them
  const variants: { name: string; flags: string[] }[] = [
    { name: 'Node defaults', flags: [] },
    { name: 'as shipped', flags: workerHeapFlags() },
  ];
  const runs = [];
  for (const v of variants) {
    const tag = v.flags.length ? 'shipped' : 'default';
    progress(
      `P5 (${v.name}): worker 1 starts ${n} rotations (concurrency ${o.concurrency}), parking each at a manual gate`,
    );
    const park = await p5Worker(w, file, `park-${tag}`, { concurrency: o.concurrency, park: true }, v.flags);
    const parked = await parkedInState(w);
    // the operator confirms every one of them (the decision files `keyrotor confirm` creates)
    const { DECISION_FORMAT, decisionFile } = await import('../../providers/health/manual/manual.decision.ts');
    mkdirSync(path.join(w.stateDir, 'confirm'), { recursive: true });
    for (const [key, rotationId] of parked.rotationIds) {
      const decision = {
        format: DECISION_FORMAT,
        key,
        rotationId,
        decision: 'confirm',
        at: new Date().toISOString(),
        by: 'bench@p5',
      };
      writeFileSync(decisionFile(w.stateDir, key, rotationId), JSON.stringify(decision));
    }
    progress(`P5 (${v.name}): worker 2 (a new process) continues the ${parked.rotationIds.size} parked rotations`);
    const resume = await p5Worker(
      w,
      file,
      `continue-${tag}`,
      { concurrency: o.concurrency, park: true, wake: true, now: false },
      v.flags,
    );
    const left = await parkedInState(w);
    runs.push({
      variant: v.name,
      flags: v.flags,
      park: { ...park, parkedInStore: parked.withWakeAt },
      continue: { ...resume, stillActive: left.rotationIds.size },
      peakRssMB: Math.max(park.peakRssMB, resume.peakRssMB),
    });
  }
  return {
    wanted: n,
    concurrency: o.concurrency,
    gate,
    parkAfter: 'default (30s)',
    runs,
    childNodeOptions: process.env.BENCH_CHILD_NODE_OPTIONS ?? null,
  };
}
