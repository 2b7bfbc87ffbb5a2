/**
 * Start or resume one rotation per key, persisting the snapshot after every transition.
 * Every entry point (CLI, Lambda, Cloud Run, daemon) calls `rotateKey` / `rotateKeys`.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { SnapshotFrom } from 'xstate';
import { z } from 'zod';
import { closeProviders, composeKey, expiresInSecondsFor, timingFor, type KeyProviders } from './compose.ts';
import type { LoadedConfig } from './config/load.ts';
import type { ResolvedKey } from './config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import { issuedKeyName, newRotationId } from '../core/ids.ts';
import {
  isLease,
  type Fence,
  type Lease,
  type KeyRecord,
  type Logger,
  type PersistedRotation,
  type RotationResult,
  type StateStore,
} from '../core/ports.ts';
import type { Outcome, Stage } from '../core/stages.ts';
import {
  MACHINE_VERSION,
  type FinalState,
  type RotationContext,
  type RotationInput,
  type RotationMachine,
} from '../../workflows/rotation/rotation.machine.ts';
import {
  createRotationActor,
  SecretVault,
  type RotationDeps,
  type StageEvent,
} from '../../workflows/rotation/stages/index.ts';

export const KEYROTOR_VERSION = '0.1.0';

export interface RotateOptions {
  config: LoadedConfig;
  stateStore: StateStore;
  logger: Logger;
  /** rotate even if not due */
  now?: boolean;
  /** leak mode: the current key is compromised */
  leaked?: boolean;
  /** print the plan, change nothing */
  dryRun?: boolean;
  clock?: Clock;
  env?: NodeJS.ProcessEnv;
  /** who runs this (audit): cli / lambda / cloud-run / daemon */
  actor?: string;
  /** only finish unfinished rotations; start no new one (`keyrotor resume`) */
  resumeOnly?: boolean;
  /**
   * Stop cleanly when this signal aborts or at `pauseAt` (ms since epoch): a stage already talking to
   * a provider finishes, no new stage starts, a wait is cut short; the snapshot stays in the state
   * store and the result is `in_progress`. The next run resumes with the same deadlines.
   */
  signal?: AbortSignal;
  pauseAt?: number;
  /** keys rotated at the same time by rotateKeys (default 4) */
  concurrency?: number;
  /** audit, metrics, notifications, progress: told about every transition, stage and result */
  observers?: RotationObserver[];
}

/** A workflow transition, references only (for audit trails and progress). */
export interface TransitionEvent {
  key: string;
  rotationId: string;
  /** the state entered (a stage, a compensation or a final state) */
  state: string;
  at: string;
  actor: string;
  leaked: boolean;
  oldKeyId: string | null;
  newKeyId: string | null;
  oldFingerprint: string | null;
  newFingerprint: string | null;
  error: RotationContext['error'];
}

/**
 * Observers never change or fail a rotation: their errors are logged and swallowed. `onTransition`
 * is awaited in order, after the snapshot of that transition is saved (so an audit trail is durable
 * and ordered); `onResult` is awaited before rotateKey returns (notifiers must not block: queue and
 * return).
 */
export interface RotationObserver {
  onTransition?(e: TransitionEvent): void | Promise<void>;
  onStage?(key: string, rotationId: string, e: StageEvent): void;
  onResult?(r: KeyResult): void | Promise<void>;
}

export interface PlanInfo {
  due: boolean;
  reason: string;
  issuer: string;
  stores: string[];
  gates: string[];
  resume: string | null;
  /** leak mode: asked for (`--leaked`), or carried from a leak-mode rotation that did not replace the key */
  leaked: boolean;
}

export type KeyResult = RotationResult & { dryRun?: boolean; plan?: PlanInfo };

/**
 * The last rotation ran in leak mode and did not replace the compromised key, which is still the
 * current one: that result, else null. Until a rotation replaces it, every rotation of the key runs in
 * leak mode (it never restores that key, skips the consumer gates and revokes it at once), and the
 * key is due at once: a scheduled run finishes what a failed `rotate --now --leaked` started.
 */
export function unreplacedLeak(record: KeyRecord | null): (RotationResult & { oldKeyId: string }) | null {
  const last = record?.last;
  const current = record?.currentKeyId;
  if (!last?.leaked || last.outcome === 'rotated' || !current) return null;
  if (last.newKeyId && last.newKeyId === current) return null; // the new key did replace it (e.g. only the revoke needs a human)
  // a rotation that failed before it identified the old key (preflight) changed nothing: the
  // leaked key is the one still current
  const leakedId = last.oldKeyId ?? current;
  return leakedId === current ? { ...last, oldKeyId: leakedId } : null;
}

