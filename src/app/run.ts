/**
 * Start or resume one rotation per key. Every entry point (CLI, Lambda, Cloud Run, daemon) calls
 * `rotateKey` / `rotateKeys`. This file decides whether a key runs (due, dry run, resume only), builds
 * its providers and holds its lease; the parts live in `run/`:
 *   run/due.ts          is a key due; does an unreplaced leak carry leak mode over
 *   run/loop.ts         the run loop of one rotation under the lease (actor, restore, result)
 *   run/persistence.ts  write-ahead snapshot queue and the observer fan-out
 *   run/pause.ts        stopping cleanly on `signal` / `pauseAt`
 *   run/result.ts       final state -> result and what the key's record keeps
 *   run/types.ts        options, results, observer and transition types
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { closeProviders, composeKey, type KeyProviders } from './compose.ts';
import { whileHolding } from './state/hold.ts';
import type { ResolvedKey } from './config/schema.ts';
import { systemClock } from '../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import { isLease, type ClaimCandidate, type Lease, type Logger } from '../core/ports.ts';
import { claimByAcquire, readEach } from './state/claim.ts';
import type { Outcome } from '../core/stages.ts';
import { isDue, parkedUntilLater, unreplacedLeak } from './run/due.ts';
import { runRotation } from './run/loop.ts';
import { notify } from './run/persistence.ts';
import { parkedResult } from './run/result.ts';
import type { KeyResult, PlanInfo, RotateOptions } from './run/types.ts';

export { isDue, parkedUntilLater, resumableAt, unreplacedLeak } from './run/due.ts';
export {
  KEYROTOR_VERSION,
  type KeyResult,
  type PlanInfo,
  type RotateOptions,
  type RotationObserver,
  type TransitionEvent,
} from './run/types.ts';

/**
 * Rotate many keys with bounded concurrency; results keep the order of `keys`.
 *
 * A scheduled run (not `--now`, not a dry run, not `resume`) claims its work in the state backend
 * (docs/state-backends.md "Claiming"): one bulk read decides which keys look due, then the worker
 * claims leases on up to `concurrency` of them (oldest due first, a rotation in progress first of
 * all), claims again as slots free up, and stops when nothing due is left that it can claim. Several
 * workers on one backend so share the due keys without trying each other's leases. The record read
 * again under the lease decides finally (a key another worker rotated meanwhile is released). Due
 * keys still held by another worker when this one runs out of work go through the per-key path at
 * the end (`locked`, or taken over once the holder's lease expired).
 */
export async function rotateKeys(keys: ResolvedKey[], o: RotateOptions): Promise<KeyResult[]> {
  if (o.dryRun || o.now || o.wake || o.resumeOnly || keys.length === 0) return rotateEach(keys, o);
  return rotateClaiming(keys, o);
}

