/**
 * `keyrotor daemon`: a long-running scheduler, a thin adapter over run.ts.
 *
 * A tick (a cron pattern, croner; default every 5 minutes) runs `rotateKeys` over every configured key:
 * unfinished rotations resume first, then each key whose `schedule.every` has passed rotates (the same
 * rule as `keyrotor rotate`). Each tick waits a random jitter first, so many daemons (or a fleet of
 * keys shared by several) do not hit the issuer at the same second. Runs never overlap: a tick that
 * fires while the previous run is still going is skipped. By default one run starts immediately, so a
 * restarted daemon finishes what the previous one left.
 *
 * Durable waits: the daemon parks (RotateOptions `park`): a rotation whose next health-gate check is at
 * least `defaults.park.after` away is saved with its wake time and its lease released, not held in
 * memory. After each run the daemon sets one timer for the earliest wake time among the parked
 * rotations it saw; when that comes before the next tick, a run starts then (without jitter).
 *
 * Stopping (SIGTERM/SIGINT in the command): no new tick starts; the running rotations stop at the next
 * safe point (a stage talking to a provider finishes, a wait is cut short), their snapshots stay in the
 * state store as `in_progress`, and the next start resumes them.
 */
import { Cron } from 'croner';
import type { LoadedConfig } from '../app/config/load.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import type { Logger, StateStore } from '../core/ports.ts';
import { defaultObservers } from '../app/observers.ts';
import { rotateKeys, type KeyResult, type RotationObserver } from '../app/run.ts';

export const DEFAULT_TICK = '*/5 * * * *';
export const DEFAULT_JITTER_MS = 30_000;

export interface DaemonOptions {
  config: LoadedConfig;
  stateStore: StateStore;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** cron pattern of the tick (5 or 6 fields); default every 5 minutes */
  tick?: string;
  /** IANA time zone for the pattern (default: the host's) */
  timezone?: string;
  /** each run waits a random 0..jitter ms first (default 30s) */
  jitterMs?: number;
  /** run once right away (default true) */
  runAtStart?: boolean;
  /** keys rotated at the same time */
  concurrency?: number;
  /** more observers besides the default ones (tests, embedding) */
  observers?: RotationObserver[];
  /** told after every finished run */
  onRun?(run: DaemonRun): void;
  /** told when a tick is skipped because the previous run is still going */
  onSkip?(at: Date): void;
  /** default Math.random */
  random?: () => number;
}

export interface DaemonRun {
  startedAt: string;
  finishedAt: string;
  results: KeyResult[];
  /** a run that failed as a whole (e.g. a missing env var); the daemon keeps ticking */
  error?: ReturnType<KeyrotorError['toRecord']>;
}

export interface Daemon {
  /** start a run now; null when one is already running (no overlap) or the daemon is stopping */
  runNow(): Promise<DaemonRun | null>;
  /** stop ticking, pause the running rotations at a safe point, wait for them */
  stop(reason?: string): Promise<void>;
  /** resolves once stopped */
  readonly done: Promise<void>;
  readonly running: boolean;
  nextRun(): Date | null;
}

/** Throws USAGE when the pattern or time zone is not valid. */
export function validateTick(pattern: string, timezone?: string): void {
  try {
    new Cron(pattern, { paused: true, ...(timezone ? { timezone } : {}) }).stop();
  } catch (e) {
    throw new KeyrotorError(
      'USAGE',
      `invalid tick "${pattern}"${timezone ? ` in time zone ${timezone}` : ''}: ${(e as Error).message}`,
      {
        hint: 'a cron pattern such as "*/5 * * * *" (every 5 minutes)',
      },
    );
  }
}