export function isDue(
  key: ResolvedKey,
  record: KeyRecord | null,
  now: number,
): { due: boolean; reason: string; nextDueAt: string | null } {
  const leak = unreplacedLeak(record);
  if (leak)
    return {
      due: true,
      reason: `the current key ${leak.oldKeyId} was reported leaked (rotation ${leak.rotationId}) and is not replaced yet`,
      nextDueAt: null,
    };
  if (!record?.lastRotatedAt) return { due: true, reason: 'never rotated by keyrotor', nextDueAt: null };
  const next = Date.parse(record.lastRotatedAt) + key.schedule.every;
  return next <= now
    ? { due: true, reason: `due since ${new Date(next).toISOString()}`, nextDueAt: new Date(next).toISOString() }
    : { due: false, reason: `next due ${new Date(next).toISOString()}`, nextDueAt: new Date(next).toISOString() };
}

/** Rotate many keys with bounded concurrency; results keep the order of `keys`. */
export async function rotateKeys(keys: ResolvedKey[], o: RotateOptions): Promise<KeyResult[]> {
  const out: KeyResult[] = new Array(keys.length);
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const i = next++;
      out[i] = await rotateKey(keys[i]!, o);
    }
  };
  await Promise.all(Array.from({ length: Math.min(keys.length, Math.max(1, o.concurrency ?? 4)) }, worker));
  return out;
}

async function notify(log: Logger, what: string, fn: () => void | Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    log.warn({ err: toKeyrotorError(e).toRecord() }, `observer failed on ${what} (the rotation is not affected)`);
  }
}

export async function rotateKey(key: ResolvedKey, o: RotateOptions): Promise<KeyResult> {
  const r = await rotateKeyInner(key, o);
  for (const obs of o.observers ?? []) if (obs.onResult) await notify(o.logger, 'result', () => obs.onResult!(r));
  return r;
}

async function rotateKeyInner(key: ResolvedKey, o: RotateOptions): Promise<KeyResult> {
  const clock = o.clock ?? systemClock;
  const log = o.logger.child({ key: key.name });
  const base = { key: key.name, rotationId: null, oldKeyId: null, newKeyId: null } as const;
  try {
    const record = await o.stateStore.read(key.name);
    const due = isDue(key, record, clock.now());
    const resume = record?.active ?? null;

    if (o.dryRun) {
      const carriedLeak = unreplacedLeak(record) !== null;
      const plan: PlanInfo = {
        due: o.now === true || due.due,
        reason: o.now && !carriedLeak ? 'rotation requested now' : due.reason,
        issuer: key.issuer.type,
        stores: key.stores.map((s) => s.type),
        gates: key.health.map((g) => g.name ?? g.type),
        resume: resume?.rotationId ?? null,
        leaked: o.leaked === true || carriedLeak,
      };
      return { ...base, outcome: 'skipped', dryRun: true, plan, oldKeyId: record?.currentKeyId ?? null };
    }
    if (!resume && o.resumeOnly) return { ...base, outcome: 'skipped', oldKeyId: record?.currentKeyId ?? null };
    if (!resume && !o.now && !due.due) {
      log.info({ reason: due.reason }, 'not due');
      return { ...base, outcome: 'skipped', oldKeyId: record?.currentKeyId ?? null };
    }

    // build the providers first: configuration problems (e.g. a missing env var) end here, exit 2,
    // before a lease or any state is written
    // providers remember facts through the state store: under the lease, fenced by its token
    const held: { lease?: Lease } = {};
    const providers = await composeKey({
      config: o.config,
      key,
      stateStore: o.stateStore,
      fence: () => held.lease,
      record,
      logger: log,
      clock,
      ...(o.env ? { env: o.env } : {}),
    });

    try {
      return await underLease(key, o, providers, log, held);
    } finally {
      await closeProviders(providers);
    }
  } catch (e) {
    const err = toKeyrotorError(e);
    log.error({ err: err.toRecord() }, err.message);
    // config/state problems are the caller's (exit 2); provider trouble before any change is safe (1)
    const outcome: Outcome = err.exitCode === 4 ? 'needs_attention' : err.exitCode === 3 ? 'locked' : 'rolled_back';
    if (err.exitCode === 2) throw err;
    return { ...base, outcome, error: err.toRecord() };
  }
}

