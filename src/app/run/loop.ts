/**
 * The run loop of one rotation (new or resumed) while the caller holds the key's lease: load and check
 * the saved snapshot, run the actor with this rotation's deps, persist every transition (write-ahead),
 * stop cleanly when asked, and record the result.
 */
import type { SnapshotFrom } from 'xstate';
import { z } from 'zod';
import { expiresInSecondsFor, timingFor, type KeyProviders } from '../compose.ts';
import type { ResolvedKey } from '../config/schema.ts';
import { systemClock, type Clock } from '../../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../../core/errors.ts';
import { issuedKeyName, newRotationId } from '../../core/ids.ts';
import type {
  CreateKeyRequest,
  Fence,
  HealthGate,
  Issuer,
  KeyRecord,
  Logger,
  PersistedRotation,
  SecretStore,
} from '../../core/ports.ts';
import {
  MACHINE_VERSION,
  type FinalState,
  type RotationInput,
  type RotationMachine,
} from '../../../workflows/rotation/rotation.machine.ts';
import {
  createRotationActor,
  preflightReads,
  SecretVault,
  type RotationDeps,
} from '../../../workflows/rotation/stages/index.ts';
import { parkedUntilLater, unreplacedLeak } from './due.ts';
import { leaseGuard } from '../state/hold.ts';
import { pauseControl } from './pause.ts';
import { createJournal, notify, type Journal } from './persistence.ts';
import { parkedResult, pausedResult, recordAfter, resultFrom, waitingResult } from './result.ts';
import type { KeyResult, RotateOptions } from './types.ts';

const persistedSnapshotSchema = z
  .object({
    status: z.string(),
    value: z.unknown(),
    context: z.object({ rotationId: z.string(), keyName: z.string() }).passthrough(),
  })
  .passthrough();

/** The saved snapshot of an unfinished rotation, checked (stored data is input). */
function savedSnapshot(key: ResolvedKey, resume: PersistedRotation): z.infer<typeof persistedSnapshotSchema> {
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
  return parsed.data;
}

/** the store calls that change what it holds (guarded by the lease) */
const CHANGES_STORE: ReadonlySet<string> = new Set(['stage', 'promote', 'demote', 'unstage']);

