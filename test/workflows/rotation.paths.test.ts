/**
 * Every path of the machine, enumerated with xstate/graph and replayed against the real actor with
 * the real stage implementations over in-memory fakes. Each error step of a path is produced by a
 * fault in the fake provider that stage calls (not by a stubbed actor), then the final state and the
 * rotation invariant are checked against the fakes' own state.
 */
import { describe, expect, it } from 'vitest';
import { getSimplePaths } from 'xstate/graph';
import type { AnyEventObject } from 'xstate';
import { KeyrotorError } from '../../src/core/errors.ts';
import { rotationMachine } from '../../workflows/rotation/rotation.machine.ts';
import { invariantViolations, makeWorld, runWorld, type Setup, type World } from './harness.ts';
import type { RotationDeps } from '../../workflows/rotation/stages/index.ts';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';

const done = (id: string, output?: unknown): AnyEventObject => ({ type: `xstate.done.actor.${id}`, output });
const fail = (id: string, code = 'ISSUER_UNAVAILABLE'): AnyEventObject => ({
  type: `xstate.error.actor.${id}`,
  error: new KeyrotorError(code as 'INTERNAL', 'synthetic'),
});

const PREFLIGHT_OUT: Record<Setup, unknown> = {
  rotate: { oldKeyId: 'key_1', oldFingerprint: 'fp_old', bootstrap: false, oldKeyUnidentified: false },
  bootstrap: { oldKeyId: null, oldFingerprint: null, bootstrap: true, oldKeyUnidentified: false },
  unidentified: { oldKeyId: null, oldFingerprint: 'fp_old', bootstrap: false, oldKeyUnidentified: true },
};

function enumerate(leaked: boolean, revokeFirst: boolean) {
  const world = makeWorld({ leaked, revokeFirst });
  return getSimplePaths(rotationMachine, {
    input: world.input,
    events: (s) => {
      const v = String(s.value);
      if (v === 'preflight') {
        const setups: Setup[] = leaked ? ['rotate', 'bootstrap', 'unidentified'] : ['rotate', 'bootstrap'];
        return [
          ...setups.map((k) => done('preflight', PREFLIGHT_OUT[k])),
          fail('preflight'),
          fail('preflight', 'ADOPT_REQUIRED'),
        ];
      }
      if (v === 'issue') return [done('issue', { newKeyId: 'key_new', newFingerprint: 'fp_new' }), fail('issue')];
      if (v === 'revokeRetry') return [done('sleep')];
      if (v === 'stage' || v === 'promote') {
        // what the actor reports: one store, or in leak mode every remaining store at once
        const c = s.context;
        const from = v === 'stage' ? c.staged : c.promoted;
        return [done(v, { stores: c.leaked ? c.storeLabels.length - from : 1 }), fail(v)];
      }
      return [done(v), fail(v)];
    },
    serializeState: (s) => {
      const c = s.context;
      return JSON.stringify([
        s.value,
        c.staged,
        c.promoted,
        c.cursor,
        c.revokeAttempts,
        c.bootstrap,
        c.oldKeyId === null,
        typeof c.oldKeyRevokedAt === 'number',
        c.newKeyId === null,
        c.error?.stage ?? null,
      ]);
    },
  });
}

type PathStep = { state: string; event: AnyEventObject };

/** The setup a path needs, read from its first event. */
function setupOf(steps: PathStep[]): Setup {
  const first = steps[0]!.event;
  if (first.type === 'xstate.error.actor.preflight') {
    return (first.error as KeyrotorError).code === 'ADOPT_REQUIRED' ? 'unidentified' : 'rotate';
  }
  const out = first.output as { bootstrap: boolean; oldKeyUnidentified: boolean };
  return out.bootstrap ? 'bootstrap' : out.oldKeyUnidentified ? 'unidentified' : 'rotate';
}

/**
 * Before each invocation, arm a fault in the provider the stage calls when the path says this step
 * fails; disarm it when the path says it succeeds.
 */
