/**
 * Inventory (`keyrotor inventory`): every key of the OpenAI projects the config names, with owner,
 * age, last use and expiry, and the risky ones flagged:
 *
 *   unmanaged   not made by keyrotor for a configured key, and not the current key of one
 *   orphaned    named by keyrotor (`keyrotor.<key>.<rotationId>`) but neither current nor part of a
 *               running rotation: a leftover (delete it, or `keyrotor sweep`)
 *   stale       not used for `unusedDays` (or never used and older than that)
 *   no_expiry   no expiry date: it lives until someone deletes it
 *   user_owned  owned by a user, not a service account: it dies with that person's access and is
 *               not what applications should run on
 *
 * Read-only: it only lists (the Issuer port's `list()`), and reads the state store.
 */
import { systemClock, type Clock } from '../core/clock.ts';
import type { LoadedConfig } from './config/load.ts';
import type { ResolvedKey } from './config/schema.ts';
import { toKeyrotorError, type ErrorRecord } from '../core/errors.ts';
import { parseIssuedKeyName } from '../core/ids.ts';
import type { IssuerKeyInfo, KeyRecord, Logger, ProviderContext, StateStore } from '../core/ports.ts';
import { createIssuer } from '../../providers/index.ts';

export const INVENTORY_FLAGS = ['unmanaged', 'orphaned', 'stale', 'no_expiry', 'user_owned'] as const;
export type InventoryFlag = (typeof INVENTORY_FLAGS)[number];

export interface InventoryKey {
  project: string;
  keyId: string;
  name: string | null;
  owner: { type: string; id: string; name?: string | undefined } | null;
  createdAt: string | null;
  ageDays: number | null;
  lastUsedAt: string | null;
  expiresAt: string | null;
  /** the configured key it belongs to (current, or being rotated in) */
  managedBy: string | null;
  role: 'current' | 'rotating' | null;
  flags: { flag: InventoryFlag; reason: string }[];
}

export interface InventoryProject {
  project: string;
  /** configured keys whose issuer is this project */
  keys: string[];
  listed: number;
  error?: ErrorRecord;
}

export interface InventoryReport {
  generatedAt: string;
  unusedDays: number;
  projects: InventoryProject[];
  keys: InventoryKey[];
  /** keys with at least one flag */
  flagged: number;
}

export interface InventoryOptions {
  config: LoadedConfig;
  /** limit to these configured keys' projects (default: every key) */
  keys?: ResolvedKey[];
  stateStore: StateStore;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** a key unused for this many days is stale (default 30) */
  unusedDays?: number;
}

interface Scope {
  id: string;
  project: string;
  keys: ResolvedKey[];
}

const DAY = 86_400_000;

export async function runInventory(o: InventoryOptions): Promise<InventoryReport> {
  const clock = o.clock ?? systemClock;
  const now = clock.now();
  const unusedDays = o.unusedDays ?? 30;
  const scopes = new Map<string, Scope>();
  for (const k of o.keys ?? o.config.keys) {
    if (k.issuer.type !== 'openai') continue;
    const id = `${k.issuer.baseURL}|${k.issuer.organization ?? ''}|${k.issuer.project}`;
    const s = scopes.get(id) ?? { id, project: k.issuer.project, keys: [] };
    s.keys.push(k);
    scopes.set(id, s);
  }

  const records = new Map<string, KeyRecord | null>();
  for (const k of o.config.keys) records.set(k.name, await o.stateStore.read(k.name).catch(() => null));

  const report: InventoryReport = {
    generatedAt: new Date(now).toISOString(),
    unusedDays,
    projects: [],
    keys: [],
    flagged: 0,
  };
  for (const scope of scopes.values()) {
    const entry: InventoryProject = { project: scope.project, keys: scope.keys.map((k) => k.name), listed: 0 };
    report.projects.push(entry);
    let listed: IssuerKeyInfo[];
    try {
      listed = await listScope(scope, o, records, clock);
    } catch (e) {
      entry.error = toKeyrotorError(e).toRecord();
      continue;
    }
    entry.listed = listed.length;
    for (const info of listed) report.keys.push(classify(info, scope, records, o.config, now, unusedDays));
  }
  report.flagged = report.keys.filter((k) => k.flags.length > 0).length;
  return report;
}