/** One rotation (new or resumed) while holding the key's lease; `locked` when someone else holds it. */
async function underLease(
  key: ResolvedKey,
  o: RotateOptions,
  providers: KeyProviders,
  log: Logger,
  held: { lease?: Lease },
): Promise<KeyResult> {
  const base = { key: key.name, rotationId: null, oldKeyId: null, newKeyId: null } as const;
  const owner = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const got = await o.stateStore.acquire(key.name, owner, key.defaults.lease.ttl);
  if (!isLease(got)) {
    log.warn({ holder: got.owner, until: new Date(got.expiresAt).toISOString() }, 'another rotation holds the lock');
    return {
      ...base,
      outcome: 'locked',
      error: new KeyrotorError(
        'LOCKED',
        `${key.name} is being rotated by ${got.owner} (lease until ${new Date(got.expiresAt).toISOString()})`,
      ).toRecord(),
    };
  }
  const lease = got;
  held.lease = lease;
  const renew = setInterval(
    () => {
      lease
        .renew()
        .catch((e: unknown) => log.error({ err: toKeyrotorError(e).toRecord() }, 'could not renew the lease'));
    },
    Math.max(1000, key.defaults.lease.ttl / 3),
  );
  renew.unref();
  try {
    // re-read under the lease: another run may have finished in between
    const fresh = await o.stateStore.read(key.name);
    const active = fresh?.active ?? null;
    if (active) log.warn({ rotationId: active.rotationId }, 'resuming an unfinished rotation');
    return await runRotation(key, fresh, active, o, providers, log, lease);
  } finally {
    clearInterval(renew);
    delete held.lease;
    await lease
      .release()
      .catch((e: unknown) => log.warn({ err: toKeyrotorError(e).toRecord() }, 'could not release the lease'));
  }
}

const persistedSnapshotSchema = z
  .object({
    status: z.string(),
    value: z.unknown(),
    context: z.object({ rotationId: z.string(), keyName: z.string() }).passthrough(),
  })
  .passthrough();

