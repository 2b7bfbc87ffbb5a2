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
import { isLease, type Lease, type Logger } from '../core/ports.ts';
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

export async function rotateKey(key: ResolvedKey, o: RotateOptions): Promise<KeyResult> {
  const r = await rotateKeyInner(key, o);
  if (r.untouched) return r; // a parked rotation left alone until its wake time: nothing happened
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
    // a parked rotation (durable wait) is left alone until its wake time: no lease, no write
    if (resume && !o.now && !o.wake && parkedUntilLater(record, clock.now())) return parkedResult(key.name, resume);
    if (!resume && o.signal?.aborted) {
      log.warn({}, 'not started: stopping (interrupted)');
      return { ...base, outcome: 'skipped', oldKeyId: record?.currentKeyId ?? null };
    }
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
  return whileHolding(lease, key.defaults.lease.ttl, log, async () => {
    try {
      // re-read under the lease: another run may have finished in between
      const fresh = await o.stateStore.read(key.name);
      const active = fresh?.active ?? null;
      if (active) log.warn({ rotationId: active.rotationId }, 'resuming an unfinished rotation');
      return await runRotation(key, fresh, active, o, providers, log, lease);
    } finally {
      delete held.lease;
    }
  });
}
