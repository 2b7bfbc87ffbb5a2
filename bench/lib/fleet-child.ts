/**
 * A keyrotor process for P3 and P5, forked by the bench: it runs only what the CLI's `rotate` runs
 * (config, file state store, JSON logs at info level to a file, default observers, `rotateKeys` with
 * bounded concurrency), so its wall time and memory are keyrotor's alone; the fakes live in the parent.
 *
 * IPC: { cmd: 'run', config, logFile, concurrency, now?, park?, wake?, fleet? } -> { type: 'done', ... } at the
 * end; { cmd: 'report' } -> { type: 'memory', ... }; { cmd: 'snapshot', file } -> { type: 'snapshot' } (a V8
 * heap snapshot, to see where the memory goes); { cmd: 'exit' } ends the process (parked rotations stay
 * unfinished in the temp state dir, which the bench deletes).
 */
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { loadConfig } from '../../src/app/config/load.ts';
import { createFileStateStore, createStateStore } from '../../src/app/state/index.ts';
import { rotateKeys, type KeyResult, type RotateOptions } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { sharedLimiterStats } from '../../providers/issuers/openai/openai.ratelimit.ts';
import { fileLogger } from './util.ts';

interface RunCmd {
  cmd: 'run';
  config: string;
  logFile: string;
  concurrency: number;
  /** RotateOptions.now (default true) */
  now?: boolean;
  /** durable waits: park rotations at a long gate wait (as daemon, serve and Lambda do) */
  park?: boolean;
  /** continue parked rotations now, before their wake time (`resume --now`) */
  wake?: boolean;
  /**
   * P3 fleet: the config's state backend (e.g. PostgreSQL) instead of the file state store, and a
   * scheduled run (keys claimed as they are due) instead of `--now`
   */
  fleet?: boolean;
}
type Cmd = RunCmd | { cmd: 'report' } | { cmd: 'snapshot'; file: string } | { cmd: 'exit' };

const send = (m: unknown) => process.send?.(m);

function memory() {
  // with BENCH_CHILD_NODE_OPTIONS=--expose-gc: what survives a full GC (what the process retains)
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapTotal: m.heapTotal,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    maxRssKB: process.resourceUsage().maxRSS,
    // per V8 heap space: committed size and what is used (new_space = the young generation)
    spaces: Object.fromEntries(
      getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]),
    ),
  };
}

async function run(c: RunCmd): Promise<void> {
  const config = await loadConfig(c.config, process.env);
  const logger = await fileLogger(c.logFile);
  const stateStore = c.fleet ? createStateStore(config, process.env) : createFileStateStore(config.stateDir);
  const t0 = performance.now();
  const opts: RotateOptions = {
    config,
    stateStore,
    logger,
    env: process.env,
    now: c.fleet ? false : (c.now ?? true),
    ...(c.park ? { park: true } : {}),
    ...(c.wake ? { wake: true } : {}),
    actor: 'bench',
    concurrency: c.concurrency,
    observers: defaultObservers({ config, logger, actor: 'bench', ...(c.fleet ? { stateStore } : {}) }),
  };
  const results: KeyResult[] = await rotateKeys(config.keys, opts);
  const wallMs = performance.now() - t0;
  const outcomes: Record<string, number> = {};
  for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
  const errors: Record<string, number> = {};
  for (const r of results)
    if (r.error)
      errors[`${r.error.code} at ${r.error.stage ?? '?'}`] =
        (errors[`${r.error.code} at ${r.error.stage ?? '?'}`] ?? 0) + 1;
  const firstError = results.find((r) => r.error)?.error;
  send({
    type: 'done',
    wallMs,
    keys: results.length,
    outcomes,
    errors,
    firstError: firstError ? `${firstError.code}: ${firstError.message}` : null,
    limiters: sharedLimiterStats(),
    memory: memory(),
    cpu: process.cpuUsage(),
  });
}

process.on('message', (m: Cmd) => {
  if (m.cmd === 'report') send({ type: 'memory', memory: memory() });
  // for finding where the memory goes: a V8 heap snapshot of this process (not used by the bench itself)
  if (m.cmd === 'snapshot') send({ type: 'snapshot', file: writeHeapSnapshot(m.file) });
  if (m.cmd === 'exit') process.exit(0);
  if (m.cmd === 'run') {
    run(m).catch((e: unknown) => {
      send({ type: 'error', message: e instanceof Error ? e.message : String(e) });
    });
  }
});
send({ type: 'ready' });