async function runRotation(
  key: ResolvedKey,
  record: KeyRecord | null,
  resume: PersistedRotation | null,
  o: RotateOptions,
  providers: KeyProviders,
  log: Logger,
  fence: Fence,
): Promise<KeyResult> {
  const clock = o.clock ?? systemClock;

  let snapshot: unknown;
  let rotationId: string;
  if (resume) {
    if (resume.machineVersion !== MACHINE_VERSION) {
      throw new KeyrotorError(
        'STATE_VERSION',
        `rotation ${resume.rotationId} of ${key.name} was saved by machine version ${resume.machineVersion} (keyrotor ${resume.keyrotorVersion}); this keyrotor runs version ${MACHINE_VERSION}`,
        { hint: 'finish it with the keyrotor version that started it' },
      );
    }
    const parsed = persistedSnapshotSchema.safeParse(resume.snapshot);
    if (!parsed.success) {
      throw new KeyrotorError(
        'STATE_UNREADABLE',
        `the saved snapshot of rotation ${resume.rotationId} (${key.name}) is not a valid workflow snapshot`,
      );
    }
    snapshot = parsed.data;
    rotationId = resume.rotationId;
  } else {
    rotationId = newRotationId(new Date(clock.now()));
  }
  const rlog = log.child({ rotationId });

  // persistence: one write queue; stages wait for it before touching the world (write-ahead)
  let chain: Promise<void> = Promise.resolve();
  let persistError: unknown = null;
  const adopted = (fp: string) => record?.providerState[`adopted.${fp}`];
  const vault = new SecretVault();
  // graceful pause: between stages (at the write-ahead barrier) or in the middle of a wait
  let paused = false;
  let pauseNow: () => void = () => {};
  const pauseRequested = () => o.signal?.aborted === true || (o.pauseAt !== undefined && clock.now() >= o.pauseAt);
  const deps: RotationDeps = {
    resumedIn: snapshot ? String((snapshot as { value: unknown }).value) : undefined,
    issuer: providers.issuer,
    stores: providers.stores,
    gates: providers.gates,
    gateRequire: key.require,
    clock,
    logger: rlog,
    vault,
    adopted,
    verifyIntervalMs: key.defaults.verify.interval,
    verifyRevokedIntervalMs: key.defaults.verifyRevoked.interval,
    retryAttempts: 3,
    persisted: async () => {
      await new Promise<void>((r) => setImmediate(r));
      await chain;
      // never pause between `issue` and the first `stage`: the new value exists only in memory there
      const snap = actor.getSnapshot();
      const holdsOnlyInMemory = snap.value === 'stage' && snap.context.staged === 0;
      if (pauseRequested() && !holdsOnlyInMemory) {
        pauseNow();
        await new Promise<never>(() => {}); // the actor is stopped: this stage never starts
      }
      // a successor holds the lease now: stop here, touch nothing more (it owns the rotation)
      if (persistError && toKeyrotorError(persistError).code === 'LEASE_LOST') throw toKeyrotorError(persistError);
      if (persistError)
        throw new KeyrotorError(
          'STATE_UNREADABLE',
          `cannot persist the rotation state: ${toKeyrotorError(persistError).message}`,
          { cause: persistError },
        );
    },
    onStage: (e) => {
      for (const obs of o.observers ?? [])
        if (obs.onStage) void notify(rlog, 'stage', () => obs.onStage!(key.name, rotationId, e));
      const fields = {
        stage: e.stage,
        ...(e.index !== undefined ? { store: providers.stores[e.index]?.label } : {}),
        ...(e.ms !== undefined ? { ms: e.ms } : {}),
      };
      if (e.phase === 'error') rlog.warn({ ...fields, err: e.error?.toRecord() }, `${e.stage} failed`);
      else rlog.debug(fields, `${e.stage} ${e.phase}`);
    },
  };

  const inherited = o.leaked === true ? null : unreplacedLeak(record);
  if (inherited && !resume) {
    rlog.warn(
      { leakedKeyId: inherited.oldKeyId, reportedBy: inherited.rotationId },
      'the current key was reported leaked and is not replaced yet: this rotation runs in leak mode (never restores it, skips the consumer gates, revokes it at once)',
    );
  }
  const input: RotationInput = {
    rotationId,
    keyName: key.name,
    newKeyName: issuedKeyName(key.name, rotationId),
    leaked: o.leaked === true || inherited !== null,
    storeLabels: providers.stores.map((s) => s.label),
    gateNames: providers.gates.map((g) => g.name),
    timing: timingFor(key, providers.gates),
    expiresInSeconds: expiresInSecondsFor(key),
    startedAt: clock.now(),
  };
  // one machine definition for every rotation of the process; the deps are this rotation's
  const actor = createRotationActor(
    deps,
    snapshot ? { snapshot: snapshot as SnapshotFrom<RotationMachine> } : { input },
  );

  let lastState = '';
  /** the last snapshot written while the rotation was active (a leak-mode promote failure goes back to it) */
  let lastActive: PersistedRotation | null = null;
  /** persist the snapshot (not for the final one: `finish` records the result) and tell observers */
  const save = (state: string, ctx: RotationContext, persist = true) => {
    const entered = state !== lastState || ['stage', 'promote', 'demote', 'unstage', 'revoke'].includes(state);
    lastState = state;
    const persisted: PersistedRotation = {
      rotationId,
      keyName: key.name,
      machineVersion: MACHINE_VERSION,
      keyrotorVersion: KEYROTOR_VERSION,
      updatedAt: new Date(clock.now()).toISOString(),
      snapshot: actor.getPersistedSnapshot(),
    };
    if (persist) {
      lastActive = persisted;
      chain = chain
        .then(() => o.stateStore.saveActive(key.name, persisted, fence))
        .catch((e: unknown) => {
          persistError = e;
        });
    }
    if (entered && o.observers?.some((x) => x.onTransition)) {
      const ev: TransitionEvent = {
        key: key.name,
        rotationId,
        state,
        at: new Date(clock.now()).toISOString(),
        actor: o.actor ?? 'library',
        leaked: ctx.leaked,
        oldKeyId: ctx.oldKeyId,
        newKeyId: ctx.newKeyId,
        oldFingerprint: ctx.oldFingerprint,
        newFingerprint: ctx.newFingerprint,
        error: ctx.error,
      };
      for (const obs of o.observers)
        if (obs.onTransition) chain = chain.then(() => notify(rlog, 'transition', () => obs.onTransition!(ev)));
    }
  };

  const done = new Promise<SnapshotFrom<RotationMachine>>((resolve, reject) => {
    let lastValue = '';
    actor.subscribe({
      next: (s) => {
        const v = JSON.stringify(s.value);
        if (v !== lastValue && typeof s.value === 'string') rlog.info({ stage: s.value }, s.value);
        lastValue = v;
        if (s.status === 'active') save(String(s.value), s.context);
        if (s.status === 'done') {
          save(String(s.value), s.context, false);
          resolve(s);
        }
      },
      error: reject,
    });
  });
  const pausedResult = new Promise<'paused'>((resolve) => {
    pauseNow = () => {
      if (paused) return;
      paused = true;
      actor.stop();
      resolve('paused');
    };
  });
  const WAITS = new Set(['verify', 'confirm', 'verifyRevoked', 'revokeRetry']);
  const onPauseSignal = () => {
    // a wait is safe to cut short (its deadline is in the snapshot); anything else stops at the next barrier
    if (WAITS.has(String(actor.getSnapshot().value))) pauseNow();
  };
  o.signal?.addEventListener('abort', onPauseSignal, { once: true });
  const pauseTimer =
    o.pauseAt !== undefined ? setTimeout(onPauseSignal, Math.max(0, o.pauseAt - clock.now())) : undefined;
  pauseTimer?.unref();

  rlog.info({ leaked: input.leaked, resume: resume !== null }, resume ? 'resuming rotation' : 'rotation started');
  actor.start();
  const first = await Promise.race([done, pausedResult]);
  o.signal?.removeEventListener('abort', onPauseSignal);
  if (pauseTimer) clearTimeout(pauseTimer);
  await chain;
  if (first === 'paused') {
    const ctx = actor.getSnapshot().context;
    rlog.warn({ stage: String(actor.getSnapshot().value) }, 'paused: the rotation continues on the next run');
    return {
      key: key.name,
      rotationId,
      outcome: 'in_progress',
      oldKeyId: ctx.oldKeyId,
      newKeyId: ctx.newKeyId,
      stage: String(actor.getSnapshot().value) as Stage,
      startedAt: new Date(ctx.startedAt).toISOString(),
    };
  }
  const final = first;
  const ctx = final.context;
  const state = final.value as FinalState;
  const result = resultFrom(key.name, state, ctx, clock);
  // the key the stores serve now: the new one once every store was promoted and not demoted
  const allPromoted = ctx.promoted === ctx.storeLabels.length;
  // (undefined: leave the record's as it is — after a failed rollback, or when the rotation stopped
  // before it identified the old key, i.e. changed nothing)
  let serving: string | null | undefined = ctx.oldKeyId ?? undefined;
  if (state === 'rotated' || (state === 'needsAttention' && allPromoted)) serving = ctx.newKeyId;
  else if (state === 'rollbackFailed') serving = undefined;
  // Leak mode stopped at promote: the leaked key must never be restored, so the only way out is
  // forward. Keep the rotation resumable at the promote it could not finish (in the same write as the
  // result, so no crash can lose it): once the store is fixed, `keyrotor resume` (or the next
  // `rotate`) promotes the rest and revokes the leaked key.
  const keepActive = state === 'needsAttention' && ctx.leaked && ctx.error?.stage === 'promote' ? lastActive : null;
  await o.stateStore.finish(key.name, result, serving, keepActive, fence);
  const level = result.outcome === 'rotated' ? 'info' : result.outcome === 'rolled_back' ? 'warn' : 'error';
  rlog[level](
    {
      outcome: result.outcome,
      oldKeyId: result.oldKeyId,
      newKeyId: result.newKeyId,
      ...(result.leftovers?.length ? { leftovers: result.leftovers } : {}),
    },
    `rotation ${result.outcome}`,
  );
  return result;
}

