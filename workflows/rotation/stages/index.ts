/**
 * The side effects of every stage, written against the ports only. `provideRotation(deps)` plugs them
 * into the machine; tests provide the same stages with fake providers.
 *
 * Each one is idempotent, because a restored snapshot re-runs the invoke that was in flight:
 *   issue     - the key name carries the rotation id; discard reconciles by that name
 *   stage     - stores key their pending version by rotation id
 *   promote / demote / unstage - stores converge on the end state for that rotation id
 *   revoke / discard - "already gone" is success
 * Before any side effect a stage waits for `deps.persisted()`: the snapshot that says "we are in this
 * stage" is on disk before the world changes (write-ahead).
 */
import { createActor, fromPromise, type Actor, type SnapshotFrom } from 'xstate';
import type { Clock } from '../../../src/core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../../../src/core/errors.ts';
import { fingerprint } from '../../../src/core/fingerprint.ts';
import type { HealthGate, Issuer, Logger, SecretStore } from '../../../src/core/ports.ts';
import type { Secret } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';
import { ADOPT_WAYS, withoutPlaceholders } from './placeholder.ts';
import {
  rotationMachine,
  type IssueOutput,
  type PreflightOutput,
  type RotationContext,
  type RotationInput,
  type RotationMachine,
  type StepInput,
} from '../rotation.machine.ts';

/** Secret values live here between `issue` and `stage`, in memory only, never in a snapshot. */
export class SecretVault {
  #values = new Map<string, Secret>();
  set(ref: string, s: Secret): void {
    this.#values.set(ref, s);
  }
  get(ref: string): Secret | undefined {
    return this.#values.get(ref);
  }
  delete(ref: string): void {
    this.#values.delete(ref);
  }
}

export interface RotationDeps {
  issuer: Issuer;
  stores: SecretStore[];
  gates: HealthGate[];
  /** `all` (default): every gate must pass; `any`: one passing gate confirms */
  gateRequire?: 'all' | 'any';
  clock: Clock;
  logger: Logger;
  vault: SecretVault;
  /** resolves once the snapshot of the state being entered is durable */
  persisted(): Promise<void>;
  /** key ids recorded by `keyrotor adopt`, by fingerprint of the value */
  adopted(fingerprint: string): string | undefined;
  /** values declared not to be keys (`keyrotor adopt --placeholder`), by fingerprint: see placeholder.ts */
  placeholder?(fingerprint: string): boolean;
  verifyIntervalMs: number;
  verifyRevokedIntervalMs: number;
  /** attempts for each store/issuer write (stage, promote and every compensation) on retryable errors */
  retryAttempts: number;
  /** called on every stage start/finish, for progress rendering, audit and metrics */
  onStage?(e: StageEvent): void;
  /** the state a restored rotation resumed in (absent for a rotation started in this process) */
  resumedIn?: string | undefined;
}

export interface StageEvent {
  stage: Stage;
  /** `wait`: a wait (verify, confirm, verifyRevoked) polled and is not done yet, see `observation` */
  phase: 'start' | 'done' | 'error' | 'wait';
  index?: number;
  ms?: number;
  detail?: string;
  error?: KeyrotorError;
  /** wait events: the health gate polled (confirm) */
  gate?: string;
  /** wait events: what the poll saw (secret-free), e.g. "2/3 consumers on the new key" */
  observation?: string;
  /** wait events: the absolute deadline of the wait (ms since epoch) */
  deadline?: number;
}

/** the actor system of one rotation actor (shared by the actors it invokes) */
type AnyActorSystem = Actor<RotationMachine>['system'];

const newRef = (ctx: RotationContext) => `new:${ctx.rotationId}`;
const oldRef = (ctx: RotationContext) => `old:${ctx.rotationId}`;

async function pollUntil<T>(
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

async function withRetries<T>(
  clock: Clock,
  attempts: number,
  fn: (attempt: number) => Promise<T>,
  retryOn: (e: KeyrotorError) => boolean = (e) => e.retryable,
): Promise<T> {
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await fn(i);
    } catch (e) {
      lastErr = e;
      const ke = toKeyrotorError(e);
      if (!retryOn(ke) || i === attempts - 1) throw e;
      // exponential backoff with full jitter (throttling: many keys must not retry in lockstep)
      await clock.sleep(Math.random() * Math.min(250 * 2 ** (i + 1), 5000));
    }
  }
  throw lastErr;
}

