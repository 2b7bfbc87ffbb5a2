/**
 * The machine's state tags are the vocabulary the run loop and the Lambda adapter use instead of
 * lists of state names: check that they describe the machine as it is.
 */
import { describe, expect, it } from 'vitest';
import { createActor, type AnyEventObject } from 'xstate';
import {
  FINAL_STATES,
  FORWARD_ORDER,
  forwardRank,
  holdsNewKeyOnlyInMemory,
  rotationMachine,
  statesTagged,
  type RotationState,
} from '../../workflows/rotation/rotation.machine.ts';
import { makeWorld } from './harness.ts';

const done = (id: string, output?: unknown): AnyEventObject => ({ type: `xstate.done.actor.${id}`, output });

describe('rotation machine tags', () => {
  const all = Object.keys(rotationMachine.states) as RotationState[];

  it('every state is forward, compensation or final, exactly one of them', () => {
    const forward = statesTagged('forward');
    const compensation = statesTagged('compensation');
    for (const s of all) {
      const kinds = [forward.includes(s), compensation.includes(s), (FINAL_STATES as string[]).includes(s)];
      expect(kinds.filter(Boolean), s).toHaveLength(1);
    }
    expect(compensation).toEqual(['demote', 'unstage', 'discard']);
  });

  it('waits are the states polling until a deadline; perStore the states re-entered per store', () => {
    expect(statesTagged('wait')).toEqual(['verify', 'confirm', 'revokeRetry', 'verifyRevoked']);
    expect(statesTagged('perStore')).toEqual(['stage', 'promote', 'demote', 'unstage']);
  });

  it('the forward order is the order a successful rotation (with a revoke retry) goes through', () => {
    const w = makeWorld({ stores: 2, gates: 1 });
    // the machine without actors: drive it by hand with the events its invokes would send
    const actor = createActor(rotationMachine, { input: w.input });
    const seen: string[] = [];
    actor.subscribe((s) => {
      if (seen[seen.length - 1] !== s.value) seen.push(String(s.value));
    });
    actor.start();
    const pre = { oldKeyId: 'key_old', oldFingerprint: 'fp_old', bootstrap: false, oldKeyUnidentified: false };
    const steps: AnyEventObject[] = [
      done('preflight', pre),
      done('issue', { newKeyId: 'key_new', newFingerprint: 'fp_new' }),
      done('stage'),
      done('stage'),
      done('verify'),
      done('promote'),
      done('promote'),
      done('confirm'),
      { type: 'xstate.error.actor.revoke', error: new Error('flaky') },
      done('sleep'),
      done('revoke'),
      done('verifyRevoked'),
    ];
    for (const e of steps) actor.send(e);
    expect(actor.getSnapshot().value).toBe('rotated');
    actor.stop();
    const forward = seen.filter((s) => s !== 'rotated');
    // decideRevoke is transient (never a snapshot); revoke is entered again after its retry
    const observable = FORWARD_ORDER.filter((s) => s !== 'decideRevoke');
    expect(forward).toEqual([...observable.slice(0, 8), 'revoke', 'verifyRevoked']);
    expect(forwardRank('decideRevoke')).toBeGreaterThan(forwardRank('confirm'));
    expect(forwardRank('decideRevoke')).toBeLessThan(forwardRank('revoke'));
    expect(forwardRank('verifyRevoked')).toBe(FORWARD_ORDER.length - 1);
    expect(forwardRank('demote')).toBe(-1);
    expect(forwardRank('rotated')).toBe(-1);
  });

  it('holdsNewKeyOnlyInMemory: only in stage before the first store holds the new key', () => {
    const w = makeWorld({ stores: 2 });
    const actor = createActor(rotationMachine, { input: w.input });
    actor.start();
    expect(holdsNewKeyOnlyInMemory(actor.getSnapshot())).toBe(false); // preflight
    actor.send(done('preflight', { oldKeyId: 'k', oldFingerprint: 'f', bootstrap: false, oldKeyUnidentified: false }));
    actor.send(done('issue', { newKeyId: 'key_new', newFingerprint: 'fp_new' }));
    expect(actor.getSnapshot().value).toBe('stage');
    expect(holdsNewKeyOnlyInMemory(actor.getSnapshot())).toBe(true);
    actor.send(done('stage'));
    expect(actor.getSnapshot().value).toBe('stage');
    expect(holdsNewKeyOnlyInMemory(actor.getSnapshot())).toBe(false);
    actor.stop();
  });
});