export async function runRotation(
  key: ResolvedKey,
  record: KeyRecord | null,
  resume: PersistedRotation | null,
  o: RotateOptions,
  providers: KeyProviders,
  log: Logger,
  fence: Fence,
): Promise<KeyResult> {
  const clock = o.clock ?? systemClock;
  // parked by another worker between the caller's read and its lease: not ours to check yet
  if (resume && record && !o.wake && !o.now && parkedUntilLater(record, clock.now()))
    return parkedResult(key.name, resume);

  const snapshot = resume ? savedSnapshot(key, resume) : undefined;
  const rotationId = resume ? resume.rotationId : newRotationId(new Date(clock.now()));
  const rlog = log.child({ rotationId });

  // persistence: one write queue; stages wait for it before touching the world (write-ahead)
  const journal = createJournal({
    keyName: key.name,
    rotationId,
    stateStore: o.stateStore,
    fence,
    observers: o.observers,
    actor: o.actor,
    clock,
    log: rlog,
  });
  // durable waits: park when every wait in progress sleeps at least `after` (o.park; off: null)
  const parkAfter = o.park === true ? key.defaults.park.after : null;
  const parking = parkAfter === null ? null : parkingWatch(clock, parkAfter, () => pause.park());
  const adopted = (fp: string) => record?.providerState[`adopted.${fp}`];
  // the keys this process minted: one that no written snapshot names is known to nobody else
  const minted: string[] = [];
  // The token fences state writes only: before the issuer or a store is changed, and between the
  // issuer's lookup by name and its deletes, the lease is confirmed (a worker paused past its lease
  // must not delete the key a successor minted under the same name, nor write over its stores)
  const guard = leaseGuard(fence, key.defaults.lease.ttl);
  const ensure = async () => guard?.ensure();
  const issuer: Issuer = Object.create(providers.issuer, {
    create: {
      value: async (req: CreateKeyRequest) => {
        await ensure();
        const k = await providers.issuer.create(guard ? { ...req, beforeDeleteByName: ensure } : req);
        minted.push(k.keyId);
        return k;
      },
    },
    revoke: {
      value: async (keyId: string) => {
        await ensure();
        return providers.issuer.revoke(keyId);
      },
    },
  }) as Issuer;
  // (a proxy with the store as `this`: a store may keep private class fields)
  const guardedStore = (st: SecretStore): SecretStore =>
    guard
      ? new Proxy(st, {
          get(target, prop) {
            const v: unknown = Reflect.get(target, prop, target);
            if (typeof v !== 'function') return v;
            const fn = v as (...a: unknown[]) => unknown;
            if (typeof prop === 'string' && CHANGES_STORE.has(prop))
              return async (...a: unknown[]) => {
                await ensure();
                return fn.apply(target, a);
              };
            return fn.bind(target);
          },
        })
      : st;
  const deps: RotationDeps = {
    resumedIn: snapshot ? String(snapshot.value) : undefined,
    issuer,
    stores: providers.stores.map(guardedStore),
    gates: parking ? providers.gates.map((g) => parking.gate(g)) : providers.gates,
    gateRequire: key.require,
    clock: parking?.clock ?? clock,
    logger: rlog,
    vault: new SecretVault(),
    adopted,
    placeholder: (fp) => record?.providerState[`placeholder.${fp}`] !== undefined,
    verifyIntervalMs: key.defaults.verify.interval,
    verifyRevokedIntervalMs: key.defaults.verifyRevoked.interval,
    retryAttempts: 3,
    persisted: async () => {
      // The stage's actor starts before the rotation actor's observers hear of the snapshot that
      // entered the stage (xstate starts invoked actors, then notifies, in one synchronous turn): one
      // microtask later that snapshot is queued for writing. Only when it is not (a turn of the actor
      // not seen yet) is a macrotask waited, as before for every stage (~40 µs each).
      await Promise.resolve();
      if (!journal.recorded(actor.getSnapshot())) await new Promise<void>((r) => setImmediate(r));
      await journal.flushed();
      // graceful pause: between stages (here, at the write-ahead barrier) or in the middle of a wait
      await pause.atBarrier();
      const persistError = journal.failure();
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
      if (pause.isPaused()) return; // a wait cut short by the pause (or parked) is no stage failure
      for (const obs of o.observers ?? [])
        if (obs.onStage) void notify(rlog, 'stage', () => obs.onStage!(key.name, rotationId, e));
      const fields = {
        stage: e.stage,
        ...(e.index !== undefined ? { store: providers.stores[e.index]?.label } : {}),
        ...(e.ms !== undefined ? { ms: e.ms } : {}),
      };
      if (e.phase === 'error') rlog.warn({ ...fields, err: e.error?.toRecord() }, `${e.stage} failed`);
      else if (e.phase !== 'wait') rlog.debug(fields, `${e.stage} ${e.phase}`); // waits: see app/progress.ts
    },
  };

  const inherited = o.leaked === true ? null : unreplacedLeak(record);
  const leaked = o.leaked === true || inherited !== null;
  // A new rotation starts preflight's reads now (the issuer check unless in leak mode, the stores'
  // checks and current values): reads only, made while the first snapshot is written and the actor
  // starts instead of after that (the file backend's first write is an fsync). Preflight's first
  // attempt uses them; a retry reads again. A resumed rotation reads when it runs preflight, if it does.
  let early = resume ? undefined : { leaked, reads: preflightReads(deps, leaked) };
  deps.takePreflightReads = (forLeaked) => {
    const taken = early?.leaked === forLeaked ? early.reads : undefined;
    early = undefined;
    return taken;
  };
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
    leaked,
    ...(o.leaked === true && o.revokeFirst === true ? { revokeFirst: true } : {}),
    storeLabels: providers.stores.map((s) => s.label),
    gateNames: providers.gates.map((g) => g.name),
    timing: timingFor(key, providers.gates),
    expiresInSeconds: expiresInSecondsFor(key),
    startedAt: clock.now(),
  };
  // one machine definition for every rotation of the process; the deps are this rotation's
  const actor = createRotationActor(
    deps,
    // (a persisted snapshot, checked by savedSnapshot; restoring takes it as the machine's snapshot type)
    snapshot ? { snapshot: snapshot as unknown as SnapshotFrom<RotationMachine> } : { input },
  );
  const pause = pauseControl({ signal: o.signal, pauseAt: o.pauseAt, clock }, actor);

  const done = new Promise<SnapshotFrom<RotationMachine>>((resolve, reject) => {
    let lastValue = '';
    actor.subscribe({
      next: (s) => {
        const v = JSON.stringify(s.value);
        if (v !== lastValue && typeof s.value === 'string') rlog.info({ stage: s.value }, s.value);
        lastValue = v;
        // persist every active snapshot; the final one is recorded by `finish` with the result
        if (s.status === 'active') journal.record(s, actor.getPersistedSnapshot());
        if (s.status === 'done') {
          journal.record(s, null);
          resolve(s);
        }
      },
      error: reject,
    });
  });
  const disarm = pause.arm();

  rlog.info({ leaked: input.leaked, resume: resume !== null }, resume ? 'resuming rotation' : 'rotation started');
  actor.start();
  const first = await Promise.race([done, pause.paused]);
  disarm();
  await journal.flushed();
  if (first === 'parked' && parking) {
    const parked = await park(key, o, fence, journal, actor.getSnapshot(), parking.wakeAt(), rlog);
    if (parked) return parked;
  }
  if (first === 'paused' || first === 'parked') {
    const now = actor.getSnapshot();
    rlog.warn({ stage: String(now.value) }, 'paused: the rotation continues on the next run');
    return pausedResult(key.name, rotationId, String(now.value), now.context);
  }
  const ctx = first.context;
  const state = first.value as FinalState;
  const result = resultFrom(key.name, state, ctx, clock);
  const { serving, keepActive } = recordAfter(state, ctx, journal.lastActive());
  const lost = journal.failure();
  if (lost && toKeyrotorError(lost).code === 'LEASE_LOST') await discardUnrecorded(minted, journal, providers, rlog);
  await journal.finish(result, serving, keepActive);
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

