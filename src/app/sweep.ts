/**
 * Orphan sweep: find the issuer keys keyrotor created (their names carry the marker
 * `keyrotor.<key>.<rotationId>`, see core/ids.ts) that no rotation owns any more, and delete them.
 *
 * A key is NEVER deleted when
 * - its name does not carry keyrotor's marker for one of the configured keys (hand-made keys, other
 *   tools, other keys' keys) — such keys are not even listed;
 * - it is current in any configured store (by the issuer key id in the store's metadata, by the state
 *   store's record, by `keyrotor adopt`, or — when a store's metadata names no key id — by asking the
 *   issuer which key the current value is), or pending in one (a rotation is about to promote it);
 * - it belongs to an unfinished rotation (its rotation id is the key's `active` rotation, or it is the
 *   old/new key of that rotation, or previous/pending in a store while that rotation runs): such a
 *   rotation is resumed first (`rotateKey` with `resumeOnly`), and if it is still unfinished afterwards
 *   its keys are kept;
 * - any configured store cannot be read (then nothing is deleted for that key: the sweep cannot prove
 *   a key is not served);
 * - it belongs to a different owner (service account) than the key the stores serve now.
 * The key's lease is held while its keys are judged and deleted, so no rotation of that key can start
 * in between. `dryRun` lists the verdicts and changes nothing (not even a resume).
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { closeProviders, composeKey } from './compose.ts';
import { leaseGuard, whileHolding } from './state/hold.ts';
import type { LoadedConfig } from './config/load.ts';
import type { ResolvedKey } from './config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { KeyrotorError, toKeyrotorError, type ErrorRecord } from '../core/errors.ts';
import { parseIssuedKeyName } from '../core/ids.ts';
import {
  isLease,
  type IssuerKeyInfo,
  type KeyRecord,
  type Logger,
  type StateStore,
  type StoreSlots,
} from '../core/ports.ts';
import { OUTCOME_EXIT } from '../core/stages.ts';
import { rotateKey, type KeyResult, type RotationObserver } from './run.ts';

export interface SweepOptions {
  config: LoadedConfig;
  stateStore: StateStore;
  logger: Logger;
  /** list what would be deleted; change nothing (no resume either) */
  dryRun?: boolean;
  clock?: Clock;
  env?: NodeJS.ProcessEnv;
  /** who runs this (audit of the resume): cli / lambda / cloud-run / daemon */
  actor?: string;
  observers?: RotationObserver[];
}

export type SweepAction = 'deleted' | 'would_delete' | 'kept' | 'delete_failed';

export interface SweepEntry {
  keyId: string;
  /** the issuer key name (carries the rotation id); never a value */
  name: string;
  rotationId: string;
  action: SweepAction;
  /** why it was kept, or why it is an orphan */
  reason: string;
  createdAt?: string | undefined;
  error?: ErrorRecord | undefined;
}

export type SweepOutcome =
  /** no orphan found */
  | 'clean'
  /** orphans found and deleted (or, with dryRun, listed) */
  | 'swept'
  /** some orphan could not be deleted, or a store/the issuer could not be read: nothing unsafe was done */
  | 'incomplete'
  /** another run holds the key's lease */
  | 'locked';

export interface SweepKeyResult {
  key: string;
  outcome: SweepOutcome;
  dryRun?: boolean;
  /** the unfinished rotation that was resumed first (or, with dryRun, would be) */
  resumed?: KeyResult | undefined;
  wouldResume?: string | undefined;
  entries: SweepEntry[];
  /** issuer keys not considered because their names carry no marker for this key */
  unmarked: number;
  error?: ErrorRecord | undefined;
}

/** Exit code of one key's sweep (the CLI exits with the highest). */
export function sweepExitCode(r: SweepKeyResult): number {
  const own = r.outcome === 'locked' ? 3 : r.outcome === 'incomplete' ? 1 : 0;
  return Math.max(own, r.resumed ? OUTCOME_EXIT[r.resumed.outcome] : 0);
}

/** Sweep keys one after another (each holds its own lease). */
export async function sweepKeys(keys: ResolvedKey[], o: SweepOptions): Promise<SweepKeyResult[]> {
  const out: SweepKeyResult[] = [];
  for (const k of keys) out.push(await sweepKey(k, o));
  return out;
}

interface ActiveRefs {
  rotationId: string;
  oldKeyId: string | null;
  newKeyId: string | null;
  newKeyName: string | null;
}