/** The new key's value: from memory if this process issued it, else read back from a store. */
async function newSecret(
  deps: RotationDeps,
  ctx: RotationContext,
  stage: Stage,
  upTo = deps.stores.length,
): Promise<Secret> {
  const inMemory = deps.vault.get(newRef(ctx));
  if (inMemory) return inMemory;
  for (const store of deps.stores.slice(0, upTo)) {
    const v = (await store.readPending(ctx.rotationId)) ?? (await currentIfOurs(store, ctx));
    if (v && fingerprint(v.secret) === ctx.newFingerprint) {
      deps.vault.set(newRef(ctx), v.secret);
      return v.secret;
    }
  }
  throw new KeyrotorError(
    'SECRET_UNAVAILABLE',
    `the new key ${ctx.newKeyId} is not held by any store (the process stopped before staging it); it will be discarded`,
    {
      stage,
    },
  );
}

async function currentIfOurs(store: SecretStore, ctx: RotationContext) {
  const c = await store.readCurrent();
  return c && c.meta.rotationId === ctx.rotationId ? c : null;
}

/** The actors with the deps of one rotation (a new machine per call: see `createRotationActor`). */
export function rotationActors(deps: RotationDeps) {
  return actorsFor(() => deps);
}

/**
 * The actors, each finding the deps of its rotation through `depsOf(system)` (the actor system of the
 * rotation actor that invoked it). The stage bodies close over one rotation's deps and are built per
 * invocation: short-lived, unlike a machine per rotation.
 */
function actorsFor(depsOf: (system: AnyActorSystem) => RotationDeps) {
  const bodies = (system: AnyActorSystem) => stageBodies(depsOf(system));
  type Bodies = ReturnType<typeof stageBodies>;
  /** wrap a stage body: write-ahead barrier, timing, progress events, error normalisation */
  function step<O>(stage: Exclude<keyof Bodies, 'sleep'> & Stage) {
    return fromPromise<O, StepInput>(async ({ input, signal, system }) => {
      const deps = depsOf(system);
      const { clock } = deps;
      const body = bodies(system)[stage] as (input: StepInput, signal: AbortSignal) => Promise<O>;
      await deps.persisted();
      const t0 = clock.now();
      const perStore = stage === 'stage' || stage === 'promote' || stage === 'demote' || stage === 'unstage';
      const index = perStore ? input.index : undefined;
      deps.onStage?.({ stage, phase: 'start', ...(index !== undefined ? { index } : {}) });
      try {
        const out = await body(input, signal);
        deps.onStage?.({ stage, phase: 'done', ms: clock.now() - t0, ...(index !== undefined ? { index } : {}) });
        return out;
      } catch (e) {
        const err = toKeyrotorError(e, stage);
        deps.onStage?.({
          stage,
          phase: 'error',
          ms: clock.now() - t0,
          error: err,
          ...(index !== undefined ? { index } : {}),
        });
        throw err;
      }
    });
  }

  return {
    preflight: step<PreflightOutput>('preflight'),
    issue: step<IssueOutput>('issue'),
    stage: step<void>('stage'),
    verify: step<void>('verify'),
    promote: step<void>('promote'),
    confirm: step<void>('confirm'),
    revoke: step<void>('revoke'),
    verifyRevoked: step<void>('verifyRevoked'),
    demote: step<void>('demote'),
    unstage: step<void>('unstage'),
    discard: step<void>('discard'),
    sleep: fromPromise<void, { until: number }>(async ({ input, signal, system }) => {
      const { clock } = depsOf(system);
      await clock.sleep(Math.max(0, input.until - clock.now()), signal);
    }),
  };
}

