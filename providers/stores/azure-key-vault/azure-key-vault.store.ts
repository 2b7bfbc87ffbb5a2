/**
 * Azure Key Vault secret store.
 *
 * Key Vault has no staging: every `setSecret` is the new latest version at once, and consumers read the
 * latest version. So:
 *
 * - stage   writes the new value to a side secret `<name>--pending` (tags: rotation, seq, issuer key id,
 *           fingerprint, created). Idempotent: an enabled side version of this rotation (or a version of
 *           `<name>` already promoted from it) is reused. An enabled side version of ANOTHER rotation
 *           blocks with LOCKED (a second lock beside the state store's lease).
 * - promote copies the pending value into `<name>` as a new version tagged with this rotation and
 *           `keyrotor-seq` = highest seq + 1, then clears the side version. Idempotent: if the latest
 *           version of `<name>` already carries this rotation, only the clearing is (re)done.
 * - clearing a side version = disabling it (`updateSecretProperties(..., { enabled: false })`). Deleting a
 *           secret is a soft delete (long-running, blocks reuse of the name until purged, needs delete and
 *           purge permissions); disabling needs only the permissions the store uses anyway.
 * - demote  (this rotation is current) sets the previous value again as a NEW version (tags copied, seq
 *           bumped, plus `keyrotor-restored-from` and `keyrotor-rollback-of`) and only then disables the
 *           bad version(s): disabling first would make reads of latest fail with 403 SecretDisabled.
 *           Bootstrap (nothing before): the bad version is disabled, so nothing is current. Idempotent:
 *           a retry after a crash between the two steps finds the restored copy and only disables.
 * - unstage disables this rotation's enabled side version(s). Never touches `<name>`.
 *
 * "Current" is what consumers get: the latest version of `<name>` (GET without version) when it is
 * enabled; a disabled latest means nothing is current. "Previous" is the enabled version with the
 * next-lower `keyrotor-seq` (version list order is not chronological and timestamps have 1 s
 * granularity, hence our own sequence), skipping copies of the current value.
 *
 * Version ids: `versionId` is the id of the version written at stage (in the side secret); the copy in
 * `<name>` carries it in `keyrotor-staged-version`, and so does a restored copy. So `stage`'s result,
 * `readPending`, and `readCurrent` after promote (or after a rollback to it) all report the same id.
 * Versions keyrotor did not write report their own Key Vault version id.
 */
import {
  SecretClient,
  type KeyVaultSecret,
  type SecretClientOptions,
  type SecretProperties,
} from '@azure/keyvault-secrets';
import { KeyrotorError } from '../../../src/core/errors.ts';
import { Secret } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';
import type {
  Logger,
  ProviderContext,
  SecretStore,
  SlotInfo,
  StageRequest,
  StoreSlots,
  StoredVersion,
  VersionMeta,
} from '../../../src/core/ports.ts';
import type { AzureKeyVaultStoreConfig } from './azure-key-vault.schema.ts';
import { StepMemo } from '../../common/step-memo.ts';
import { isDisabled, isNotFound, malformedAnswer, mapAzureError, type AzureOp } from './azure-key-vault.errors.ts';

export type TokenCredential = ConstructorParameters<typeof SecretClient>[1];

/** What tests and embedders may inject (the seam every store offers as its factory's third argument). */
export interface AzureKeyVaultStoreDeps {
  /** default: DefaultAzureCredential */
  credential?: TokenCredential | undefined;
  /** SDK pipeline options (tests: `tlsOptions`, `disableChallengeResourceVerification`, `retryOptions`) */
  clientOptions?: SecretClientOptions | undefined;
}

export const PENDING_SUFFIX = '--pending';

export const TAG = {
  rotation: 'keyrotor-rotation',
  seq: 'keyrotor-seq',
  keyId: 'keyrotor-key-id',
  fingerprint: 'keyrotor-fp',
  created: 'keyrotor-created',
  stagedVersion: 'keyrotor-staged-version',
  restoredFrom: 'keyrotor-restored-from',
  rollbackOf: 'keyrotor-rollback-of',
} as const;

type Tags = Record<string, string>;

interface VersionInfo {
  version: string;
  enabled: boolean;
  tags: Tags;
  createdMs: number;
}