function resultFrom(keyName: string, state: FinalState, ctx: RotationContext, clock: Clock): RotationResult {
  // another orchestrator's pending version blocked staging (store-level lock): we undid our part
  const lostLock = ctx.error?.code === 'LOCKED' && (state === 'rolledBack' || state === 'failed');
  const outcome: Outcome = lostLock
    ? 'locked'
    : state === 'rotated'
      ? ctx.oldKeyUnidentified
        ? 'needs_attention'
        : 'rotated'
      : state === 'rolledBack' || state === 'failed'
        ? 'rolled_back'
        : 'needs_attention';
  const error =
    state === 'rollbackFailed' && ctx.compensationError
      ? {
          ...ctx.compensationError,
          code: 'ROLLBACK_FAILED' as const,
          message: `rollback failed at ${ctx.compensationError.stage}: ${ctx.compensationError.message}${ctx.error ? ` (after: ${ctx.error.message})` : ''}`,
        }
      : (ctx.error ?? undefined);
  const stage: Stage | undefined = ctx.compensationError?.stage ?? ctx.error?.stage;
  return {
    key: keyName,
    rotationId: ctx.rotationId,
    outcome,
    oldKeyId: ctx.oldKeyId,
    // a rolled-back key no longer exists: report it so the operator can see what was discarded
    newKeyId: ctx.newKeyId,
    ...(error && state !== 'rotated' ? { error } : {}),
    ...(ctx.leftovers.length ? { leftovers: ctx.leftovers } : {}),
    ...(ctx.bootstrap ? { bootstrap: true } : {}),
    ...(ctx.leaked ? { leaked: true, oldKeyLastUsedAt: ctx.oldKeyLastUsedAt } : {}),
    ...(stage ? { stage } : {}),
    startedAt: new Date(ctx.startedAt).toISOString(),
    finishedAt: new Date(clock.now()).toISOString(),
  };
}
