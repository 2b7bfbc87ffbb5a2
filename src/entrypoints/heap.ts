/**
 * Node heap flags for keyrotor's workers (`daemon`, `serve`, and `rotate` / `resume` with `--park`
 * but not `--leaked`), set where keyrotor starts
 * Node: the installed bin (bin/keyrotor.js), the CLI bundle (`dist/keyrotor.js`, the container image)
 * and `node src/entrypoints/cli.ts`. Not for the library: a program that calls `runCli()` or `main()`
 * keeps its own process as it is.
 *
 * Why (bench P5, docs/operations.md#worker-memory): what a worker keeps alive is small (~40 MB of
 * heap after a full GC with 1,000 rotations parked, ~5 KB per key), but on a host with a lot of
 * memory Node 24 gives the young generation two 64 MB semi-spaces and lets the old generation grow to
 * ~4x what survived the last full GC before collecting it, so a worker's RSS reached 280–340 MB. With
 * the young generation capped at 4 MB per semi-space and the old generation's limit at 1 GB (V8 then
 * lets the old generation grow to ~1.5x what survived instead of up to 4x, seen with --trace-gc; the
 * limit itself is far above what 1,000 keys need), the same workers peak at ~165–185 MB.
 *
 * V8 reads these flags only when the process starts, so the worker command starts Node again with them
 * (`process.execve`: the same process id, no parent left behind) before anything else runs. Flags the
 * operator set (NODE_OPTIONS, or node's own command line) win: then nothing is restarted. Where
 * `process.execve` does not exist (Windows, Node < 22.15) the worker runs with Node's defaults.
 */
import { getHeapStatistics } from 'node:v8';

/** the commands that start a long-running worker */
export const WORKER_COMMANDS: readonly string[] = ['daemon', 'serve'];
/**
 * the commands that run as a worker with `--park` (a scheduled `rotate --park` over many keys); not a
 * leak response (`--leaked`), whose start-up is on the leaked key's critical path
 */
export const PARKING_COMMANDS: readonly string[] = ['rotate', 'resume'];
/** young generation: MB per semi-space (Node 24's default on a large host: 64) */
export const WORKER_SEMI_SPACE_MB = 4;
/** old generation limit in MB, never above the one Node picked for this host (it follows a container's limit) */
export const WORKER_OLD_SPACE_MAX_MB = 1024;

/** the CLI's options that take a value (before the command) */
const GLOBAL_OPTIONS_WITH_VALUE = new Set(['-c', '--config', '--log-level']);

/** the command of a CLI argument list (`keyrotor -c x.yaml daemon --tick ...` -> `daemon`) */
export function commandOf(argv: readonly string[]): string | undefined {
  const at = commandAt(argv);
  return at === undefined ? undefined : argv[at];
}

function commandAt(argv: readonly string[]): number | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return i + 1 < argv.length ? i + 1 : undefined;
    if (GLOBAL_OPTIONS_WITH_VALUE.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    return i;
  }
  return undefined;
}

/** does this CLI run work as a worker: `daemon`, `serve`, or `rotate` / `resume` with `--park` (not `--leaked`)? */
export function isWorkerRun(argv: readonly string[]): boolean {
  const at = commandAt(argv);
  if (at === undefined) return false;
  const cmd = argv[at]!;
  const rest = argv.slice(at + 1);
  const end = rest.indexOf('--');
  const opts = end === -1 ? rest : rest.slice(0, end);
  if (opts.includes('-h') || opts.includes('--help')) return false;
  if (WORKER_COMMANDS.includes(cmd)) return true;
  return PARKING_COMMANDS.includes(cmd) && opts.includes('--park') && !opts.includes('--leaked');
}

const HEAP_FLAG = /(?:^|\s)--max[-_](?:semi[-_]space[-_]size|old[-_]space[-_]size)(?:[=\s]|$)/;

/** did the operator size the heap already (node's own arguments or NODE_OPTIONS)? */
export function heapFlagsGiven(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  return execArgv.some((a) => HEAP_FLAG.test(a)) || HEAP_FLAG.test(nodeOptions ?? '');
}

/**
 * the flags for a worker, given the heap limit Node chose for this host (bytes, young generation
 * included): the new limit (old + 3 semi-spaces) stays within it
 */
export function workerHeapFlags(heapSizeLimit: number = getHeapStatistics().heap_size_limit): string[] {
  const fits = Math.floor(heapSizeLimit / 2 ** 20) - 3 * WORKER_SEMI_SPACE_MB;
  const oldMB = Math.max(64, Math.min(WORKER_OLD_SPACE_MAX_MB, fits));
  return [`--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`, `--max-old-space-size=${oldMB}`];
}

/**
 * The arguments to start this worker again with the heap flags, or undefined when it runs as it is:
 * not a worker run (isWorkerRun), or heap flags given by the operator.
 */
export function relaunchArgs(p: {
  argv: readonly string[];
  execPath: string;
  execArgv: readonly string[];
  script: string | undefined;
  nodeOptions: string | undefined;
  heapSizeLimit?: number;
}): string[] | undefined {
  if (!p.script || !isWorkerRun(p.argv)) return undefined;
  if (heapFlagsGiven(p.execArgv, p.nodeOptions)) return undefined;
  return [p.execPath, ...workerHeapFlags(p.heapSizeLimit), ...p.execArgv, p.script, ...p.argv];
}

/**
 * For a worker run (`daemon`, `serve`, `rotate|resume --park`) started as a program: replace this process with Node started with the
 * worker heap flags (same pid, same arguments, environment and open stdio). Returns when it does
 * not apply or cannot (then the worker runs with Node's defaults).
 */
export function relaunchWorkerWithHeapFlags(argv: readonly string[] = process.argv.slice(2)): void {
  const execve = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
  if (typeof execve !== 'function') return;
  const args = relaunchArgs({
    argv,
    execPath: process.execPath,
    execArgv: process.execArgv,
    script: process.argv[1],
    nodeOptions: process.env.NODE_OPTIONS,
  });
  if (!args) return;
  try {
    execve.call(process, process.execPath, args, process.env);
  } catch {
    // could not start Node again (e.g. a sandbox forbids exec): run with Node's defaults
  }
}
