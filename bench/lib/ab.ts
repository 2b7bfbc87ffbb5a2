/**
 * Before/after for work on the hot path (not part of `npm run bench`): a full P1 rotation of two
 * checkouts of keyrotor, this one and `BASE` (another checkout with its own node_modules or a link to
 * these), run in one process and interleaved rotation by rotation together with the floor, against one
 * OpenAI fake: both see the same machine load, which separate bench runs on a shared machine do not.
 * Each checkout runs its own code (modules load once per file path); the packages in node_modules are
 * shared when the paths resolve to the same files.
 *
 *   BASE=/tmp/keyrotor-main node bench/lib/ab.ts              # R=300 rotations each, after 30 warm-up rounds
 *   TMPDIR=/dev/shm BASE=... node bench/lib/ab.ts             # secrets files on tmpfs: CPU only
 *   STATE=file BASE=... node bench/lib/ab.ts                  # P1 as the CLI runs it: the file state
 *                                                             # backend and the default observers
 *
 * Without STATE=file: P1's "state in memory" variant (no observers). Prints the median and first
 * quartile of the wall time per rotation, the process CPU per rotation (the in-process fake included)
 * and the ratio to the floor's median. Benchmark only.
 */
import path from 'node:path';
import os from 'node:os';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import type { ResolvedKey } from '../../src/app/config/schema.ts';
import type { KeyResult, RotateOptions } from '../../src/app/run.ts';
import { fileFloor, floorRotation, floorSeed } from './floor.ts';
import { p1Yaml } from './util.ts';

const here = fileURLToPath(new URL('../..', import.meta.url));
const base = process.env.BASE ? path.resolve(process.env.BASE) : undefined;
if (!base) {
  console.error('ab: set BASE to the other checkout (e.g. `git worktree add /tmp/keyrotor-main main`)');
  process.exit(2);
}
const R = Number(process.env.R ?? 300);
const FILE_STATE = process.env.STATE === 'file';
const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-ab-'));
const openai = await startOpenAIFake({ projects: ['proj_bench'] });
const env = { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };

/** one checkout's rotation (its own config, state store, logger and key) */
async function variant(root: string, name: string): Promise<() => Promise<void>> {
  const load = (f: string) => import(path.join(root, f));
  const { parseConfig } = (await load('src/app/config/load.ts')) as {
    parseConfig: (y: string, f: string, e: NodeJS.ProcessEnv) => { keys: ResolvedKey[] };
  };
  const { rotateKey } = (await load('src/app/run.ts')) as {
    rotateKey: (k: ResolvedKey, o: RotateOptions) => Promise<KeyResult>;
  };
  const { memoryStateStore } = (await load('bench/lib/memory-state.ts')) as {
    memoryStateStore: () => RotateOptions['stateStore'];
  };
  const { createStateStore } = (await load('src/app/state/index.ts')) as {
    createStateStore: (c: unknown, e: NodeJS.ProcessEnv) => RotateOptions['stateStore'];
  };
  const { defaultObservers } = (await load('src/app/observers.ts')) as {
    defaultObservers: (o: Record<string, unknown>) => RotateOptions['observers'];
  };
  const { fileLogger } = (await load('bench/lib/util.ts')) as {
    fileLogger: (f: string) => Promise<RotateOptions['logger']>;
  };
  const sa = openai.state.addServiceAccount(name).id;
  const yaml = p1Yaml({
    baseURL: openai.baseURL,
    head: `stateDir: ${JSON.stringify(path.join(dir, name))}`,
    keys: [{ name, serviceAccount: sa }],
  });
  mkdirSync(path.join(dir, name), { recursive: true });
  const file = path.join(dir, name, 'rotation.config.yaml');
  writeFileSync(file, yaml);
  const config = parseConfig(yaml, file, env);
  const stateStore = FILE_STATE ? createStateStore(config, env) : memoryStateStore();
  await stateStore.init?.();
  const logger = await fileLogger(path.join(dir, name, 'log.jsonl'));
  const o = { config, stateStore, logger, env, now: true, actor: 'bench', observers: [] } as unknown as RotateOptions;
  return async () => {
    // the observers are made per run, as the CLI makes them
    if (FILE_STATE) o.observers = defaultObservers({ config, logger, actor: 'bench', env, stateStore });
    const r = await rotateKey(config.keys[0]!, o);
    if (r.outcome !== 'rotated') throw new Error(`${name}: rotation ended ${r.outcome} ${r.error?.message ?? ''}`);
  };
}

const floorIssuer = {
  baseURL: openai.baseURL,
  adminKey: openai.adminKey,
  project: 'proj_bench',
  serviceAccount: openai.state.addServiceAccount('floor').id,
  expiresInSeconds: 1000,
  timeoutMs: 10_000,
};
mkdirSync(path.join(dir, 'floor'));
const floorStore = fileFloor(path.join(dir, 'floor'), 'floor', 'cd'.repeat(32));
let n = 0;
try {
  await floorSeed(floorIssuer, floorStore);
  const runs: Record<string, () => Promise<void>> = {
    base: await variant(base, 'base'),
    this: await variant(here, 'this'),
    floor: () => floorRotation(floorIssuer, floorStore, ++n),
  };
  const names = Object.keys(runs);
  const ms: Record<string, number[]> = Object.fromEntries(names.map((k) => [k, []]));
  const cpu: Record<string, number> = Object.fromEntries(names.map((k) => [k, 0]));
  for (let i = 0; i < 30; i++) for (const k of names) await runs[k]!();
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < names.length; j++) {
      const k = names[(i + j) % names.length]!;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await runs[k]!();
      ms[k]!.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[k]! += (c.user + c.system) / 1000;
    }
  }
  const at = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * q)]!;
  for (const k of names)
    console.log(
      `${k.padEnd(6)} median ${at(ms[k]!, 0.5).toFixed(2)} ms  p25 ${at(ms[k]!, 0.25).toFixed(2)} ms  ` +
        `cpu ${(cpu[k]! / R).toFixed(2)} ms  ratio ${(at(ms[k]!, 0.5) / at(ms.floor!, 0.5)).toFixed(2)}`,
    );
} finally {
  await openai.close();
  rmSync(dir, { recursive: true, force: true });
}
