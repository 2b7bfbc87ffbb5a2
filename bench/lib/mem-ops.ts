/**
 * A helper for work on the workflow's own hot path (not part of `npm run bench`): N full rotations as
 * P1's "state in memory" variant runs them (OpenAI fake, the file secret store, one
 * `issuer-smoke-test` gate, the in-memory state store of bench/lib/memory-state.ts, no observers, JSON
 * logs at info to a file), then the wall time and CPU per rotation. What is left is keyrotor's own
 * cost (xstate, stages, providers, logging) over the provider calls.
 *
 *   node bench/lib/mem-ops.ts                         # N=200 rotations after WARMUP=20
 *   PROFILE=/tmp/mem.cpuprofile node bench/lib/mem-ops.ts   # a CPU profile of the measured rotations only
 *   FLOOR=1 node bench/lib/mem-ops.ts                 # P1's floor script instead, for the same figures
 *   OBS=1 node bench/lib/mem-ops.ts                   # with the default observers (the audit trail of the
 *                                                     # config's file backend, metrics)
 *   LOG=1 node bench/lib/mem-ops.ts                   # also print the last rotation's log lines
 *   TMPDIR=/dev/shm node bench/lib/mem-ops.ts         # the file store on tmpfs: CPU only, no fsync latency
 *
 * The fake runs in this process: its CPU is in the figures, as it is in the floor's. Benchmark only.
 */
import path from 'node:path';
import os from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { memoryStateStore } from './memory-state.ts';
import { fileLogger, p1Yaml } from './util.ts';
import { fileFloor, floorRotation, floorSeed } from './floor.ts';

const N = Number(process.env.N ?? 200);
const WARMUP = Number(process.env.WARMUP ?? 20);

const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-mem-ops-'));
const openai = await startOpenAIFake({ projects: ['proj_bench'] });
const env = { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };
const sa = openai.state.addServiceAccount('sa').id;
const yaml = p1Yaml({
  baseURL: openai.baseURL,
  head: `stateDir: ${JSON.stringify(path.join(dir, 'state'))}`,
  keys: [{ name: 'mem-ops', serviceAccount: sa }],
});
const file = path.join(dir, 'rotation.config.yaml');
writeFileSync(file, yaml);
const config = parseConfig(yaml, file, env);
const stateStore = memoryStateStore();
const logger = await fileLogger(path.join(dir, 'log.jsonl'));
const withObservers = process.env.OBS === '1';
const floor = process.env.FLOOR === '1';
const floorIssuer = {
  baseURL: openai.baseURL,
  adminKey: openai.adminKey,
  project: 'proj_bench',
  serviceAccount: openai.state.addServiceAccount('floor').id,
  expiresInSeconds: Math.ceil((config.keys[0]!.schedule.every + config.keys[0]!.grace) / 1000),
  timeoutMs: 10_000,
};
const floorStore = fileFloor(path.join(dir, 'floor'), 'mem-ops-floor', 'cd'.repeat(32));
let floorN = 0;
if (floor) {
  mkdirSync(path.join(dir, 'floor'));
  await floorSeed(floorIssuer, floorStore);
}
const rotate = async () => {
  if (floor) return floorRotation(floorIssuer, floorStore, ++floorN);
  const observers = withObservers ? defaultObservers({ config, logger, actor: 'bench', env, stateStore }) : [];
  const r = await rotateKey(config.keys[0]!, { config, stateStore, logger, env, now: true, actor: 'bench', observers });
  if (r.outcome !== 'rotated') throw new Error(`rotation ended ${r.outcome}${r.error ? ` (${r.error.message})` : ''}`);
};
try {
  for (let i = 0; i < WARMUP; i++) await rotate();
  const profile = process.env.PROFILE ? new Session() : undefined;
  if (profile) {
    profile.connect();
    await profile.post('Profiler.enable');
    await profile.post('Profiler.start');
  }
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  for (let i = 0; i < N; i++) await rotate();
  const ms = (performance.now() - t0) / N;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / N;
  if (profile) {
    const { profile: p } = await profile.post('Profiler.stop');
    writeFileSync(process.env.PROFILE!, JSON.stringify(p));
    profile.disconnect();
  }
  console.log(
    `${ms.toFixed(2)} ms per rotation, ${cpuMs.toFixed(2)} ms CPU (process, all threads, the fake included), ` +
      `event loop busy ${(elu.utilization * 100).toFixed(0)} % (${N} rotations, ${floor ? 'the floor' : withObservers ? 'default observers' : 'no observers'})`,
  );
} finally {
  await openai.close();
  if (process.env.LOG === '1') {
    const lines = readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trimEnd().split('\n');
    const started = lines.findLastIndex((l) => l.includes('"rotation started"'));
    console.log(lines.slice(Math.max(0, started)).join('\n'));
  }
  rmSync(dir, { recursive: true, force: true });
}