async function listScope(
  scope: Scope,
  o: InventoryOptions,
  records: Map<string, KeyRecord | null>,
  clock: Clock,
): Promise<IssuerKeyInfo[]> {
  const first = scope.keys[0]!;
  const state = records.get(first.name)?.providerState ?? {};
  const ctx: ProviderContext = {
    keyName: first.name,
    stateDir: o.config.stateDir,
    configDir: o.config.dir,
    logger: o.logger,
    clock,
    env: o.env ?? process.env,
    providerState: { get: (k) => state[k], set: async () => {} }, // read-only
  };
  const issuer = await createIssuer(first.issuer, ctx);
  try {
    return await issuer.list();
  } finally {
    await issuer.close?.().catch(() => undefined);
  }
}

function classify(
  info: IssuerKeyInfo,
  scope: Scope,
  records: Map<string, KeyRecord | null>,
  config: LoadedConfig,
  now: number,
  unusedDays: number,
): InventoryKey {
  const flags: InventoryKey['flags'] = [];
  let managedBy: string | null = null;
  let role: InventoryKey['role'] = null;

  // current for a configured key of this project?
  for (const k of scope.keys) {
    const rec = records.get(k.name);
    if (!rec) continue;
    const current = new Set<string>();
    if (rec.currentKeyId) current.add(rec.currentKeyId);
    // a rotation that ended in needs_attention past promote: the new key is what the stores serve
    const last = rec.last;
    if (
      last?.outcome === 'needs_attention' &&
      last.newKeyId &&
      (!last.error || last.stage === 'revoke' || last.stage === 'verifyRevoked')
    )
      current.add(last.newKeyId);
    if (current.has(info.keyId)) {
      managedBy = k.name;
      role = 'current';
      break;
    }
  }

  const marker = parseIssuedKeyName(info.name);
  if (!managedBy && marker) {
    const owner = config.keys.find((k) => k.name === marker.keyName);
    const rec = records.get(marker.keyName);
    if (owner && scope.keys.includes(owner) && rec?.active?.rotationId === marker.rotationId) {
      managedBy = owner.name;
      role = 'rotating';
    } else if (owner && scope.keys.includes(owner)) {
      managedBy = owner.name;
      flags.push({
        flag: 'orphaned',
        reason: `made by keyrotor for ${owner.name} in rotation ${marker.rotationId}, but not current and no rotation is running: a leftover; delete it (\`keyrotor sweep\`)`,
      });
    } else {
      flags.push({
        flag: 'unmanaged',
        reason: `named for keyrotor key "${marker.keyName}", which this config does not manage in ${scope.project}`,
      });
    }
  } else if (!managedBy) {
    flags.push({
      flag: 'unmanaged',
      reason:
        'not made by keyrotor and not the current key of any configured key: adopt it (`keyrotor adopt`) or delete it',
    });
  }

  const created = info.createdAt ? Date.parse(info.createdAt) : NaN;
  const lastUsed = info.lastUsedAt ? Date.parse(info.lastUsedAt) : NaN;
  const limit = unusedDays * DAY;
  if (role !== 'rotating') {
    if (!Number.isNaN(lastUsed) && now - lastUsed > limit) {
      flags.push({
        flag: 'stale',
        reason: `not used for ${Math.floor((now - lastUsed) / DAY)} days (limit ${unusedDays}): delete it if nothing needs it`,
      });
    } else if (info.lastUsedAt === null && !Number.isNaN(created) && now - created > limit) {
      flags.push({
        flag: 'stale',
        reason: `never used in the ${Math.floor((now - created) / DAY)} days since it was created (limit ${unusedDays}): delete it`,
      });
    }
  }
  if (info.expiresAt === null) {
    flags.push({
      flag: 'no_expiry',
      reason: managedBy
        ? `no expiry date: set the issuer's expiresAfter (default auto) so a forgotten key dies by itself`
        : 'no expiry date: it lives until someone deletes it',
    });
  }
  if (info.owner?.type === 'user') {
    flags.push({
      flag: 'user_owned',
      reason: `owned by user ${info.owner.name ?? info.owner.id}: applications should use a service-account key (it does not die with a person's access)`,
    });
  }

  return {
    project: scope.project,
    keyId: info.keyId,
    name: info.name,
    owner: info.owner
      ? { type: info.owner.type, id: info.owner.id, ...(info.owner.name ? { name: info.owner.name } : {}) }
      : null,
    createdAt: info.createdAt ?? null,
    ageDays: Number.isNaN(created) ? null : Math.floor((now - created) / DAY),
    lastUsedAt: info.lastUsedAt ?? null,
    expiresAt: info.expiresAt ?? null,
    managedBy,
    role,
    flags,
  };
}
