/**
 * Stopping a rotation cleanly (RotateOptions `signal` / `pauseAt`): between stages, at the write-ahead
 * barrier, or in the middle of a wait. The snapshot stays in the state store; the next run resumes it.
 */
import type { Actor } from 'xstate';
import type { Clock } from '../../core/clock.ts';
import { holdsNewKeyOnlyInMemory, type RotationMachine } from '../../../workflows/rotation/rotation.machine.ts';

export interface PauseControl {
  /** resolves once the actor was stopped for a pause */
  readonly paused: Promise<'paused'>;
  /** true once the actor was stopped for a pause */
  isPaused(): boolean;
  /**
   * At the write-ahead barrier, before a stage touches the world: when a pause was asked for, stop
   * the actor and never resolve (this stage never starts). Never pauses while the new key's value
   * exists only in memory (between `issue` and the first `stage`).
   */
  atBarrier(): Promise<void>;
  /** listen for the signal and the `pauseAt` time (a wait is cut short at once); returns the undo */
  arm(): () => void;
}

export function pauseControl(
  o: { signal?: AbortSignal | undefined; pauseAt?: number | undefined; clock: Clock },
  actor: Actor<RotationMachine>,
): PauseControl {
  let stopped = false;
  let pauseNow: () => void = () => {};
  const paused = new Promise<'paused'>((resolve) => {
    pauseNow = () => {
      if (stopped) return;
      stopped = true;
      actor.stop();
      resolve('paused');
    };
  });
  const requested = () => o.signal?.aborted === true || (o.pauseAt !== undefined && o.clock.now() >= o.pauseAt);
  const onPauseSignal = () => {
    // a wait is safe to cut short (its deadline is in the snapshot); anything else stops at the next barrier
    if (actor.getSnapshot().hasTag('wait')) pauseNow();
  };
  return {
    paused,
    isPaused: () => stopped,
    async atBarrier() {
      if (requested() && !holdsNewKeyOnlyInMemory(actor.getSnapshot())) {
        pauseNow();
        await new Promise<never>(() => {}); // the actor is stopped: this stage never starts
      }
    },
    arm() {
      o.signal?.addEventListener('abort', onPauseSignal, { once: true });
      const timer =
        o.pauseAt !== undefined ? setTimeout(onPauseSignal, Math.max(0, o.pauseAt - o.clock.now())) : undefined;
      timer?.unref();
      return () => {
        o.signal?.removeEventListener('abort', onPauseSignal);
        if (timer) clearTimeout(timer);
      };
    },
  };
}