/** what one step remembers for the next (see `memo`) */
interface Known {
  name: VersionInfo[];
  /** the latest version of <name> (what consumers read), as check() saw it */
  latest: KnownLatest;
  side: VersionInfo[];
  pending?: { rotationId: string; version: string; secret: Secret; meta: VersionMeta } | undefined;
  /** what stage wrote, for promote (readPending uses `pending`, not this) */
  staged?: { version: string; secret: Secret } | undefined;
}

/** the latest version as check() saw it, with its value inside a Secret */
type KnownLatest = { kind: 'none' | 'disabled' } | { kind: 'ok'; info: VersionInfo; current: StoredVersion };

type Latest = { kind: 'none' } | { kind: 'disabled' } | { kind: 'ok'; info: VersionInfo; secret: KeyVaultSecret };

function toInfo(p: SecretProperties): VersionInfo {
  return {
    version: p.version ?? '',
    enabled: p.enabled !== false,
    tags: { ...(p.tags ?? {}) },
    createdMs: p.createdOn?.getTime() ?? 0,
  };
}

function seqOf(v: VersionInfo): number | undefined {
  const raw = v.tags[TAG.seq];
  if (raw === undefined || !/^\d+$/.test(raw)) return undefined;
  return Number(raw);
}

/** order: our sequence first (untagged versions count as 0), then creation time */
function compareKey(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}
const keyOf = (v: VersionInfo): [number, number] => [seqOf(v) ?? 0, v.createdMs];

function newest(vs: VersionInfo[]): VersionInfo | undefined {
  let best: VersionInfo | undefined;
  for (const v of vs) if (!best || compareKey(keyOf(v), keyOf(best)) > 0) best = v;
  return best;
}

function maxSeq(vs: VersionInfo[]): number {
  return vs.reduce((m, v) => Math.max(m, seqOf(v) ?? 0), 0);
}

function metaOf(tags: Tags): VersionMeta {
  const meta: VersionMeta = {};
  if (tags[TAG.rotation]) meta.rotationId = tags[TAG.rotation];
  if (tags[TAG.keyId]) meta.issuerKeyId = tags[TAG.keyId];
  if (tags[TAG.fingerprint]) meta.fingerprint = tags[TAG.fingerprint];
  if (tags[TAG.created]) meta.createdAt = tags[TAG.created];
  return meta;
}

/** the id reported to the workflow: the staged version's id when keyrotor wrote it (see header) */
function logicalId(v: VersionInfo): string {
  return v.tags[TAG.stagedVersion] ?? v.version;
}

/**
 * The version consumers had before `cur`: enabled, ordered below `cur`, not `cur` itself, not the
 * version `cur` was restored from, not another copy of the same value (same fingerprint), and not
 * written by `excludeRotation`.
 */
function pickPrevious(vs: VersionInfo[], cur: VersionInfo, excludeRotation?: string): VersionInfo | undefined {
  const curKey: [number, number] = [seqOf(cur) ?? Number.POSITIVE_INFINITY, cur.createdMs];
  const curFp = cur.tags[TAG.fingerprint];
  const candidates = vs.filter(
    (v) =>
      v.enabled &&
      v.version !== cur.version &&
      v.version !== cur.tags[TAG.restoredFrom] &&
      !(curFp && v.tags[TAG.fingerprint] === curFp) &&
      (excludeRotation === undefined || v.tags[TAG.rotation] !== excludeRotation) &&
      compareKey(keyOf(v), curKey) < 0,
  );
  return newest(candidates);
}

function vaultNameOf(vaultUrl: string): string {
  try {
    return new URL(vaultUrl).hostname.split('.')[0] ?? vaultUrl;
  } catch {
    return vaultUrl;
  }
}

class AzureKeyVaultStore implements SecretStore {
  readonly type = 'azure-key-vault';
  readonly label: string;
  private readonly client: SecretClient;
  private readonly name: string;
  private readonly side: string;
  private readonly vaultUrl: string;
  private readonly log: Logger;
  /**
   * What the last step read or wrote, for the next step of the same rotation in this process (see
   * providers/common/step-memo.ts): the version lists and the latest version after check; after stage
   * also the side version it wrote. Values only inside a Secret; never persisted.
   */
  private readonly memo = new StepMemo<Known>();

