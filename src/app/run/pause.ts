/**
 * Stopping a rotation cleanly (RotateOptions `signal` / `pauseAt`): between stages, at the write-ahead
 * barrier, or in the middle of a wait. The snapshot stays in the state store; the next run resumes it.
 * Parking (a durable wait, see loop.ts) stops the actor the same way, in the middle of a wait only.
 */
import type { Actor } from 'xstate';
import type { Clock } from '../../core/clock.ts';
import { holdsNewKeyOnlyInMemory, type RotationMachine } from '../../../workflows/rotation/rotation.machine.ts';

export interface PauseControl {
  /** resolves once the actor was stopped: for a pause, or to park it at a wait */
  readonly paused: Promise<'paused' | 'parked'>;
  /** true once the actor was stopped (pause or park) */
  isPaused(): boolean;
  /**
   * Park: stop the actor in the middle of a wait (the caller saves it with its wake time). False when
   * it is not in a wait or was stopped already.
   */
  park(): boolean;
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
  let stopFor: (why: 'paused' | 'parked') => void = () => {};
  const paused = new Promise<'paused' | 'parked'>((resolve) => {
    stopFor = (why) => {
      if (stopped) return;
      stopped = true;
      actor.stop();
      resolve(why);
    };
  });
  const pauseNow = () => stopFor('paused');
  const requested = () => o.signal?.aborted === true || (o.pauseAt !== undefined && o.clock.now() >= o.pauseAt);
  const onPauseSignal = () => {
    // a wait is safe to cut short (its deadline is in the snapshot); anything else stops at the next barrier
    if (actor.getSnapshot().hasTag('wait')) pauseNow();
  };
  return {
    paused,
    isPaused: () => stopped,
    park() {
      if (stopped || !actor.getSnapshot().hasTag('wait')) return false;
      stopFor('parked');
      return true;
    },
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
