/**
 * Ctrl-C (SIGINT) and SIGTERM during `rotate` / `resume`.
 *
 * First signal: the rotations pause at the next safe point (a wait is cut short at once; a stage that
 * is talking to a provider finishes first), the state is saved and the lease released: the result is
 * `in_progress`, and the process exits with EXIT_INTERRUPTED once everything is written. No new
 * rotation starts.
 * Second signal: exit at once (130 for SIGINT, 143 for SIGTERM). The lease is NOT released: a run on
 * this host takes it over at once (the holder is provably gone), elsewhere after defaults.lease.ttl.
 */
import type { KeyResult } from '../../app/run.ts';
import type { CliIO } from './context.ts';

/** paused by SIGINT/SIGTERM: state saved, lease released; `keyrotor resume <key>` continues */
export const EXIT_INTERRUPTED = 5;
const EXIT_AT_ONCE: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export interface Interrupts {
  readonly signal: AbortSignal;
  /** the first signal received, if any */
  readonly received: string | null;
  /** stop listening (call in finally) */
  dispose(): void;
  /** after the run: the message to print and the exit code, when a signal paused something */
  report(results: KeyResult[]): { message: string; exitCode: number } | null;
}

export interface InterruptOptions {
  io: CliIO;
  /** the keys being rotated, for the messages */
  keys: string[];
  /** exit at once (tests replace it); default process.exit */
  exitNow?: (code: number) => void;
}

export function handleInterrupts(o: InterruptOptions): Interrupts {
  const ctrl = new AbortController();
  let received: string | null = null;
  const keys = o.keys.join(' ');
  const exitNow = o.exitNow ?? ((code: number) => process.exit(code));
  const on = (sig: 'SIGINT' | 'SIGTERM') => () => {
    if (received === null) {
      received = sig;
      o.io.stderr(
        `keyrotor: ${sig}: pausing at the next safe point (a wait stops now; a call to a provider finishes first), ` +
          `then saving the state and releasing the lock. ${sig === 'SIGINT' ? 'Press Ctrl-C again' : 'Send it again'} ` +
          `to exit at once (the lock then stays until a run on this host sees this process is gone, or its lease expires).\n`,
      );
      ctrl.abort(new Error(`interrupted by ${sig}`));
      return;
    }
    o.io.stderr(
      `keyrotor: ${sig} again: exiting now; the lock of ${keys} stays held by this (now gone) process. ` +
        `\`keyrotor resume ${keys}\` on this host continues at once; elsewhere it waits for defaults.lease.ttl.\n`,
    );
    exitNow(EXIT_AT_ONCE[sig] ?? 130);
  };
  const int = on('SIGINT');
  const term = on('SIGTERM');
  process.on('SIGINT', int);
  process.on('SIGTERM', term);
  return {
    signal: ctrl.signal,
    get received() {
      return received;
    },
    dispose() {
      process.off('SIGINT', int);
      process.off('SIGTERM', term);
    },
    report(results) {
      if (received === null) return null;
      const paused = results.filter((r) => r.outcome === 'in_progress');
      if (paused.length === 0) return null; // everything finished anyway: the usual exit code
      const names = paused.map((r) => r.key).join(' ');
      const where = paused.map((r) => `${r.key} at ${r.stage ?? 'the next stage'}`).join(', ');
      return {
        exitCode: EXIT_INTERRUPTED,
        message:
          `keyrotor: interrupted (${received}): paused ${where}; the state is saved and the lock released. ` +
          `Continue with \`keyrotor resume ${names}\` (deadlines already set, e.g. of a gate, keep running).\n`,
      };
    },
  };
}
