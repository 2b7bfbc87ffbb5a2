/**
 * Progress of long waits (verify, confirm at the health gates, verifyRevoked), for the CLI.
 *
 * The stages report every poll of a wait as a `wait` stage event with what they observed (the gate's
 * GateObservation text, e.g. "2/3 consumers on the new key") and the wait's absolute deadline.
 *   - On a TTY: one live line per waiting rotation at the bottom of stderr, redrawn at most 4 times a
 *     second and once a second for the time left. Everything else the CLI writes to stderr (log
 *     lines, messages) goes through the same `LiveArea`, which prints it above the live lines.
 *   - Off a TTY (CI, cron, containers): one `waiting` log line per rotation at most every
 *     `intervalMs` (default 30 s; KEYROTOR_PROGRESS_INTERVAL), the first one at once.
 * References and observations only, never a secret value (observations are secret-free by contract).
 */
import { systemClock, type Clock } from '../core/clock.ts';
import { formatDuration, parseDuration } from '../core/duration.ts';
import { KeyrotorError } from '../core/errors.ts';
import type { Logger } from '../core/ports.ts';
import type { RotationObserver } from './run.ts';

export const DEFAULT_PROGRESS_INTERVAL_MS = 30_000;

/**
 * The bottom of a terminal: `render` replaces the live lines in place; `print` writes other output
 * above them (erase the live lines, write the text, draw the live lines again, in one write).
 */
export interface LiveArea {
  print(text: string): void;
  render(lines: string[]): void;
}

export function liveArea(write: (s: string) => void): LiveArea {
  let shown: string[] = [];
  // back to the first live line, clear to the end of the screen
  const erase = () => (shown.length > 0 ? `\x1b[${shown.length}F\x1b[J` : '');
  const body = (lines: string[]) => lines.map((l) => l + '\n').join('');
  return {
    print(text) {
      if (shown.length === 0) return write(text);
      write(erase() + text + (text.endsWith('\n') ? '' : '\n') + body(shown));
    },
    render(lines) {
      const out = erase() + body(lines);
      shown = lines;
      if (out) write(out);
    },
  };
}

export interface ProgressOptions {
  /** live lines (true) or rate-limited log lines (false) */
  tty: boolean;
  /** where live lines go (stderr) */
  write: (s: string) => void;
  /** on a TTY: the live area shared with the rest of stderr (default: one over `write`) */
  area?: LiveArea;
  /** where log lines go */
  logger: Logger;
  /** off a TTY: at most one line per rotation per this many ms */
  intervalMs?: number;
  /** terminal width for live lines (default 120) */
  columns?: number;
  clock?: Clock;
}

interface Waiting {
  key: string;
  rotationId: string;
  stage: string;
  /** per gate ('' for verify / verifyRevoked): the last observation and deadline */
  waits: Map<string, { observation: string; deadline: number | undefined }>;
  lastLogged: number;
}

/** KEYROTOR_PROGRESS_INTERVAL (a duration such as 10s), else the default; a bad value is USAGE (exit 2). */
export function progressIntervalFrom(env: NodeJS.ProcessEnv): number {
  const raw = env.KEYROTOR_PROGRESS_INTERVAL;
  if (raw === undefined || raw === '') return DEFAULT_PROGRESS_INTERVAL_MS;
  const ms = parseDuration(raw);
  if (ms === undefined || ms <= 0)
    throw new KeyrotorError(
      'USAGE',
      `KEYROTOR_PROGRESS_INTERVAL must be a duration like 30s (got ${JSON.stringify(raw)})`,
    );
  return ms;
}

export function progressObserver(o: ProgressOptions): RotationObserver {
  const clock = o.clock ?? systemClock;
  const interval = o.intervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS;
  const waiting = new Map<string, Waiting>();
  const area = o.tty ? (o.area ?? liveArea(o.write)) : undefined;
  let lastDraw = 0;
  let pending: ReturnType<typeof setTimeout> | undefined;
  let ticker: ReturnType<typeof setInterval> | undefined;

  // time left first: a narrow terminal cuts the end of the line, i.e. the (long) observation
  const left = (deadline: number | undefined) =>
    deadline === undefined ? '' : `${formatDuration(Math.max(0, deadline - clock.now()))} left`;
  const describe = (w: Waiting) =>
    [...w.waits.entries()]
      .map(([gate, x]) => {
        const head = [gate, left(x.deadline)].filter(Boolean).join(', ');
        return `${head ? `[${head}] ` : ''}${x.observation}`;
      })
      .join('; ');

  function draw() {
    pending = undefined;
    lastDraw = clock.now();
    const width = Math.max(40, o.columns ?? 120);
    const lines = [...waiting.values()].map((w) => {
      const line = `… ${w.key} waiting at ${w.stage} ${describe(w)}`;
      return line.length > width - 1 ? line.slice(0, width - 2) + '…' : line;
    });
    area?.render(lines);
    if (waiting.size === 0 && ticker) {
      clearInterval(ticker);
      ticker = undefined;
    }
  }
  function scheduleDraw() {
    if (pending) return;
    pending = setTimeout(draw, Math.max(0, 250 - (clock.now() - lastDraw)));
    pending.unref();
    if (!ticker && waiting.size > 0) {
      ticker = setInterval(draw, 1000);
      ticker.unref();
    }
  }

  function ended(rotationId: string) {
    if (!waiting.delete(rotationId)) return;
    if (o.tty) {
      if (pending) clearTimeout(pending);
      draw(); // remove its line now
    }
  }

  return {
    onStage(key, rotationId, e) {
      if (e.phase !== 'wait') {
        ended(rotationId); // a stage started or finished: whatever was waited for is over
        return;
      }
      let w = waiting.get(rotationId);
      if (!w || w.stage !== e.stage) {
        w = { key, rotationId, stage: e.stage, waits: new Map(), lastLogged: 0 };
        waiting.set(rotationId, w);
      }
      w.waits.set(e.gate ?? '', { observation: e.observation ?? 'not done yet', deadline: e.deadline });
      if (o.tty) {
        scheduleDraw();
        return;
      }
      const now = clock.now();
      if (w.lastLogged !== 0 && now - w.lastLogged < interval) return;
      w.lastLogged = now;
      o.logger.info(
        {
          key,
          rotationId,
          stage: e.stage,
          waits: [...w.waits.entries()].map(([gate, x]) => ({
            ...(gate ? { gate } : {}),
            observation: x.observation,
            ...(x.deadline !== undefined
              ? { deadline: new Date(x.deadline).toISOString(), leftMs: Math.max(0, x.deadline - now) }
              : {}),
          })),
        },
        `waiting at ${e.stage} ${describe(w)}`,
      );
    },
    onResult(r) {
      if (r.rotationId) ended(r.rotationId);
    },
  };
}
