/**
 * The run loop of one rotation (new or resumed) while the caller holds the key's lease: load and check
 * the saved snapshot, run the actor with this rotation's deps, persist every transition (write-ahead),
 * stop cleanly when asked, and record the result.
 */
import type { SnapshotFrom } from 'xstate';
import { z } from 'zod';
import { expiresInSecondsFor, timingFor, type KeyProviders } from '../compose.ts';
import type { ResolvedKey } from '../config/schema.ts';
import { systemClock } from '../../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../../core/errors.ts';
import { issuedKeyName, newRotationId } from '../../core/ids.ts';
import type { CreateKeyRequest, Fence, Issuer, KeyRecord, Logger, PersistedRotation } from '../../core/ports.ts';
import {
  MACHINE_VERSION,
  type FinalState,
  type RotationInput,
  type RotationMachine,
} from '../../../workflows/rotation/rotation.machine.ts';
import { createRotationActor, SecretVault, type RotationDeps } from '../../../workflows/rotation/stages/index.ts';
import { unreplacedLeak } from './due.ts';
import { pauseControl } from './pause.ts';
import { createJournal, notify, type Journal } from './persistence.ts';
import { pausedResult, recordAfter, resultFrom } from './result.ts';
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
  const adopted = (fp: string) => record?.providerState[`adopted.${fp}`];
  // the keys this process minted: one that no written snapshot names is known to nobody else
  const minted: string[] = [];
  const issuer: Issuer = Object.create(providers.issuer, {
    create: {
      value: async (req: CreateKeyRequest) => {
        const k = await providers.issuer.create(req);
        minted.push(k.keyId);
        return k;
      },
    },
  }) as Issuer;
  const deps: RotationDeps = {
    resumedIn: snapshot ? String(snapshot.value) : undefined,
    issuer,
    stores: providers.stores,
    gates: providers.gates,
    gateRequire: key.require,
    clock,
    logger: rlog,
    vault: new SecretVault(),
    adopted,
    placeholder: (fp) => record?.providerState[`placeholder.${fp}`] !== undefined,
    verifyIntervalMs: key.defaults.verify.interval,
    verifyRevokedIntervalMs: key.defaults.verifyRevoked.interval,
    retryAttempts: 3,
    persisted: async () => {
      await new Promise<void>((r) => setImmediate(r));
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
      if (pause.isPaused()) return; // a wait cut short by the pause is no stage failure
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
  if (first === 'paused') {
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
  await o.stateStore.finish(key.name, result, serving, keepActive, fence);
  await journal.announceFinal();
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