  constructor(
    cfg: AzureKeyVaultStoreConfig,
    ctx: ProviderContext,
    deps: AzureKeyVaultStoreDeps & { credential: TokenCredential },
  ) {
    this.vaultUrl = cfg.vaultUrl.replace(/\/+$/, '');
    this.name = cfg.name;
    this.side = `${cfg.name}${PENDING_SUFFIX}`;
    this.label = `azure-key-vault:${this.vaultUrl}/secrets/${this.name}`;
    if (!this.vaultUrl.startsWith('https://')) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `${this.label}: vaultUrl must be https (the Key Vault SDK refuses to send tokens over plain http)`,
        {
          hint: 'use the vault URI shown in the portal, e.g. https://<vault-name>.vault.azure.net',
        },
      );
    }
    if (this.side.length > 127) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `${this.label}: the secret name is too long to add the "${PENDING_SUFFIX}" side secret (max ${127 - PENDING_SUFFIX.length} characters)`,
        {
          hint: 'use a shorter Key Vault secret name',
        },
      );
    }
    this.client = new SecretClient(this.vaultUrl, deps.credential, deps.clientOptions ?? {});
    this.log = ctx.logger.child({ store: this.label });
  }

  private target(secretName: string): string {
    return `azure-key-vault:${this.vaultUrl}/secrets/${secretName}`;
  }

  private async call<T>(op: AzureOp, secretName: string, stage: Stage | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw mapAzureError(e, { op, target: this.target(secretName), stage });
    }
  }

  // ------------------------------------------------------------ SDK access (one place each)

  /** a 200 without what the call must return (see errors.ts `malformedAnswer`) */
  private malformed(op: AzureOp, secretName: string, what: string, stage?: Stage): KeyrotorError {
    return malformedAnswer({ op, target: this.target(secretName), stage }, what);
  }

  private async versions(secretName: string, stage?: Stage): Promise<VersionInfo[]> {
    const out: VersionInfo[] = [];
    try {
      for await (const p of this.client.listPropertiesOfSecretVersions(secretName)) out.push(toInfo(p));
    } catch (e) {
      if (isNotFound(e)) return [];
      throw mapAzureError(e, { op: 'listVersions', target: this.target(secretName), stage });
    }
    // never act on a list with holes: a version without an id cannot be told apart from the others
    if (out.some((v) => !v.version)) throw this.malformed('listVersions', secretName, 'a version without an id', stage);
    return out;
  }

  /** a read answer must name its version and carry a value field (empty is checked in `wrap`) */
  private checkedRead(secretName: string, s: KeyVaultSecret, stage?: Stage): KeyVaultSecret {
    if (!s.properties?.version) throw this.malformed('getSecret', secretName, 'no version id', stage);
    if (typeof s.value !== 'string') throw this.malformed('getSecret', secretName, 'no value', stage);
    return s;
  }

  /** the latest version (what consumers read) */
  private async latest(secretName: string, stage?: Stage): Promise<Latest> {
    try {
      const s = await this.client.getSecret(secretName);
      this.checkedRead(secretName, s, stage);
      return { kind: 'ok', info: toInfo(s.properties), secret: s };
    } catch (e) {
      if (isNotFound(e)) return { kind: 'none' };
      if (isDisabled(e)) return { kind: 'disabled' };
      throw mapAzureError(e, { op: 'getSecret', target: this.target(secretName), stage });
    }
  }

  /** one version's value; null when it is gone or disabled */
  private async valueOf(secretName: string, version: string, stage?: Stage): Promise<Secret | null> {
    try {
      const s = await this.client.getSecret(secretName, { version });
      this.checkedRead(secretName, s, stage);
      if (s.properties.version !== version)
        throw this.malformed('getSecret', secretName, `asked for version ${version}, got another`, stage);
      return this.wrap(secretName, s);
    } catch (e) {
      if (isNotFound(e) || isDisabled(e)) return null;
      throw mapAzureError(e, { op: 'getSecret', target: this.target(secretName), stage });
    }
  }

  private wrap(secretName: string, s: KeyVaultSecret): Secret {
    if (typeof s.value !== 'string' || s.value.length === 0) {
      throw new KeyrotorError(
        'STORE_CORRUPT',
        `${this.target(secretName)} version ${s.properties.version ?? '?'} holds an empty value`,
      );
    }
    return Secret.of(s.value);
  }

  private async write(secretName: string, secret: Secret, tags: Tags, stage: Stage): Promise<string> {
    const s = await this.call('setSecret', secretName, stage, () =>
      this.client.setSecret(secretName, secret.reveal(), { tags }),
    );
    const version = s.properties.version;
    // the write may have happened: the retry finds it by its tags (stage/promote/demote look first)
    if (!version) throw this.malformed('setSecret', secretName, 'no version id', stage);
    return version;
  }

  /** disable a version; the tag map is sent unchanged because PATCH with tags replaces the map */
  private async disable(secretName: string, v: VersionInfo, stage: Stage): Promise<void> {
    const p = await this.call('updateProperties', secretName, stage, () =>
      this.client.updateSecretProperties(secretName, v.version, { enabled: false, tags: v.tags }),
    );
    // an answer that does not show this version disabled proves nothing: the retry re-lists and disables what is still enabled
    if (p?.version !== v.version || p.enabled !== false)
      throw this.malformed('updateProperties', secretName, 'the answer does not show the version disabled', stage);
  }

  // ------------------------------------------------------------ SecretStore

  async check(): Promise<void> {
    this.memo.forget();
    // Besides GetSecret, two listings: the versions of <name> (keyrotor-seq order and previous: list
    // order is not chronological) and of the side secret (another rotation's pending value = LOCKED)
    const name = await this.versions(this.name, 'preflight');
    const l = await this.latest(this.name, 'preflight');
    const side = await this.versions(this.side, 'preflight');
    // a rotation's preflight reads the current value next and stages after that: keep what was read
    let latest: KnownLatest | undefined;
    if (l.kind !== 'ok') latest = { kind: l.kind };
    else if (typeof l.secret.value === 'string' && l.secret.value.length > 0) {
      latest = {
        kind: 'ok',
        info: l.info,
        current: { versionId: logicalId(l.info), secret: this.wrap(this.name, l.secret), meta: metaOf(l.info.tags) },
      };
    }
    if (latest) this.memo.remember({ name, latest, side }, { readCurrent: true, stage: true });
  }

  async readCurrent(): Promise<StoredVersion | null> {
    const k = this.memo.take({ step: 'readCurrent' });
    if (k) return k.latest.kind === 'ok' ? k.latest.current : null;
    const l = await this.latest(this.name);
    if (l.kind !== 'ok') return null;
    return { versionId: logicalId(l.info), secret: this.wrap(this.name, l.secret), meta: metaOf(l.info.tags) };
  }

  async readPrevious(): Promise<StoredVersion | null> {
    this.memo.forget();
    const l = await this.latest(this.name);
    if (l.kind !== 'ok') return null;
    const prev = pickPrevious(await this.versions(this.name), l.info);
    if (!prev) return null;
    const secret = await this.valueOf(this.name, prev.version);
    return secret ? { versionId: logicalId(prev), secret, meta: metaOf(prev.tags) } : null;
  }

  async readPending(rotationId: string): Promise<StoredVersion | null> {
    const mem = this.memo.take({ step: 'readPending', rotationId })?.pending;
    // the side version this instance just wrote (setSecret's answer named it)
    if (mem?.rotationId === rotationId) return { versionId: mem.version, secret: mem.secret, meta: mem.meta };
    this.memo.forget();
    const p = this.pendingOf(await this.versions(this.side), rotationId);
    if (!p) return null;
    const secret = await this.valueOf(this.side, p.version);
    return secret ? { versionId: p.version, secret, meta: metaOf(p.tags) } : null;
  }

  async describe(): Promise<StoreSlots> {
    this.memo.forget();
    const slots: StoreSlots = {};
    const l = await this.latest(this.name);
    if (l.kind === 'ok') {
      slots.current = { versionId: logicalId(l.info), meta: metaOf(l.info.tags) };
      const prev = pickPrevious(await this.versions(this.name), l.info);
      if (prev) slots.previous = { versionId: logicalId(prev), meta: metaOf(prev.tags) } satisfies SlotInfo;
    }
    const pending = newest((await this.versions(this.side)).filter((v) => v.enabled));
    if (pending) slots.pending = { versionId: pending.version, meta: metaOf(pending.tags) };
    return slots;
  }

  async stage(req: StageRequest): Promise<{ versionId: string }> {
    const r = req.rotationId;
    const k = this.memo.take({ step: 'stage' });
    // already promoted (a retry after promote): nothing to do
    const nameVersions = k?.name ?? (await this.versions(this.name, 'stage'));
    const promoted = newest(nameVersions.filter((v) => v.tags[TAG.rotation] === r));
    if (promoted) return { versionId: logicalId(promoted) };

    const sideVersions = k?.side ?? (await this.versions(this.side, 'stage'));
    const mine = this.pendingOf(sideVersions, r);
    if (mine) return { versionId: mine.version };
    this.assertNoOtherPending(sideVersions, r);

    const tags: Tags = { [TAG.rotation]: r, [TAG.seq]: String(maxSeq(sideVersions) + 1) };
    if (req.meta.issuerKeyId) tags[TAG.keyId] = req.meta.issuerKeyId;
    if (req.meta.fingerprint) tags[TAG.fingerprint] = req.meta.fingerprint;
    if (req.meta.createdAt) tags[TAG.created] = req.meta.createdAt;
    const version = await this.write(this.side, req.secret, tags, 'stage');
    this.log.info(
      { stage: 'stage', secretName: this.side, version, rotationId: r },
      'staged in the pending side secret',
    );

    // two stagers racing past the check above both back off (the state store's lease is the main lock);
    // (this listing is kept on the fresh path too: it is the store-level lock against an orchestrator
    // holding another lease)
    const after = await this.versions(this.side, 'stage');
    const other = after.find((v) => v.enabled && v.tags[TAG.rotation] !== r);
    if (other) {
      const own = after.find((v) => v.version === version);
      if (own) await this.disable(this.side, own, 'stage');
      this.assertNoOtherPending(after, r);
    }
    // verify reads this version next and promote copies it: remember (only after check's reads)
    if (k && !other && after.some((v) => v.version === version && v.enabled)) {
      this.memo.remember(
        {
          name: k.name,
          latest: k.latest,
          side: after,
          pending: { rotationId: r, version, secret: req.secret, meta: metaOf(tags) },
          staged: { version, secret: req.secret },
        },
        { readPending: r, promote: r },
      );
    }
    return { versionId: version };
  }

  async promote(rotationId: string): Promise<void> {
    const k = this.memo.take({ step: 'promote', rotationId });
    const l = k ? k.latest : await this.latest(this.name, 'promote');
    if (l.kind === 'ok' && l.info.tags[TAG.rotation] === rotationId) {
      await this.clearPending(rotationId, 'promote'); // finish a promote that crashed before clearing
      return;
    }
    // fresh path: the side list stage read after its write, and the value it wrote
    const pending = this.pendingOf(k?.side ?? (await this.versions(this.side, 'promote')), rotationId);
    const secret = pending
      ? k?.staged && k.staged.version === pending.version
        ? k.staged.secret
        : await this.valueOf(this.side, pending.version, 'promote')
      : null;
    if (!pending || !secret) {
      throw new KeyrotorError(
        'STORE_NOT_FOUND',
        `nothing is staged for rotation ${rotationId} in ${this.target(this.side)}`,
        {
          stage: 'promote',
          retryable: false,
          hint: 'stage must run before promote; start a new rotation',
        },
      );
    }
    const seq = maxSeq(k?.name ?? (await this.versions(this.name, 'promote'))) + 1;
    const tags: Tags = { ...pending.tags, [TAG.seq]: String(seq), [TAG.stagedVersion]: pending.version };
    const version = await this.write(this.name, secret, tags, 'promote');
    this.log.info(
      { stage: 'promote', secretName: this.name, version, seq, rotationId },
      'promoted: new latest version',
    );
    await this.clearPending(rotationId, 'promote', k?.side);
  }

  async demote(rotationId: string): Promise<void> {
    this.memo.forget();
    const all = await this.versions(this.name, 'demote');
    const bad = all.filter((v) => v.enabled && v.tags[TAG.rotation] === rotationId && !v.tags[TAG.restoredFrom]);
    if (bad.length === 0) return; // never promoted, or already demoted
    const l = await this.latest(this.name, 'demote');
    if (l.kind === 'ok') {
      const tags = l.info.tags;
      if (tags[TAG.rotation] === rotationId && !tags[TAG.restoredFrom]) {
        // this rotation is what consumers read: write the previous value again first, then disable
        await this.restorePrevious(all, l.info, rotationId, bad);
      } else if (tags[TAG.rollbackOf] !== rotationId) {
        // something else is current (a later rotation or a manual write): leave this rotation's versions alone
        return;
      }
    }
    // latest is now the restored copy, or nothing can be current (bootstrap): disable the bad version(s)
    for (const v of bad) await this.disable(this.name, v, 'demote');
    this.log.info(
      { stage: 'demote', secretName: this.name, disabled: bad.map((v) => v.version), rotationId },
      'rotation version(s) disabled',
    );
  }

  private async restorePrevious(
    all: VersionInfo[],
    cur: VersionInfo,
    rotationId: string,
    bad: VersionInfo[],
  ): Promise<void> {
    const prev = pickPrevious(all, cur, rotationId);
    if (!prev) return; // bootstrap: nothing to restore
    const secret = await this.valueOf(this.name, prev.version, 'demote');
    if (!secret) {
      throw new KeyrotorError(
        'ROLLBACK_FAILED',
        `${this.label}: the previous version ${prev.version} can no longer be read, so it cannot be restored`,
        {
          stage: 'demote',
          hint: `set the old value by hand (az keyvault secret set), then disable version(s) ${bad.map((b) => b.version).join(', ')}`,
        },
      );
    }
    const tags: Tags = {
      ...prev.tags,
      [TAG.seq]: String(maxSeq(all) + 1),
      [TAG.restoredFrom]: prev.version,
      [TAG.rollbackOf]: rotationId,
    };
    const version = await this.write(this.name, secret, tags, 'demote');
    this.log.info(
      { stage: 'demote', secretName: this.name, version, restoredFrom: prev.version, rotationId },
      'previous value restored as a new version',
    );
  }

  async unstage(rotationId: string): Promise<void> {
    this.memo.forget();
    await this.clearPending(rotationId, 'unstage');
  }

  // ------------------------------------------------------------ helpers

  private pendingOf(sideVersions: VersionInfo[], rotationId: string): VersionInfo | undefined {
    return newest(sideVersions.filter((v) => v.enabled && v.tags[TAG.rotation] === rotationId));
  }

  private assertNoOtherPending(sideVersions: VersionInfo[], rotationId: string): void {
    const other = newest(sideVersions.filter((v) => v.enabled && v.tags[TAG.rotation] !== rotationId));
    if (!other) return;
    const owner = other.tags[TAG.rotation] ?? 'an unknown writer (no keyrotor-rotation tag)';
    throw new KeyrotorError(
      'LOCKED',
      `${this.target(this.side)} holds a pending value of rotation ${owner} (version ${other.version}); only one rotation may stage at a time`,
      {
        stage: 'stage',
        retryable: false,
        hint:
          `let rotation ${owner} finish or roll back; if it was abandoned, disable that version: ` +
          `az keyvault secret set-attributes --vault-name ${vaultNameOf(this.vaultUrl)} --name ${this.side} --version ${other.version} --enabled false`,
      },
    );
  }

  private async clearPending(rotationId: string, stage: Stage, known?: VersionInfo[]): Promise<void> {
    const mine = (known ?? (await this.versions(this.side, stage))).filter(
      (v) => v.enabled && v.tags[TAG.rotation] === rotationId,
    );
    for (const v of mine) await this.disable(this.side, v, stage);
    if (mine.length)
      this.log.info(
        { stage, secretName: this.side, disabled: mine.map((v) => v.version), rotationId },
        'pending side version cleared',
      );
  }
}

/**
 * The store's factory. `deps` is the seam for tests and embedders (a credential, SDK pipeline options).
 * Without a credential it authenticates with DefaultAzureCredential (environment, workload identity,
 * managed identity, Azure CLI, ...); `@azure/identity` is loaded only then.
 */
export async function createAzureKeyVaultStore(
  cfg: AzureKeyVaultStoreConfig,
  ctx: ProviderContext,
  deps: AzureKeyVaultStoreDeps = {},
): Promise<SecretStore> {
  const credential = deps.credential ?? new (await import('@azure/identity')).DefaultAzureCredential();
  return new AzureKeyVaultStore(cfg, ctx, { ...deps, credential });
}