/** Each key through the per-key path (`rotateKey`: read, decide, acquire its lease). */
async function rotateEach(keys: ResolvedKey[], o: RotateOptions): Promise<KeyResult[]> {
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

async function rotateClaiming(keys: ResolvedKey[], o: RotateOptions): Promise<KeyResult[]> {
  const clock = o.clock ?? systemClock;
  const store = o.stateStore;
  const limit = Math.max(1, o.concurrency ?? 4);
  const owner = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const byName = new Map(keys.map((k) => [k.name, k]));
  const results = new Map<string, KeyResult>();
  const running = new Map<string, Promise<void>>();
  let candidates: ClaimCandidate[] = [];
  let since = 0;
  let failure: { error: unknown } | undefined;

  /** one bulk read of `names`: which are due (candidates), which are not (results) */
  const survey = async (names: string[]) => {
    const batch = store.readMany ? await store.readMany(names) : await readEach(store, names, clock.now());
    since = batch.readAt;
    candidates = [];
    const now = clock.now();
    for (const name of names) {
      const key = byName.get(name)!;
      const rec = batch.records.get(name) ?? null;
      const base = { key: name, rotationId: null, oldKeyId: null, newKeyId: null } as const;
      if (rec === 'unreadable') continue; // the per-key path at the end reports the damage
      const ttlMs = key.defaults.lease.ttl;
      if (rec?.active) {
        if (parkedUntilLater(rec, now)) {
          o.logger
            .child({ key: name })
            .info(
              { rotationId: rec.active.rotationId, wakeAt: rec.active.wakeAt },
              'parked at a gate until its wake time',
            );
          results.set(name, parkedResult(name, rec.active));
        } else candidates.push({ keyName: name, dueAt: 0, ttlMs }); // a rotation in progress: first of all
        continue;
      }
      const due = isDue(key, rec, now);
      if (!due.due) {
        o.logger.child({ key: name }).info({ reason: due.reason }, 'not due');
        results.set(name, { ...base, outcome: 'skipped', oldKeyId: rec?.currentKeyId ?? null });
        continue;
      }
      candidates.push({ keyName: name, dueAt: due.nextDueAt ? Date.parse(due.nextDueAt) : 0, ttlMs });
    }
  };

  const start = (keyName: string, lease: Lease) => {
    const key = byName.get(keyName)!;
    const p = (async () => {
      try {
        const log = o.logger.child({ key: keyName });
        const r = await whileHolding(lease, key.defaults.lease.ttl, log, () => rotateKeyInner(key, o, lease));
        results.set(keyName, await reported(r, o));
      } catch (e) {
        failure ??= { error: e };
      } finally {
        running.delete(keyName);
      }
    })();
    running.set(keyName, p);
  };

  await survey(keys.map((k) => k.name));
  let dry = false; // a claim right after a fresh read granted nothing: what is left is held elsewhere
  let fresh = true;
  while (!failure && !o.signal?.aborted) {
    const open = candidates.filter((c) => !running.has(c.keyName) && !results.has(c.keyName));
    if (!dry && open.length > 0 && running.size < limit) {
      try {
        const got = store.claim
          ? await store.claim(open, owner, limit - running.size, since)
          : await claimByAcquire(store, open, owner, limit - running.size);
        for (const g of got) start(g.keyName, g.lease);
        if (got.length > 0) fresh = false;
        else if (fresh) dry = true;
        else {
          // granted nothing: the records read may be stale (other workers ran keys since): read again
          await survey(open.map((c) => c.keyName));
          fresh = true;
        }
      } catch (e) {
        failure ??= { error: e };
      }
      continue;
    }
    if (running.size === 0) break;
    await Promise.race(running.values());
  }
  await Promise.all(running.values());
  if (failure) throw failure.error;
  // what this worker did not run: held by another worker (locked, or taken over if its lease ran
  // out meanwhile), interrupted before it started, or a record to report on its own
  const rest = keys.filter((k) => !results.has(k.name));
  for (const [i, r] of (await rotateEach(rest, o)).entries()) results.set(rest[i]!.name, r);
  return keys.map((k) => results.get(k.name)!);
}

export async function rotateKey(key: ResolvedKey, o: RotateOptions): Promise<KeyResult> {
  return reported(await rotateKeyInner(key, o), o);
}

/** tell the observers a key's result */
async function reported(r: KeyResult, o: RotateOptions): Promise<KeyResult> {
  if (r.untouched) return r; // a parked rotation left alone until its wake time: nothing happened
  for (const obs of o.observers ?? []) if (obs.onResult) await notify(o.logger, 'result', () => obs.onResult!(r));
  return r;
}

/**
 * One key: read its record, decide, build its providers, run under its lease. `claimed`: the caller
 * holds the key's lease already (a claim) and renews and releases it; the record is read under it.
 */
async function rotateKeyInner(key: ResolvedKey, o: RotateOptions, claimed?: Lease): Promise<KeyResult> {
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
    // a parked rotation (durable wait) is left alone until its wake time: no lease, no write
    if (resume && !o.now && !o.wake && parkedUntilLater(record, clock.now())) return parkedResult(key.name, resume);
    if (!resume && o.signal?.aborted) {
      log.warn({}, 'not started: stopping (interrupted)');
      return { ...base, outcome: 'skipped', oldKeyId: record?.currentKeyId ?? null };
    }
    if (!resume && !o.now && !due.due) {
      // claimed: the record re-read under the lease says another worker rotated it since the claim
      log.info({ reason: due.reason }, claimed ? 'not due (another worker rotated it since)' : 'not due');
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
      if (claimed) {
        held.lease = claimed;
        try {
          if (resume) log.warn({ rotationId: resume.rotationId }, 'resuming an unfinished rotation');
          return await runRotation(key, record, resume, o, providers, log, claimed);
        } finally {
          delete held.lease;
        }
      }
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
  return whileHolding(lease, key.defaults.lease.ttl, log, async () => {
    try {
      // re-read under the lease: another run may have finished in between
      const fresh = await o.stateStore.read(key.name);
      const active = fresh?.active ?? null;
      if (!active && (o.resumeOnly || (!o.now && !isDue(key, fresh, (o.clock ?? systemClock).now()).due))) {
        // another worker finished the rotation read before the lease (or rotated the key): not again
        log.info({}, 'not due (another worker rotated it since)');
        return { ...base, outcome: 'skipped', oldKeyId: fresh?.currentKeyId ?? null };
      }
      if (active) log.warn({ rotationId: active.rotationId }, 'resuming an unfinished rotation');
      return await runRotation(key, fresh, active, o, providers, log, lease);
    } finally {
      delete held.lease;
    }
  });
}
