/**
 * Before/after for work on the workflow's own hot path (not part of `npm run bench`): P1's "state in
 * memory" variant of two checkouts of keyrotor, this one and `BASE` (another checkout with its own
 * node_modules or a link to these), run in one process and interleaved rotation by rotation together
 * with the floor, against one OpenAI fake: both see the same machine load, which separate bench runs on
 * a shared machine do not. Each checkout runs its own code (modules load once per file path); the
 * packages in node_modules are shared when the paths resolve to the same files.
 *
 *   BASE=/tmp/keyrotor-main node bench/lib/mem-ab.ts        # R=300 rotations each, after 30 warm-up rounds
 *   TMPDIR=/dev/shm BASE=... node bench/lib/mem-ab.ts       # secrets files on tmpfs: CPU only
 *
 * Prints the median and first quartile of the wall time per rotation, the process CPU per rotation
 * (the in-process fake included) and the ratio to the floor's median. Benchmark only.
 */
import path from 'node:path';
import os from 'node:os';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import type { ResolvedKey } from '../../src/app/config/schema.ts';
import type { KeyResult, RotateOptions } from '../../src/app/run.ts';
import { fileFloor, floorRotation, floorSeed } from './floor.ts';

const here = fileURLToPath(new URL('../..', import.meta.url));
const base = process.env.BASE ? path.resolve(process.env.BASE) : undefined;
if (!base) {
  console.error('mem-ab: set BASE to the other checkout (e.g. `git worktree add /tmp/keyrotor-main main`)');
  process.exit(2);
}
const R = Number(process.env.R ?? 300);
const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-mem-ab-'));
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
  const { fileLogger } = (await load('bench/lib/util.ts')) as {
    fileLogger: (f: string) => Promise<RotateOptions['logger']>;
  };
  const sa = openai.state.addServiceAccount(name).id;
  const yaml = `version: 1
stateDir: ${JSON.stringify(path.join(dir, name))}
defaults:
  verify: { timeout: 10s, interval: 100ms }
  verifyRevoked: { timeout: 10s, interval: 100ms }
  revoke: { attempts: 3, backoff: 100ms }
keys:
  - name: ${name}
    issuer: { type: openai, project: proj_bench, serviceAccount: ${sa}, baseURL: "${openai.baseURL}", timeout: 10s, rateLimit: 10000 }
    stores:
      - { type: file }
    health:
      - { type: issuer-smoke-test, timeout: 10s, interval: 100ms }
`;
  mkdirSync(path.join(dir, name), { recursive: true });
  const file = path.join(dir, name, 'rotation.config.yaml');
  writeFileSync(file, yaml);
  const config = parseConfig(yaml, file, env);
  const o = {
    config,
    stateStore: memoryStateStore(),
    logger: await fileLogger(path.join(dir, name, 'log.jsonl')),
    env,
    now: true,
    actor: 'bench',
    observers: [],
  } as unknown as RotateOptions;
  return async () => {
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