/** What each stage does, for one rotation's deps (wrapped by `actorsFor`). */
function stageBodies(deps: RotationDeps) {
  const { issuer, stores, clock } = deps;
  // (the stage name documents the body; `actorsFor` wraps it)
  const step = <O>(_stage: Stage, body: (input: StepInput, signal: AbortSignal) => Promise<O>) => body;

  const store = (i: number): SecretStore => {
    const s = stores[i];
    if (!s) throw new KeyrotorError('INTERNAL', `no store at index ${i}`);
    return s;
  };

  return {
    preflight: step<PreflightOutput>('preflight', async ({ ctx }) => {
      await issuer.check();
      for (const s of stores) await s.check();
      // What is current now? Every store must agree on one key (or all be empty).
      const read = await Promise.all(stores.map((s) => s.readCurrent()));
      // a declared placeholder counts as empty: the rotation bootstraps over it and revokes nothing
      const { currents, placeholder } = withoutPlaceholders(read, deps.placeholder);
      const present = currents.filter((c) => c !== null);
      if (present.length === 0)
        return {
          oldKeyId: null,
          oldFingerprint: placeholder,
          bootstrap: true,
          oldKeyUnidentified: false,
          ...(placeholder ? { placeholder: true } : {}),
        };
      const fps = new Set(present.map((c) => fingerprint(c.secret)));
      if (fps.size > 1 || present.length !== stores.length) {
        throw new KeyrotorError(
          'ADOPT_REQUIRED',
          `the stores of ${ctx.keyName} do not hold the same current key (${stores.map((s, i) => `${s.label}=${read[i] ? fingerprint(read[i].secret) : 'empty'}`).join(', ')})`,
          {
            stage: 'preflight',
            hint: `make every store serve the same key, then rotate again (${ADOPT_WAYS(ctx.keyName)})`,
          },
        );
      }
      const cur = present[0]!;
      const oldFingerprint = fingerprint(cur.secret);
      deps.vault.set(oldRef(ctx), cur.secret);
      let oldKeyId = present.find((c) => c.meta.issuerKeyId)?.meta.issuerKeyId ?? deps.adopted(oldFingerprint) ?? null;
      if (!oldKeyId) {
        // a key a person put there by hand: identify it positively at the issuer, or refuse
        const id = await issuer.identify(cur.secret);
        if (id.kind === 'found') oldKeyId = id.keyId;
        else if (!ctx.leaked) {
          throw new KeyrotorError(
            'ADOPT_REQUIRED',
            id.kind === 'ambiguous'
              ? `the current value of ${ctx.keyName} matches several issuer keys (${id.candidates.join(', ')})`
              : `the current value of ${ctx.keyName} (${oldFingerprint}) matches no key at the issuer`,
            {
              stage: 'preflight',
              hint: ADOPT_WAYS(ctx.keyName),
            },
          );
        }
      }
      // leak mode: record when the compromised key was last used, before it is revoked
      let oldKeyLastUsedAt: string | null = null;
      if (ctx.leaked && oldKeyId) {
        oldKeyLastUsedAt = (await issuer.list()).find((k) => k.keyId === oldKeyId)?.lastUsedAt ?? null;
      }
      return { oldKeyId, oldFingerprint, bootstrap: false, oldKeyUnidentified: oldKeyId === null, oldKeyLastUsedAt };
    }),

    issue: step<IssueOutput>('issue', async ({ ctx }) => {
      // a 429 is a clean rejection (nothing was created) and a retried create() looks up its name
      // first, so trying again cannot mint a second key; any other failure goes to discard (reconcile
      // by name). Only the first try of a rotation not restored at `issue` can skip that lookup.
      const key = await withRetries(
        clock,
        deps.retryAttempts,
        (attempt) =>
          issuer.create({
            name: ctx.newKeyName,
            rotationId: ctx.rotationId,
            firstAttempt: attempt === 0 && deps.resumedIn !== 'issue',
            ...(ctx.expiresInSeconds ? { expiresInSeconds: ctx.expiresInSeconds } : {}),
          }),
        (e) => e.code === 'ISSUER_RATE_LIMITED',
      );
      deps.vault.set(newRef(ctx), key.secret);
      deps.logger.info({ stage: 'issue', keyId: key.keyId, fingerprint: fingerprint(key.secret) }, 'new key issued');
      return { newKeyId: key.keyId, newFingerprint: fingerprint(key.secret) };
    }),

    stage: step<void>('stage', async ({ ctx, index }) => {
      const secret = await newSecret(deps, ctx, 'stage', index);
      const meta = {
        rotationId: ctx.rotationId,
        issuerKeyId: ctx.newKeyId ?? undefined,
        fingerprint: ctx.newFingerprint ?? undefined,
        createdAt: new Date(clock.now()).toISOString(),
      };
      await withRetries(clock, deps.retryAttempts, () =>
        store(index).stage({ rotationId: ctx.rotationId, secret, meta }),
      );
    }),

    verify: step<void>('verify', async ({ ctx }, signal) => {
      // every store holds exactly the value that was issued
      for (const s of stores) {
        const p = await s.readPending(ctx.rotationId);
        if (!p || fingerprint(p.secret) !== ctx.newFingerprint) {
          throw new KeyrotorError(
            'STORE_CORRUPT',
            `${s.label} does not hold the staged key ${ctx.newFingerprint} for ${ctx.rotationId}`,
            { stage: 'verify' },
          );
        }
      }
      const secret = await newSecret(deps, ctx, 'verify');
      const deadline = ctx.deadlines.verify ?? clock.now();
      await pollUntil(
        clock,
        deadline,
        deps.verifyIntervalMs,
        signal,
        async () => {
          const r = await issuer.verify(secret);
          if (r.ok) return { done: true, value: undefined };
          const observation = `the new key does not work yet (${r.reason}: ${r.detail})`;
          deps.onStage?.({ stage: 'verify', phase: 'wait', observation, deadline });
          return { done: false, observation: `${r.reason}: ${r.detail}`, final: r.reason === 'missing_scopes' };
        },
        (last) =>
          new KeyrotorError(
            last.startsWith('missing_scopes') ? 'KEY_MISSING_SCOPES' : 'KEY_INVALID',
            `the new key ${ctx.newKeyId} does not work at the issuer (${last})`,
            {
              stage: 'verify',
            },
          ),
      );
    }),

    promote: step<void>('promote', async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).promote(ctx.rotationId));
    }),

    confirm: step<void>('confirm', async ({ ctx }, signal) => {
      const deadlines = ctx.deadlines.confirm ?? [];
      // one signal for every gate: cancelled with the stage, and once the outcome is decided
      const stop = new AbortController();
      const onAbort = () => stop.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      const waits = deps.gates.map(async (gate, i) => {
        const deadline = deadlines[i] ?? clock.now() + gate.timeoutMs;
        let shown = '';
        await pollUntil(
          clock,
          deadline,
          gate.intervalMs,
          stop.signal,
          async () => {
            let o: { pass: boolean; observation: string; final?: boolean };
            try {
              o = await gate.check({
                rotationId: ctx.rotationId,
                keyName: ctx.keyName,
                newKeyId: ctx.newKeyId ?? '',
                oldKeyId: ctx.oldKeyId ?? undefined,
                newFingerprint: ctx.newFingerprint ?? '',
                oldFingerprint: ctx.oldFingerprint ?? undefined,
                promotedAt: ctx.promotedAt ? new Date(ctx.promotedAt).toISOString() : undefined,
                readNewSecret: () => newSecret(deps, ctx, 'confirm'),
                signal: stop.signal,
              });
            } catch (e) {
              o = { pass: false, observation: `error: ${toKeyrotorError(e).message}` };
            }
            if (!o.pass)
              deps.onStage?.({
                stage: 'confirm',
                phase: 'wait',
                gate: gate.name,
                observation: o.observation,
                deadline,
              });
            // what the rotation is waiting for, once per change (not on every poll)
            if (!o.pass && o.observation !== shown) {
              shown = o.observation;
              deps.logger.info(
                {
                  stage: 'confirm',
                  gate: gate.name,
                  deadline: new Date(deadline).toISOString(),
                  observation: o.observation,
                },
                'waiting for health gate',
              );
            }
            return o.pass
              ? { done: true, value: undefined }
              : { done: false, observation: o.observation, ...(o.final ? { final: true } : {}) };
          },
          (last) =>
            new KeyrotorError(
              clock.now() >= deadline ? 'GATE_TIMEOUT' : 'GATE_REJECTED',
              `health gate "${gate.name}" did not pass: ${last}`,
              { stage: 'confirm' },
            ),
        );
        deps.logger.info({ stage: 'confirm', gate: gate.name }, 'health gate passed');
      });
      try {
        if (deps.gateRequire === 'any') {
          await Promise.any(waits).catch((e: unknown) => {
            const errs = (e instanceof AggregateError ? e.errors : [e]).map((x) => toKeyrotorError(x, 'confirm'));
            const code = errs.every((x) => x.code === 'GATE_REJECTED') ? 'GATE_REJECTED' : 'GATE_TIMEOUT';
            throw new KeyrotorError(
              code,
              `no health gate passed (require: any): ${errs.map((x) => x.message).join('; ')}`,
              { stage: 'confirm' },
            );
          });
        } else {
          await Promise.all(waits);
        }
      } finally {
        stop.abort(); // the gates still polling (require: any, or after the first failure) stop now
        signal.removeEventListener('abort', onAbort);
      }
    }),

    revoke: step<void>('revoke', async ({ ctx }) => {
      if (!ctx.oldKeyId)
        throw new KeyrotorError('INTERNAL', 'revoke without an identified old key', { stage: 'revoke' });
      const r = await issuer.revoke(ctx.oldKeyId);
      deps.logger.info({ stage: 'revoke', keyId: ctx.oldKeyId, alreadyGone: r.alreadyGone }, 'old key revoked');
    }),

    verifyRevoked: step<void>('verifyRevoked', async ({ ctx }, signal) => {
      let old = deps.vault.get(oldRef(ctx));
      if (!old) {
        for (const s of stores) {
          const p = await s.readPrevious();
          if (p && fingerprint(p.secret) === ctx.oldFingerprint) {
            old = p.secret;
            break;
          }
        }
      }
      const deadline = ctx.deadlines.verifyRevoked ?? clock.now();
      const revokedYet = async (): Promise<{ done: true; value: undefined } | { done: false; observation: string }> => {
        if (old) {
          const r = await issuer.verify(old);
          if (!r.ok && r.reason === 'invalid') return { done: true, value: undefined };
          return { done: false, observation: r.ok ? 'the old key still works' : `${r.reason}: ${r.detail}` };
        }
        // no value to test with: the key must be gone from the issuer's list
        const keys = await issuer.list();
        return keys.some((k) => k.keyId === ctx.oldKeyId)
          ? { done: false, observation: 'the old key is still listed at the issuer' }
          : { done: true, value: undefined };
      };
      await pollUntil(
        clock,
        deadline,
        deps.verifyRevokedIntervalMs,
        signal,
        async () => {
          const r = await revokedYet();
          if (!r.done) deps.onStage?.({ stage: 'verifyRevoked', phase: 'wait', observation: r.observation, deadline });
          return r;
        },
        (last) =>
          new KeyrotorError('REVOKE_UNCONFIRMED', `the old key ${ctx.oldKeyId} is not dead yet: ${last}`, {
            stage: 'verifyRevoked',
          }),
      );
      deps.vault.delete(oldRef(ctx));
      deps.vault.delete(newRef(ctx));
    }),

    demote: step<void>('demote', async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).demote(ctx.rotationId));
    }),

    unstage: step<void>('unstage', async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).unstage(ctx.rotationId));
    }),

    discard: step<void>('discard', async ({ ctx }) => {
      await withRetries(clock, deps.retryAttempts, async () => {
        if (ctx.newKeyId) {
          await issuer.revoke(ctx.newKeyId);
        } else {
          // the create may have succeeded without us seeing the response: find it by its unique name
          for (const k of await issuer.list()) if (k.name === ctx.newKeyName) await issuer.revoke(k.keyId);
        }
      });
      deps.vault.delete(newRef(ctx));
      deps.vault.delete(oldRef(ctx));
    }),
  };
}

