/**
 * A helper for work on the file state backend's hot path (not part of `npm run bench`): N full
 * rotations as P1 per state backend runs them (OpenAI fake, the file secret store, one
 * `issuer-smoke-test` gate, the default observers, state and audit trail in the file backend), then
 * either the wall time per rotation or the file operations per rotation, by call site.
 *
 *   node bench/lib/fs-ops.ts              # ms (wall, and CPU of the process) per rotation (N=50 after 5 warm-up rotations)
 *   FS_OPS=1 N=10 node bench/lib/fs-ops.ts # fs/promises calls and FileHandle methods per rotation,
 *                                          # grouped by operation and the first keyrotor frames
 *   NOOBS=1 ...                            # without observers (no audit trail, no metrics)
 *
 * Counting wraps `fs/promises`, the synchronous calls of `fs` the hot path makes (published to ES module
 * importers with syncBuiltinESMExports, as fs-counter.ts does) and FileHandle's prototype (closes are
 * not counted), so it sees what keyrotor
 * asks for, not the system calls each becomes (`strace -f -c` shows those). Benchmark only.
 */
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { rotateKey } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { fileLogger, p1Yaml } from './util.ts';

const require = createRequire(import.meta.url);
const counts = new Map<string, number>();
let counting = false;

/** the operation and up to three keyrotor frames that asked for it */
function site(op: string): string {
  const frames = (new Error().stack ?? '')
    .split('\n')
    .slice(3)
    .filter((l) => /\/(src|providers|workflows)\//.test(l))
    .slice(0, 3)
    .map((l) =>
      l
        .trim()
        .replace(/^at (async )?/, '')
        .replace(/\(?file:\/\/.*?\/(src|providers|workflows)\//, '$1/')
        .replace(/\)$/, ''),
    );
  return `${op} @ ${frames.join(' < ')}`;
}

async function installCounter(): Promise<void> {
  const fsp = require('node:fs/promises') as Record<string, unknown>;
  const wrap = (target: Record<string, unknown>, name: string, label: string) => {
    const orig = target[name];
    if (typeof orig !== 'function') return;
    target[name] = function (this: unknown, ...args: unknown[]) {
      if (counting) {
        const k = site(label);
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      return (orig as (...a: unknown[]) => unknown).apply(this, args);
    };
  };
  for (const n of ['open', 'readFile', 'writeFile', 'appendFile', 'stat', 'lstat', 'mkdir', 'rename', 'rm'])
    wrap(fsp, n, n);
  for (const n of ['unlink', 'link', 'symlink', 'readlink', 'readdir', 'truncate', 'access']) wrap(fsp, n, n);
  // the direct (synchronous) system calls the hot path makes (core/fs.ts writeAllSync)
  const fs = require('node:fs') as Record<string, unknown>;
  for (const n of ['statSync', 'symlinkSync', 'unlinkSync', 'openSync', 'writeSync', 'renameSync', 'readFileSync'])
    wrap(fs, n, n);
  syncBuiltinESMExports();
  const probe = await (fsp.open as typeof import('node:fs/promises').open)(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as Record<string, unknown>;
  await probe.close();
  for (const n of ['stat', 'read', 'write', 'sync', 'datasync', 'readFile', 'writeFile', 'truncate'])
    wrap(proto, n, `fh.${n}`);
}

const N = Number(process.env.N ?? 50);
const countOps = process.env.FS_OPS === '1';
if (countOps) await installCounter();

const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-fs-ops-'));
const openai = await startOpenAIFake({ projects: ['proj_bench'] });
const env = { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };
const sa = openai.state.addServiceAccount('sa').id;
const yaml = p1Yaml({ baseURL: openai.baseURL, keys: [{ name: 'fs-ops', serviceAccount: sa }] });
const file = path.join(dir, 'rotation.config.yaml');
writeFileSync(file, yaml);
const config = parseConfig(yaml, file, env);
const stateStore = createStateStore(config, env);
await stateStore.init?.();
const logger = await fileLogger(path.join(dir, 'log.jsonl'));
const withObservers = !process.env.NOOBS;
const rotate = async () => {
  const observers = withObservers ? defaultObservers({ config, logger, actor: 'bench', env, stateStore }) : [];
  const r = await rotateKey(config.keys[0]!, { config, stateStore, logger, env, now: true, actor: 'bench', observers });
  if (r.outcome !== 'rotated') throw new Error(`rotation ended ${r.outcome}`);
};
try {
  for (let i = 0; i < 5; i++) await rotate();
  counting = countOps;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < N; i++) await rotate();
  const ms = (performance.now() - t0) / N;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / N;
  counting = false;
  const what = `${N} rotations, ${withObservers ? 'default observers' : 'no observers'}`;
  if (!countOps)
    console.log(`${ms.toFixed(2)} ms per rotation, ${cpuMs.toFixed(2)} ms CPU (process, all threads) (${what})`);
  else {
    let total = 0;
    for (const [k, v] of [...counts].sort((a, b) => b[1] - a[1])) {
      total += v;
      console.log(`${(v / N).toFixed(1).padStart(6)}  ${k}`);
    }
    console.log(`${(total / N).toFixed(1)} file operations per rotation (${what})`);
  }
} finally {
  await stateStore.close?.();
  await openai.close();
  rmSync(dir, { recursive: true, force: true });
}
