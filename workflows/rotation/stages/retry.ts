/** Retry and poll helpers of the stages: backoff with jitter for writes, deadline polling for waits. */
import type { Clock } from '../../../src/core/clock.ts';
import { toKeyrotorError, type KeyrotorError } from '../../../src/core/errors.ts';

/**
 * Calls `attempt` until it is done, says its observation is final, or `deadline` (ms since epoch)
 * passes; the interval grows from `intervalMs` up to 4x (at least 1s). Throws `onTimeout(last)`.
 */
export async function pollUntil<T>(
  clock: Clock,
  deadline: number,
  intervalMs: number,
  signal: AbortSignal,
  attempt: () => Promise<{ done: true; value: T } | { done: false; observation: string; final?: boolean }>,
  onTimeout: (last: string) => KeyrotorError,
): Promise<T> {
  let last = 'not checked yet';
  let delay = Math.max(50, intervalMs);
  for (;;) {
    const r = await attempt();
    if (r.done) return r.value;
    last = r.observation;
    if (r.final) throw onTimeout(last);
    const left = deadline - clock.now();
    if (left <= 0) throw onTimeout(last);
    await clock.sleep(Math.min(delay, left), signal);
    delay = Math.min(delay * 1.5, Math.max(intervalMs * 4, 1000));
  }
}

/**
 * `fn` until it succeeds or fails for good: a retryable error (`retryOn`) is tried again with
 * exponential backoff and full jitter (250 ms doubling, at most 5 s) — at least `attempts` tries in
 * all, and beyond that for as long as the next try starts within `budgetMs` of the first (0: attempts
 * only). `fn` gets the attempt number (0 first). A non-retryable error, or a retryable one once both
 * are spent, is thrown as it came. `signal` (the stage's) cuts a backoff short.
 */
export async function withRetries<T>(
  clock: Clock,
  attempts: number,
  fn: (attempt: number) => Promise<T>,
  retryOn: (e: KeyrotorError) => boolean = (e) => e.retryable,
  budgetMs = 0,
  signal?: AbortSignal,
): Promise<T> {
  const until = clock.now() + budgetMs;
  for (let i = 0; ; i++) {
    try {
      return await fn(i);
    } catch (e) {
      const ke = toKeyrotorError(e);
      // exponential backoff with full jitter (throttling: many keys must not retry in lockstep)
      const delay = Math.random() * Math.min(250 * 2 ** (i + 1), 5000);
      const more = i + 1 < attempts || clock.now() + delay < until;
      if (!retryOn(ke) || !more) throw e;
      await clock.sleep(delay, signal);
    }
  }
}