function scripted(w: World, steps: PathStep[]) {
  let i = 0;
  return (deps: RotationDeps): RotationDeps => {
    const onStage = (e: { stage: string; phase: string; index?: number }) => {
      if (e.phase !== 'start') return;
      while (steps[i]?.state === 'revokeRetry') i++; // the backoff sleep is not a provider call
      const step = steps[i++];
      if (!step) return;
      w.issuer.faults.clear();
      for (const s of w.stores) s.faults.clear();
      for (const g of w.gates) g.pass = true;
      const failing = step.event.type.startsWith('xstate.error.');
      if (!failing) return;
      const idx = e.index ?? 0;
      const hard = { code: 'ISSUER_UNAVAILABLE' as const, times: 100 };
      switch (e.stage) {
        case 'preflight':
          // (a store's check: leak mode does not call the issuer's check before its create)
          if ((step.event.error as KeyrotorError).code !== 'ADOPT_REQUIRED')
            w.stores[0]!.faults.set('check', { code: 'STORE_UNAVAILABLE', times: 100 });
          break;
        case 'issue':
          w.issuer.faults.set('create', { code: 'CREATE_AMBIGUOUS', after: true, times: 1 }); // the key exists, the response is lost
          break;
        case 'stage':
        case 'promote':
        case 'demote':
        case 'unstage':
          w.stores[idx]!.faults.set(e.stage, { code: 'STORE_UNAVAILABLE', times: 100 });
          break;
        case 'verify':
        case 'verifyRevoked':
          w.issuer.faults.set('verify', hard);
          break;
        case 'confirm':
          for (const g of w.gates) g.pass = false;
          break;
        case 'revoke':
          w.issuer.faults.set('revoke', { code: 'ISSUER_UNAVAILABLE', times: 1 });
          break;
        case 'discard':
          w.issuer.faults.set('revoke', hard);
          w.issuer.faults.set('list', hard);
          break;
      }
    };
    return { ...deps, onStage: onStage };
  };
}

for (const [leaked, revokeFirst] of [
  [false, false],
  [true, false],
  [true, true],
] as const) {
  describe(`every path of the rotation machine (leaked=${leaked}${revokeFirst ? ', revoke-first' : ''})`, () => {
    const paths = enumerate(leaked, revokeFirst);

    it('enumerates a non-trivial set of paths ending in every final state', () => {
      const finals = new Set(paths.map((p) => String(p.state.value)));
      expect(paths.length).toBeGreaterThan(20);
      for (const f of leaked
        ? ['rotated', 'failed', 'needsAttention', 'rollbackFailed']
        : ['rotated', 'rolledBack', 'failed', 'needsAttention', 'rollbackFailed']) {
        expect(finals).toContain(f);
      }
    });

    const finalPaths = paths.filter((p) => p.state.status === 'done');
    it.each(
      finalPaths.map(
        (p, n) =>
          [
            n,
            p.steps
              .map((s) => `${String(s.state.value)}${s.event.type.startsWith('xstate.error') ? '!' : ''}`)
              .join('>') + ` => ${String(p.state.value)}`,
            p,
          ] as const,
      ),
    )('path %i: %s', async (_n, _label, path) => {
      const steps = path.steps
        .slice(1)
        .map((s, k) => ({ state: String(path.steps[k]!.state.value), event: s.event })) as PathStep[];
      // steps[k].event is the event taken from the state before it
      const world = makeWorld({ leaked, revokeFirst, setup: setupOf(steps) });
      const r = await runWorld(world, { wrap: scripted(world, steps) });
      expect(r.final).toBe(String(path.state.value));
      expect(invariantViolations(world, r.context, r.final!)).toEqual([]);
      if (r.final === 'needsAttention' || r.final === 'rollbackFailed') {
        // a human is told what is left (except when preflight refused before changing anything)
        if (r.context.error?.code !== 'ADOPT_REQUIRED') expect(r.context.leftovers.length).toBeGreaterThan(0);
      }
      const dump = JSON.stringify(r.snapshots);
      capture('path-snapshots.json', dump);
      expect(dump).not.toContain(CANARY);
    });
  });
}
