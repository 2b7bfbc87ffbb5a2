/**
 * The machine's actors over the stage bodies, and the one way to run a rotation:
 * `createRotationActor(deps, { input } | { snapshot })`, used by the run loop and the tests alike.
 *
 * Every rotation of the process runs on one machine definition: its actors find their rotation's deps
 * through the actor system of the rotation actor that invoked them. Building a machine per rotation
 * (`machine.provide` per call) would cost ~45 KB of heap for as long as the rotation lives, which adds
 * up with 1,000 rotations held at a gate.
 *
 * Before any side effect a stage waits for `deps.persisted()`: the snapshot that says "we are in this
 * stage" is on disk before the world changes (write-ahead).
 */
import { createActor, fromPromise, type Actor, type SnapshotFrom } from 'xstate';
import { KeyrotorError, toKeyrotorError } from '../../../src/core/errors.ts';
import {
  rotationMachine,
  statesTagged,
  type RotationInput,
  type RotationMachine,
  type StepInput,
} from '../rotation.machine.ts';
import { stageBodies, type StageBodies, type StageBody, type StageOutputs } from './bodies.ts';
import type { RotationDeps } from './deps.ts';

/** the actor system of one rotation actor (shared by the actors it invokes) */
type AnyActorSystem = Actor<RotationMachine>['system'];

const depsBySystem = new WeakMap<AnyActorSystem, RotationDeps>();

function depsOf(system: AnyActorSystem): RotationDeps {
  const deps = depsBySystem.get(system);
  if (!deps)
    throw new KeyrotorError(
      'INTERNAL',
      'rotation actor started outside createRotationActor (no deps for its actor system)',
    );
  return deps;
}

/** the stage bodies of a rotation's deps, built at its first stage (they close over the deps only) */
const bodiesByDeps = new WeakMap<RotationDeps, StageBodies>();

function bodiesOf(deps: RotationDeps): StageBodies {
  let bodies = bodiesByDeps.get(deps);
  if (!bodies) bodiesByDeps.set(deps, (bodies = stageBodies(deps)));
  return bodies;
}

/** stages that run once per store: their events carry the store index */
const PER_STORE: ReadonlySet<string> = new Set(statesTagged('perStore'));

/**
 * The actor of one stage: write-ahead barrier, timing, progress events, error normalisation around
 * the body. The bodies close over one rotation's deps and are built once per rotation (and deps).
 */
function step<S extends keyof StageOutputs>(stage: S) {
  return fromPromise<StageOutputs[S], StepInput>(async ({ input, signal, system }) => {
    const deps = depsOf(system);
    const { clock } = deps;
    const body: StageBody<StageOutputs[S]> = bodiesOf(deps)[stage];
    await deps.persisted();
    const t0 = clock.now();
    const at = PER_STORE.has(stage) ? { index: input.index } : {};
    deps.onStage?.({ stage, phase: 'start', ...at });
    try {
      const out = await body(input, signal);
      deps.onStage?.({ stage, phase: 'done', ms: clock.now() - t0, ...at });
      return out;
    } catch (e) {
      const err = toKeyrotorError(e, stage);
      deps.onStage?.({ stage, phase: 'error', ms: clock.now() - t0, error: err, ...at });
      throw err;
    }
  });
}

const rotationActors = {
  preflight: step('preflight'),
  issue: step('issue'),
  stage: step('stage'),
  verify: step('verify'),
  promote: step('promote'),
  confirm: step('confirm'),
  revoke: step('revoke'),
  verifyRevoked: step('verifyRevoked'),
  demote: step('demote'),
  unstage: step('unstage'),
  discard: step('discard'),
  sleep: fromPromise<void, { until: number }>(async ({ input, signal, system }) => {
    const { clock } = depsOf(system);
    await clock.sleep(Math.max(0, input.until - clock.now()), signal);
  }),
};

let sharedMachine: RotationMachine | undefined;

/** The one machine definition with every side effect supplied (built on first use). */
function providedMachine(): RotationMachine {
  sharedMachine ??= rotationMachine.provide({ actors: rotationActors });
  return sharedMachine;
}

/** A rotation actor (new, or restored from a persisted snapshot) running `deps`. Call `start()` on it. */
export function createRotationActor(
  deps: RotationDeps,
  options: { input: RotationInput } | { snapshot: SnapshotFrom<RotationMachine> },
): Actor<RotationMachine> {
  const machine = providedMachine();
  const actor =
    'snapshot' in options
      ? createActor(machine, { snapshot: options.snapshot, input: undefined })
      : createActor(machine, { input: options.input });
  // before start(): the invoked children (also those restored from the snapshot) start with the root
  depsBySystem.set(actor.system, deps);
  return actor;
}