/** Key ids an unfinished rotation's snapshot refers to (references only; unknown shapes give nulls). */
function activeRefs(record: KeyRecord | null): ActiveRefs | null {
  const a = record?.active;
  if (!a) return null;
  const ctx = (a.snapshot as { context?: Record<string, unknown> } | null)?.context ?? {};
  const str = (v: unknown) => (typeof v === 'string' && v ? v : null);
  return {
    rotationId: a.rotationId,
    oldKeyId: str(ctx.oldKeyId),
    newKeyId: str(ctx.newKeyId),
    newKeyName: str(ctx.newKeyName),
  };
}

export async function sweepKey(key: ResolvedKey, o: SweepOptions): Promise<SweepKeyResult> {
  const log = o.logger.child({ key: key.name, op: 'sweep' });
  const base: SweepKeyResult = {
    key: key.name,
    outcome: 'clean',
    entries: [],
    unmarked: 0,
    ...(o.dryRun ? { dryRun: true } : {}),
  };

  // 1. an unfinished rotation is finished (or compensated) first: its keys are never swept
  const before = await o.stateStore.read(key.name);
  if (before?.active) {
    if (o.dryRun) {
      base.wouldResume = before.active.rotationId;
    } else {
      log.warn({ rotationId: before.active.rotationId }, 'unfinished rotation: resuming it before the sweep');
      const resumed = await rotateKey(key, {
        config: o.config,
        stateStore: o.stateStore,
        logger: o.logger,
        resumeOnly: true,
        ...(o.clock ? { clock: o.clock } : {}),
        ...(o.env ? { env: o.env } : {}),
        ...(o.actor ? { actor: o.actor } : {}),
        ...(o.observers ? { observers: o.observers } : {}),
      });
      base.resumed = resumed;
      if (resumed.outcome === 'locked')
        return { ...base, outcome: 'locked', ...(resumed.error ? { error: resumed.error } : {}) };
    }
  }

  // 2. judge and delete under the key's lease (configuration problems throw: exit 2)
  const record = await o.stateStore.read(key.name);
  const providers = await composeKey({
    config: o.config,
    key,
    stateStore: o.stateStore,
    record,
    logger: log,
    clock: o.clock ?? systemClock,
    ...(o.env ? { env: o.env } : {}),
  });
  try {
    const owner = `sweep:${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    const got = await o.stateStore.acquire(key.name, owner, key.defaults.lease.ttl);
    if (!isLease(got)) {
      log.warn({ holder: got.owner }, 'another run holds the lock; nothing swept');
      return {
        ...base,
        outcome: 'locked',
        error: new KeyrotorError(
          'LOCKED',
          `${key.name} is being rotated by ${got.owner} (lease until ${new Date(got.expiresAt).toISOString()})`,
        ).toRecord(),
      };
    }
    // a sweep paused past its lease must not delete what a successor has started using since its judgement
    const guard = leaseGuard(got, key.defaults.lease.ttl)!;
    return await whileHolding(got, key.defaults.lease.ttl, log, () =>
      judgeAndDelete(key, o, providers, base, log, () => guard.ensure()),
    );
  } catch (e) {
    const err = toKeyrotorError(e);
    if (err.exitCode === 2) throw err;
    log.error({ err: err.toRecord() }, `sweep of ${key.name} stopped: ${err.message}`);
    return { ...base, outcome: 'incomplete', error: err.toRecord() };
  } finally {
    await closeProviders(providers);
  }
}

async function judgeAndDelete(
  key: ResolvedKey,
  o: SweepOptions,
  p: Awaited<ReturnType<typeof composeKey>>,
  base: SweepKeyResult,
  log: Logger,
  stillHolding: () => Promise<void>,
): Promise<SweepKeyResult> {
  // re-read under the lease: the truth now
  const record = await o.stateStore.read(key.name);
  const active = activeRefs(record);

  // what every store holds (all must answer, or nothing is deleted)
  const slots: StoreSlots[] = [];
  for (const s of p.stores) {
    try {
      slots.push(await s.describe());
    } catch (e) {
      const err = toKeyrotorError(e);
      throw new KeyrotorError(
        err.code === 'INTERNAL' ? 'STORE_UNAVAILABLE' : err.code,
        `cannot read ${s.label} (${err.message}); nothing was deleted for ${key.name}: a key it serves cannot be ruled out`,
        {
          cause: e,
          retryable: err.retryable,
        },
      );
    }
  }
  const issuerKeys = await p.issuer.list();

  // the protected set: key id -> why
  const keep = new Map<string, string>();
  const protect = (id: string | null | undefined, why: string) => {
    if (id && !keep.has(id)) keep.set(id, why);
  };
  for (const [i, sl] of slots.entries()) {
    const label = p.stores[i]!.label;
    protect(sl.current?.meta.issuerKeyId, `current in ${label}`);
    // a pending version means some rotation (maybe one this state store does not know, e.g. another
    // installation's) is on its way to promoting it: never pull the key from under it
    protect(
      sl.pending?.meta.issuerKeyId,
      `pending in ${label}${active ? ` (rotation ${active.rotationId} is unfinished)` : ''}`,
    );
    if (active)
      protect(sl.previous?.meta.issuerKeyId, `previous in ${label} while rotation ${active.rotationId} is unfinished`);
    if (sl.current && !sl.current.meta.issuerKeyId) {
      // the store does not say which issuer key it serves: ask the issuer, keep every candidate
      const cur = await p.stores[i]!.readCurrent();
      if (cur) {
        const id = await p.issuer.identify(cur.secret);
        if (id.kind === 'found') protect(id.keyId, `current in ${label} (identified at the issuer)`);
        else if (id.kind === 'ambiguous')
          for (const c of id.candidates) protect(c, `may be current in ${label} (ambiguous identification)`);
      }
    }
  }
  protect(record?.currentKeyId, 'current key in the state record');
  for (const [k, v] of Object.entries(record?.providerState ?? {}))
    if (k.startsWith('adopted.')) protect(v, 'adopted with `keyrotor adopt`');
  if (active) {
    protect(active.oldKeyId, `old key of unfinished rotation ${active.rotationId}`);
    protect(active.newKeyId, `new key of unfinished rotation ${active.rotationId}`);
  }

  // the service account that owns what is served now: a marked key of another service account
  // (e.g. another keyrotor installation using the same key name in the same project) is not ours
  const servedOwners = new Set(
    issuerKeys
      .filter((k) => keep.has(k.keyId) && k.owner?.type === 'service_account')
      .map((k) => `service_account:${k.owner!.id}`),
  );

  const entries: SweepEntry[] = [];
  let unmarked = 0;
  let failed = false;
  for (const k of issuerKeys) {
    const marker = parseIssuedKeyName(k.name);
    if (!marker || marker.keyName !== key.name) {
      unmarked++;
      continue;
    }
    const entry = (action: SweepAction, reason: string, error?: ErrorRecord): SweepEntry => ({
      keyId: k.keyId,
      name: k.name!,
      rotationId: marker.rotationId,
      action,
      reason,
      ...(k.createdAt ? { createdAt: k.createdAt } : {}),
      ...(error ? { error } : {}),
    });
    const why = keep.get(k.keyId) ?? keptForActive(k, marker.rotationId, active) ?? keptForOwner(k, servedOwners);
    if (why) {
      entries.push(entry('kept', why));
      continue;
    }
    const reason = orphanReason(marker.rotationId, record);
    if (o.dryRun) {
      entries.push(entry('would_delete', reason));
      continue;
    }
    try {
      await stillHolding();
      const r = await p.issuer.revoke(k.keyId);
      log.warn(
        { keyId: k.keyId, name: k.name, rotationId: marker.rotationId, alreadyGone: r.alreadyGone },
        'deleted orphan key',
      );
      entries.push(entry('deleted', reason));
    } catch (e) {
      failed = true;
      const err = toKeyrotorError(e);
      log.error({ keyId: k.keyId, err: err.toRecord() }, `could not delete orphan key ${k.keyId}`);
      entries.push(entry('delete_failed', reason, err.toRecord()));
    }
  }
  const orphans = entries.filter((e) => e.action !== 'kept').length;
  const outcome: SweepOutcome = failed ? 'incomplete' : orphans > 0 ? 'swept' : 'clean';
  log.info({ outcome, orphans, kept: entries.length - orphans, unmarked }, `sweep ${outcome}`);
  return { ...base, outcome, entries, unmarked };
}

function keptForActive(k: IssuerKeyInfo, rotationId: string, active: ActiveRefs | null): string | undefined {
  if (!active) return undefined;
  if (rotationId === active.rotationId || (active.newKeyName && k.name === active.newKeyName)) {
    return `created by unfinished rotation ${active.rotationId}: run \`keyrotor resume\` (it finishes or discards it)`;
  }
  return undefined;
}

function keptForOwner(k: IssuerKeyInfo, servedOwners: Set<string>): string | undefined {
  if (k.owner?.type !== 'service_account' || servedOwners.size === 0) return undefined;
  const o = `service_account:${k.owner.id}`;
  return servedOwners.has(o)
    ? undefined
    : `owned by ${o}, not by the owner of the key the stores serve (${[...servedOwners].join(', ')})`;
}

function orphanReason(rotationId: string, record: KeyRecord | null): string {
  const last = record?.last;
  if (last?.rotationId === rotationId)
    return `left by rotation ${rotationId} (ended ${last.outcome}); not current in any store`;
  return `left by rotation ${rotationId}, which is not running; not current in any store`;
}