/** The machine with every side effect supplied (a new machine definition per call). */
export function provideRotation(deps: RotationDeps) {
  return rotationMachine.provide({ actors: rotationActors(deps) });
}

const depsBySystem = new WeakMap<AnyActorSystem, RotationDeps>();
let sharedMachine: ReturnType<typeof provideRotation> | undefined;

/** The one machine every `createRotationActor` shares; its actors look their deps up by actor system. */
export function sharedRotationMachine(): ReturnType<typeof provideRotation> {
  sharedMachine ??= rotationMachine.provide({
    actors: actorsFor((system) => {
      const deps = depsBySystem.get(system);
      if (!deps)
        throw new KeyrotorError(
          'INTERNAL',
          'rotation actor started outside createRotationActor (no deps for its actor system)',
        );
      return deps;
    }),
  });
  return sharedMachine;
}

/**
 * A rotation actor (new, or restored from a persisted snapshot) running `deps`, on the machine
 * definition shared by every rotation of the process: building a machine per rotation
 * (`provideRotation`) costs ~45 KB of heap for as long as the rotation lives, which adds up with
 * 1,000 rotations held at a gate. Behaviour and persisted snapshots are the same either way.
 */
export function createRotationActor(
  deps: RotationDeps,
  options: { input: RotationInput } | { snapshot: SnapshotFrom<RotationMachine> },
): Actor<RotationMachine> {
  const machine = sharedRotationMachine();
  const actor =
    'snapshot' in options
      ? createActor(machine, { snapshot: options.snapshot, input: undefined })
      : createActor(machine, { input: options.input });
  // before start(): the invoked children (also those restored from the snapshot) start with the root
  depsBySystem.set(actor.system, deps);
  return actor;
}
