/**
 * A keyrotor process for P3 and P5, forked by the bench: it runs only what the CLI's `rotate` runs
 * (config, file state store, JSON logs at info level to a file, default observers, `rotateKeys` with
 * bounded concurrency), so its wall time and memory are keyrotor's alone; the fakes live in the parent.
 *
 * IPC: { cmd: 'run', config, logFile, concurrency, holdStage?, holdCount? } -> { type: 'held' } once
 * `holdCount` rotations have started `holdStage`, then { type: 'done', ... } at the end;
 * { cmd: 'report' } -> { type: 'memory', ... }; { cmd: 'snapshot', file } -> { type: 'snapshot' } (a V8 heap
 * snapshot, to see where the memory goes); { cmd: 'exit' } ends the process (held rotations stay
 * unfinished in the temp state dir, which the bench deletes).
 */
import { writeHeapSnapshot } from 'node:v8';
import { loadConfig } from '../../src/app/config/load.ts';
import { createFileStateStore, createStateStore } from '../../src/app/state/index.ts';
import { rotateKey, rotateKeys, type KeyResult, type RotateOptions, type RotationObserver } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { sharedLimiterStats } from '../../providers/issuers/openai/openai.ratelimit.ts';
import { fileLogger } from './util.ts';

interface RunCmd {
  cmd: 'run';
  config: string;
  logFile: string;
  concurrency: number;
  holdStage?: string;
  holdCount?: number;
  /**
   * experiment (BENCH_P5_STAGGER): start rotations one by one so that at most this many are between
   * their start and `holdStage` at any time, as a semaphore around the active stages would; rotations
   * waiting at the gate do not count. Emulated with rotateKey + observers, keyrotor itself unchanged.
   */
  stagger?: number;
  /**
   * P3 fleet: the config's state backend (e.g. PostgreSQL) instead of the file state store, and a
   * scheduled run (keys claimed as they are due) instead of `--now`
   */
  fleet?: boolean;
}
type Cmd = RunCmd | { cmd: 'report' } | { cmd: 'snapshot'; file: string } | { cmd: 'exit' };

const send = (m: unknown) => process.send?.(m);

function memory() {
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapTotal: m.heapTotal,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    maxRssKB: process.resourceUsage().maxRSS,
  };
}

async function run(c: RunCmd): Promise<void> {
  const config = await loadConfig(c.config, process.env);
  const logger = await fileLogger(c.logFile);
  const stateStore = c.fleet ? createStateStore(config, process.env) : createFileStateStore(config.stateDir);
  const started = new Set<string>();
  let heldSent = false;
  const t0 = performance.now();
  const hold: RotationObserver = {
    onStage(_key, rotationId, e) {
      if (!c.holdStage || e.stage !== c.holdStage || e.phase !== 'start') return;
      started.add(rotationId);
      if (!heldSent && started.size >= (c.holdCount ?? Number.POSITIVE_INFINITY)) {
        heldSent = true;
        send({
          type: 'held',
          n: started.size,
          atMs: performance.now() - t0,
          cpu: process.cpuUsage(),
          memory: memory(),
        });
      }
    },
  };
  const opts: RotateOptions = {
    config,
    stateStore,
    logger,
    env: process.env,
    now: !c.fleet,
    actor: 'bench',
    concurrency: c.concurrency,
    observers: [...defaultObservers({ config, logger, actor: 'bench', ...(c.fleet ? { stateStore } : {}) }), hold],
  };
  let results: KeyResult[];
  if (c.stagger && c.holdStage) {
    // at most `stagger` rotations between start and the hold; the next starts when one gets there
    const keys = [...config.keys];
    const all: Promise<KeyResult>[] = [];
    const reached = new Set<string>();
    let active = 0;
    const launch = () => {
      while (active < c.stagger! && keys.length) {
        active++;
        let counted = true;
        const release = () => {
          if (!counted) return;
          counted = false;
          active--;
          launch();
        };
        const gate: RotationObserver = {
          onStage(_k, rotationId, e) {
            if (e.stage === c.holdStage && e.phase === 'start' && !reached.has(rotationId)) {
              reached.add(rotationId);
              release();
            }
          },
        };
        all.push(rotateKey(keys.shift()!, { ...opts, observers: [...opts.observers!, gate] }).finally(release));
      }
    };
    launch();
    results = await Promise.all(all);
  } else {
    results = await rotateKeys(config.keys, opts);
  }
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