/**
 * Park the stopped rotation: its last written snapshot again, now with `wakeAt` (one fenced write);
 * the caller releases the lease. Null when it cannot be parked (a failed or missing snapshot write):
 * the caller reports a pause instead, and the next run continues at once, which is always safe.
 */
async function park(
  key: ResolvedKey,
  o: RotateOptions,
  fence: Fence,
  journal: Journal,
  now: SnapshotFrom<RotationMachine>,
  wakeAtMs: number,
  log: Logger,
): Promise<KeyResult | null> {
  const last = journal.lastActive();
  const state = String(now.value);
  if (!last || journal.failure() || String((last.snapshot as { value?: unknown }).value) !== state) return null;
  const clock = o.clock ?? systemClock;
  const wakeAt = new Date(Math.max(wakeAtMs, clock.now())).toISOString();
  try {
    await o.stateStore.saveActive(key.name, { ...last, updatedAt: new Date(clock.now()).toISOString(), wakeAt }, fence);
  } catch (e) {
    const err = toKeyrotorError(e);
    if (err.code === 'LEASE_LOST') throw err;
    log.warn({ err: err.toRecord() }, 'could not save the wake time: the next run continues the rotation at once');
    return null;
  }
  log.info({ stage: state, wakeAt }, `parked at ${state}: any worker continues it from ${wakeAt}`);
  return waitingResult(key.name, last.rotationId, state, now.context, wakeAt);
}

interface ParkingWatch {
  /** the rotation's clock: its sleeps are the waits between two checks */
  clock: Clock;
  /** the gate, its checks counted (no parking while one is in flight) */
  gate(g: HealthGate): HealthGate;
  /** the earliest end of the sleeps in progress when it parked: when the wait is checked again */
  wakeAt(): number;
}

/**
 * Watches the sleeps of the rotation's waits (`pollUntil` between two checks, the revoke backoff) and
 * the health-gate checks in flight. When every poller of the wait sleeps (no check in flight) and the
 * earliest of them wakes at least `afterMs` from now, it asks `park()` (which stops the actor, only in
 * a `wait`-tagged state). Decided one macrotask after a long sleep starts, so gates whose checks ended
 * in the same turn have started their own sleeps by then.
 */
function parkingWatch(clock: Clock, afterMs: number, park: () => boolean): ParkingWatch {
  const sleeps = new Map<number, number>();
  let seq = 0;
  let checks = 0;
  let queued = false;
  let parkedAt = 0;
  const decide = () => {
    queued = false;
    if (checks > 0 || sleeps.size === 0) return;
    const wake = Math.min(...sleeps.values());
    if (wake - clock.now() < afterMs) return;
    parkedAt = wake;
    if (!park()) parkedAt = 0;
  };
  const soon = () => {
    if (queued) return;
    queued = true;
    setImmediate(decide);
  };
  return {
    clock: {
      now: () => clock.now(),
      sleep: (ms, signal) => {
        const id = ++seq;
        sleeps.set(id, clock.now() + Math.max(0, ms));
        if (ms >= afterMs) soon();
        return clock.sleep(ms, signal).finally(() => sleeps.delete(id));
      },
    },
    gate: (g) => ({
      type: g.type,
      name: g.name,
      timeoutMs: g.timeoutMs,
      intervalMs: g.intervalMs,
      async check(ctx) {
        checks++;
        try {
          return await g.check(ctx);
        } finally {
          checks--;
          soon(); // a gate that passed stops polling: the others may all be asleep now
        }
      },
    }),
    wakeAt: () => parkedAt,
  };
}

/**
 * This worker lost its lease (a successor resumed the rotation from the last snapshot it wrote). A key
 * it minted that no snapshot of its names — the create ran after the last write it got in, e.g. it
 * was paused between its write-ahead barrier and the create — is known to nobody: the successor
 * minted its own (after deleting the keys of this name it found then). Delete it by id, so the fleet
 * leaves no stray key at the issuer. Keys a written snapshot names are the successor's to handle.
 */
async function discardUnrecorded(minted: string[], journal: Journal, providers: KeyProviders, log: Logger) {
  for (const keyId of minted) {
    if (journal.wrote(keyId)) continue;
    try {
      const r = await providers.issuer.revoke(keyId);
      log.warn(
        { keyId, alreadyGone: r.alreadyGone },
        'lost the lease: deleted the key this worker minted that no record names',
      );
    } catch (e) {
      log.error(
        { keyId, err: toKeyrotorError(e).toRecord() },
        'lost the lease: could not delete the key this worker minted that no record names (keyrotor sweep finds it)',
      );
    }
  }
}
