/**
 * Restore after a crash at every state: run a rotation, "kill" it right after the n-th persisted
 * snapshot (no further side effect happens, memory is lost), restore a new actor from that snapshot
 * (JSON round trip, fresh secret vault) and run it to the end. For every n the rotation invariant
 * holds against the fakes' own state, and no snapshot holds a secret.
 */
import { describe, expect, it } from 'vitest';
import { invariantViolations, makeWorld, runWorld, type World } from './harness.ts';
import { CANARY } from '../canary.ts';
import { capture } from '../helpers/artifacts.ts';

async function countSnapshots(make: () => World): Promise<number> {
  const r = await runWorld(make());
  return r.snapshots.length;
}

const scenarios: Array<{ name: string; make: () => World; expectFinal: string[] }> = [
  {
    name: 'rotation over two stores with a gate',
    make: () => makeWorld({ stores: 2, gates: 1 }),
    expectFinal: ['rotated', 'rolledBack'],
  },
  {
    name: 'bootstrap into empty stores',
    make: () => makeWorld({ stores: 2, gates: 0, setup: 'bootstrap' }),
    expectFinal: ['rotated', 'rolledBack'],
  },
  {
    name: 'rollback after a consumer gate rejects',
    make: () => {
      const w = makeWorld({ stores: 2, gates: 1 });
      w.gates[0]!.pass = false;
      return w;
    },
    expectFinal: ['rolledBack'],
  },
  {
    name: 'leak mode',
    make: () => makeWorld({ stores: 2, gates: 1, leaked: true }),
    expectFinal: ['rotated', 'needsAttention'],
  },
  {
    // a crash after the leaked key was deleted must not lose that fact: the restored run goes on to
    // issue the new key and never revokes twice or restores anything
    name: 'leak mode, revoke first',
    make: () => makeWorld({ stores: 2, gates: 1, leaked: true, revokeFirst: true }),
    expectFinal: ['rotated', 'needsAttention'],
  },
];

describe('restore after a crash at every state', () => {
  for (const sc of scenarios) {
    it(sc.name, async () => {
      const total = await countSnapshots(sc.make);
      expect(total).toBeGreaterThan(5);
      const finals = new Map<string, number>();
      for (let n = 0; n < total - 1; n++) {
        const w = sc.make();
        const crashed = await runWorld(w, { crashAt: n });
        expect(crashed.final).toBeNull();
        const snap = crashed.snapshots[n];
        const text = JSON.stringify(snap);
        expect(text).not.toContain(CANARY);
        const resumed = await runWorld(w, { snapshot: JSON.parse(text) });
        expect(resumed.final, `crash after snapshot ${n} (${crashed.states.at(-1)})`).not.toBeNull();
        expect(sc.expectFinal, `crash after snapshot ${n} (${crashed.states.at(-1)}) ended ${resumed.final}`).toContain(
          resumed.final,
        );
        expect(invariantViolations(w, resumed.context, resumed.final!), `crash after snapshot ${n}`).toEqual([]);
        if (w.input.revokeFirst) {
          // the leaked key is dead whatever the crash point (it is revoked before anything else)
          expect(w.issuer.alive(w.oldKey!.id), `crash after snapshot ${n}`).toBe(false);
          if (resumed.final === 'rotated') expect(resumed.context.oldKeyRevokedAt).toBeTypeOf('number');
        }
        finals.set(resumed.final!, (finals.get(resumed.final!) ?? 0) + 1);
        capture('restore-snapshots.json', JSON.stringify(resumed.snapshots));
      }
      // a crash before anything was staged loses the new value: that run rolls back, every later one completes
      if (sc.expectFinal.includes('rotated')) expect(finals.get('rotated') ?? 0).toBeGreaterThan(0);
    });
  }
});

/**
 * A crash between a store call and the snapshot after it: the call's effect is applied but the
 * restored run re-enters the same stage (an in-flight invoke is re-run). Above all, a crash right
 * after `stage` wrote the new value to a store: the fresh process has no value in memory and must read
 * it back from that very store (which holds it), not roll back (chaos seed 4233257225, scenario 25).
 */
describe('restore after a crash right after a store call (applied, its answer never seen)', () => {
  const make = () => makeWorld({ stores: 2, gates: 1 });

  it('a crash right after the first store staged the new value: the restored run reads it back from that store and rotates', async () => {
    const w = make();
    const crashed = await runWorld(w, { crashAfterStoreCall: (label) => label === 'store:0.stage' });
    expect(crashed.final).toBeNull();
    expect(w.stores[0]!.versions.some((v) => v.rotationId === w.input.rotationId)).toBe(true);
    const snap = crashed.snapshots.at(-1) as { value?: unknown; context?: { staged?: number } };
    expect(snap.value).toBe('stage');
    expect(snap.context?.staged).toBe(0);
    const resumed = await runWorld(w, { snapshot: JSON.parse(JSON.stringify(snap)) });
    expect(resumed.context.error, JSON.stringify(resumed.context.error)).toBeNull();
    expect(resumed.final).toBe('rotated');
    expect(invariantViolations(w, resumed.context, 'rotated')).toEqual([]);
  });

  it('after every store call of a whole rotation: the restored run rotates and the invariant holds', async () => {
    let calls = 0;
    await runWorld(make(), { crashAfterStoreCall: () => (calls++, false) });
    expect(calls).toBeGreaterThan(8);
    for (let n = 0; n < calls; n++) {
      const w = make();
      let label = '';
      const crashed = await runWorld(w, { crashAfterStoreCall: (l, at) => (at === n ? ((label = l), true) : false) });
      expect(crashed.final, `crash after store call ${n}`).toBeNull();
      const text = JSON.stringify(crashed.snapshots.at(-1));
      expect(text).not.toContain(CANARY);
      const resumed = await runWorld(w, { snapshot: JSON.parse(text) });
      expect(resumed.final, `crash right after ${label} (call ${n}): ${JSON.stringify(resumed.context.error)}`).toBe(
        'rotated',
      );
      expect(invariantViolations(w, resumed.context, 'rotated'), `crash right after ${label}`).toEqual([]);
    }
  });
});