export function startDaemon(o: DaemonOptions): Daemon {
  const clock = o.clock ?? systemClock;
  const tick = o.tick ?? DEFAULT_TICK;
  const jitterMs = Math.max(0, o.jitterMs ?? DEFAULT_JITTER_MS);
  const random = o.random ?? Math.random;
  const log = o.logger.child({ entry: 'daemon' });
  validateTick(tick, o.timezone);

  const stopping = new AbortController();
  let current: Promise<DaemonRun> | null = null;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));

  let wakeTimer: NodeJS.Timeout | undefined;
  /** a run when the earliest parked rotation wakes, if that is before the next tick */
  function scheduleWake(results: KeyResult[]) {
    if (wakeTimer) clearTimeout(wakeTimer);
    wakeTimer = undefined;
    const times = results
      .filter((r) => r.outcome === 'waiting' && r.wakeAt)
      .map((r) => Date.parse(r.wakeAt!))
      .filter(Number.isFinite);
    if (times.length === 0 || stopping.signal.aborted) return;
    const at = Math.min(...times);
    const next = job.nextRun()?.getTime();
    if (next !== undefined && next <= at) return; // the tick comes first
    // (setTimeout's limit is ~24.8 days; a later wake is picked up by a tick before that)
    const ms = Math.min(Math.max(0, at - clock.now()) + 50, 2 ** 31 - 1);
    log.debug({ wakeAt: new Date(at).toISOString() }, 'next run when the earliest parked rotation wakes');
    wakeTimer = setTimeout(() => {
      wakeTimer = undefined;
      void runNow({ jitter: false });
    }, ms);
  }

  async function run(o2: { jitter: boolean }): Promise<DaemonRun> {
    const startedAt = new Date(clock.now()).toISOString();
    try {
      const wait = jitterMs > 0 && o2.jitter ? Math.floor(random() * jitterMs) : 0;
      if (wait > 0) {
        log.debug({ ms: wait }, 'jitter');
        await clock.sleep(wait, stopping.signal).catch(() => {});
      }
      if (stopping.signal.aborted) return { startedAt, finishedAt: new Date(clock.now()).toISOString(), results: [] };
      const results = await rotateKeys(o.config.keys, {
        config: o.config,
        stateStore: o.stateStore,
        logger: log,
        clock,
        actor: 'daemon',
        signal: stopping.signal,
        park: true,
        observers: [
          ...defaultObservers({ config: o.config, logger: log, actor: 'daemon', stateStore: o.stateStore }),
          ...(o.observers ?? []),
        ],
        ...(o.env ? { env: o.env } : {}),
        ...(o.concurrency ? { concurrency: o.concurrency } : {}),
      });
      const counts: Record<string, number> = {};
      for (const r of results) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1;
      log.info({ ...counts }, 'run finished');
      return { startedAt, finishedAt: new Date(clock.now()).toISOString(), results };
    } catch (e) {
      const err = toKeyrotorError(e);
      log.error({ err: err.toRecord() }, `run failed: ${err.message}`);
      return { startedAt, finishedAt: new Date(clock.now()).toISOString(), results: [], error: err.toRecord() };
    }
  }

  function runNow(how: { jitter: boolean } = { jitter: true }): Promise<DaemonRun | null> {
    if (stopping.signal.aborted) return Promise.resolve(null);
    if (current) {
      const at = new Date(clock.now());
      log.warn({ at: at.toISOString() }, 'the previous run is still going: tick skipped');
      o.onSkip?.(at);
      return Promise.resolve(null);
    }
    const p = run(how).then((r) => {
      current = null;
      scheduleWake(r.results);
      try {
        o.onRun?.(r);
      } catch {
        // a listener's failure is not the daemon's
      }
      return r;
    });
    current = p;
    return p;
  }

  const job = new Cron(tick, { ...(o.timezone ? { timezone: o.timezone } : {}) }, () => {
    void runNow();
  });
  log.info(
    { tick, timezone: o.timezone ?? null, jitterMs, next: job.nextRun()?.toISOString() ?? null },
    'daemon started',
  );
  if (o.runAtStart !== false) void runNow();

  let stopped: Promise<void> | undefined;
  return {
    runNow,
    done,
    get running() {
      return current !== null;
    },
    nextRun: () => job.nextRun(),
    stop(reason = 'stop') {
      stopped ??= (async () => {
        log.info({ reason, running: current !== null }, 'stopping: running rotations pause at the next safe point');
        job.stop();
        stopping.abort();
        if (wakeTimer) clearTimeout(wakeTimer);
        if (current) await current;
        log.info({}, 'daemon stopped');
        resolveDone();
      })();
      return stopped;
    },
  };
}
