/**
 * GCP Secret Manager as a keyrotor SecretStore.
 *
 * **Consumers read the `current` alias**: `projects/<p>/secrets/<s>/versions/current`, never
 * `latest` (`latest` is simply the newest version, which may be a staged, unverified or disabled one).
 *
 * Layout on the secret:
 * - versions hold the values; the aliases `current`, `previous` and `pending` point at them and are
 *   the only thing promote / demote move. Every alias move is an `UpdateSecret` with
 *   `update_mask: version_aliases` and the etag read just before (a compare-and-swap: a stale etag
 *   is ABORTED, and we re-read, re-check that the change still makes sense, and retry a few times).
 * - GCP versions carry no labels, so per-version metadata lives in the SECRET's annotations:
 *   `keyrotor.v<N>` = compact JSON `{ r: rotationId, k: issuerKeyId, f: fingerprint, c: createdAt,
 *   o: old current, q: old previous }` (o/q are written by promote, for demote).
 * - `keyrotor.pending-rotation` = `{ r: rotationId, a: highest version number before the add,
 *   f: fingerprint of the value being added }` is set (CAS) BEFORE `AddSecretVersion` and cleared by
 *   promote / unstage. It is the lock: another rotation's marker blocks staging with LOCKED. And since
 *   `AddSecretVersion` has no idempotency token, it is how a retried stage after a lost response
 *   finds the version it already added (a version newer than `a`, without annotation, whose payload
 *   has fingerprint `f`) instead of adding a second one; extra copies are destroyed.
 *
 * Values are only ever sent in `AddSecretVersion` and received from `AccessSecretVersion`; they never
 * reach a log line, an annotation or an error.
 */
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import type { protos } from '@google-cloud/secret-manager';
import { KeyrotorError } from '../../../src/core/errors.ts';
import { fingerprint } from '../../../src/core/fingerprint.ts';
import { Secret } from '../../../src/core/secret.ts';
import type { Clock } from '../../../src/core/clock.ts';
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
import type { GcpSecretManagerStoreConfig } from './gcp-secret-manager.schema.ts';
import { StepMemo } from '../../shared/step-memo.ts';
import { GRPC, grpcCode, malformedAnswer, mapGcpError, type GcpOperation } from './gcp-secret-manager.errors.ts';

type ISecret = protos.google.cloud.secretmanager.v1.ISecret;

export const ALIAS_CURRENT = 'current';
export const ALIAS_PREVIOUS = 'previous';
export const ALIAS_PENDING = 'pending';
export const ANNOTATION_PENDING = 'keyrotor.pending-rotation';
const VERSION_ANNOTATION_RE = /^keyrotor\.v(\d+)$/;
export const versionAnnotation = (n: number) => `keyrotor.v${n}`;

/** marks of versions no alias points at are pruned, except this many of the newest */
const KEEP_UNALIASED_MARKS = 8;
const CAS_ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 30_000;

/** Per-version metadata (annotation `keyrotor.v<N>`). References only, never values. */
interface VersionMark {
  r: string;
  k?: string | undefined;
  f?: string | undefined;
  c?: string | undefined;
  /** version that was current when this one was promoted; null = none (bootstrap) */
  o?: number | null | undefined;
  /** version that was previous when this one was promoted; null = none */
  q?: number | null | undefined;
}

/** The lock and add-marker (annotation `keyrotor.pending-rotation`). */
interface PendingMark {
  r: string;
  /** highest version number before the add: anything newer may be this rotation's lost add */
  a: number;
  /** fingerprint of the value being added */
  f: string;
  t?: string | undefined;
}

interface SecretView {
  etag: string;
  aliases: Record<string, number>;
  annotations: Record<string, string>;
  marks: Map<number, VersionMark>;
  pending?: PendingMark | undefined;
}

interface Change {
  aliases?: Record<string, number>;
  annotations?: Record<string, string>;
}

interface VersionInfo {
  n: number;
  state: string;
}

/** What tests and embedders may inject (the seam every store offers as its factory's third argument). */
export interface GcpSecretManagerStoreDeps {
  /** an already configured client (the caller closes it); default: built from cfg (Application Default Credentials) */
  client?: SecretManagerServiceClient | undefined;
  /** ListSecretVersions page size (tests use a tiny one to cross pages) */
  listPageSize?: number | undefined;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** Build the official client. `insecure` (plaintext gRPC, no credentials) is for a loopback endpoint only. */
export async function createGcpClient(cfg: GcpSecretManagerStoreConfig): Promise<SecretManagerServiceClient> {
  if (cfg.insecure) {
    if (!cfg.apiEndpoint || !LOOPBACK.has(cfg.apiEndpoint)) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `gcp-secret-manager store: insecure is only allowed with a loopback apiEndpoint (got ${cfg.apiEndpoint ?? 'none'})`,
        {
          hint: 'remove insecure: true, or set apiEndpoint: 127.0.0.1 for a local test server',
        },
      );
    }
    // the grpc module google-gax itself uses, so the credentials object is one it recognises
    const gax = await import('google-gax');
    // bundled as ESM, the namespace's named export can be missing: fall back to the default export
    const grpc = gax.grpc ?? (gax as unknown as { default: typeof gax }).default.grpc;
    return new SecretManagerServiceClient({
      apiEndpoint: cfg.apiEndpoint,
      ...(cfg.port ? { port: cfg.port } : {}),
      sslCreds: grpc.credentials.createInsecure(),
      // set explicitly, or the client asks the GCE metadata server for it
      universeDomain: 'googleapis.com',
    });
  }
  return new SecretManagerServiceClient({
    ...(cfg.apiEndpoint ? { apiEndpoint: cfg.apiEndpoint } : {}),
    ...(cfg.port ? { port: cfg.port } : {}),
  });
}

// ------------------------------------------------------------------ parsing

function toNumber(v: unknown): number | undefined {
  if (v === null || v === undefined) return undefined;
  const n = Number(typeof v === 'object' ? String(v) : v); // int64 arrives as string (or Long)
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
const numOrNull = (v: unknown) =>
  v === null ? null : typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;

function parseMark(text: string): VersionMark | undefined {
  const j = parseJson(text);
  const r = str(j?.r);
  if (!j || !r) return undefined;
  return {
    r,
    k: str(j.k),
    f: str(j.f),
    c: str(j.c),
    ...('o' in j ? { o: numOrNull(j.o) } : {}),
    ...('q' in j ? { q: numOrNull(j.q) } : {}),
  };
}

function parsePending(text: string): PendingMark {
  const j = parseJson(text);
  const r = str(j?.r);
  // anything else (e.g. set by hand) still holds the lock, and names itself
  if (!j || !r) return { r: text.slice(0, 80) || '(empty)', a: Number.MAX_SAFE_INTEGER, f: '' };
  const a = typeof j.a === 'number' && Number.isSafeInteger(j.a) ? j.a : Number.MAX_SAFE_INTEGER;
  return { r, a, f: str(j.f) ?? '', t: str(j.t) };
}

function viewOf(s: ISecret): SecretView {
  const aliases: Record<string, number> = {};
  for (const [k, v] of Object.entries(s.versionAliases ?? {})) {
    const n = toNumber(v);
    if (n !== undefined) aliases[k] = n;
  }
  const annotations: Record<string, string> = { ...(s.annotations ?? {}) };
  const marks = new Map<number, VersionMark>();
  for (const [k, v] of Object.entries(annotations)) {
    const m = VERSION_ANNOTATION_RE.exec(k);
    if (!m) continue;
    const mark = parseMark(v);
    if (mark) marks.set(Number(m[1]), mark);
  }
  const p = annotations[ANNOTATION_PENDING];
  return { etag: s.etag ?? '', aliases, annotations, marks, pending: p === undefined ? undefined : parsePending(p) };
}

function metaOf(mark: VersionMark | undefined): VersionMeta {
  if (!mark) return {};
  return {
    rotationId: mark.r,
    ...(mark.k ? { issuerKeyId: mark.k } : {}),
    ...(mark.f ? { fingerprint: mark.f } : {}),
    ...(mark.c ? { createdAt: mark.c } : {}),
  };
}

function versionNumberOf(name: string | null | undefined): number | undefined {
  const m = /\/versions\/(\d+)$/.exec(name ?? '');
  return m ? Number(m[1]) : undefined;
}

// CRC32C (Castagnoli), as Secret Manager uses for payload integrity
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();
export function crc32c(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC32C_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ------------------------------------------------------------------ store

/**
 * The store's factory. The secret must exist (the store never creates it). `close()` releases the gRPC
 * channel of a client the store built.
 */
export async function createGcpSecretManagerStore(
  cfg: GcpSecretManagerStoreConfig,
  ctx: ProviderContext,
  deps: GcpSecretManagerStoreDeps = {},
): Promise<SecretStore & { close(): Promise<void> }> {
  const client = deps.client ?? (await createGcpClient(cfg));
  return new GcpSecretManagerStore(cfg, ctx, client, !deps.client, deps);
}

class GcpSecretManagerStore implements SecretStore {
  readonly type = 'gcp-secret-manager';
  readonly label: string;
  /** `projects/<p>/secrets/<s>` */
  readonly secretName: string;
  readonly #client: SecretManagerServiceClient;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #pageSize: number;
  /**
   * What the last step read or updated, for the next step of the same rotation in this process (see
   * providers/shared/step-memo.ts): the secret (aliases, annotations, etag), and after stage the version
   * it added. Mutations stay safe on a stale view: every update carries the etag, and a stale one is
   * re-read and re-planned (#cas). Values only inside a Secret.
   */
  readonly #memo = new StepMemo<{ view: SecretView; added?: { rid: string; n: number; secret: Secret } }>();
  readonly #ownsClient: boolean;

  constructor(
    cfg: GcpSecretManagerStoreConfig,
    ctx: ProviderContext,
    client: SecretManagerServiceClient,
    ownsClient: boolean,
    opts: Pick<GcpSecretManagerStoreDeps, 'listPageSize'> = {},
  ) {
    this.#ownsClient = ownsClient;
    this.secretName = `projects/${cfg.project}/secrets/${cfg.secret}`;
    this.label = `gcp-secret-manager:${this.secretName}`;
    this.#client = client;
    this.#log = ctx.logger.child({ store: this.label });
    this.#clock = ctx.clock;
    this.#pageSize = opts.listPageSize ?? 100;
  }

  /** Close the gRPC channel of a client this store built (an injected client is the caller's). */
  async close(): Promise<void> {
    if (this.#ownsClient) await this.#client.close();
  }

  // ---------------------------------------------------------------- reads

  async check(): Promise<void> {
    this.#memo.forget();
    const view = await this.#read('preflight');
    // a rotation's preflight reads the current value next and stages after that
    this.#memo.remember({ view }, { readCurrent: true, stage: true });
  }

  async describe(): Promise<StoreSlots> {
    this.#memo.forget();
    const s = await this.#read();
    const slot = (alias: string): SlotInfo | undefined => {
      const n = s.aliases[alias];
      return n === undefined ? undefined : { versionId: String(n), meta: metaOf(s.marks.get(n)) };
    };
    return { current: slot(ALIAS_CURRENT), previous: slot(ALIAS_PREVIOUS), pending: slot(ALIAS_PENDING) };
  }

  async readCurrent(): Promise<StoredVersion | null> {
    // the aliases check() just read (the value is still read: it is not remembered)
    const k = this.#memo.take({ step: 'readCurrent' });
    if (k) return this.#readAlias(ALIAS_CURRENT, k.view);
    return this.#readAlias(ALIAS_CURRENT);
  }

  async readPrevious(): Promise<StoredVersion | null> {
    this.#memo.forget();
    return this.#readAlias(ALIAS_PREVIOUS);
  }

  async readPending(rotationId: string): Promise<StoredVersion | null> {
    const k = this.#memo.take({ step: 'readPending', rotationId });
    const p = k?.added;
    if (k && p?.rid === rotationId && k.view.aliases[ALIAS_PENDING] === p.n) {
      // the version this instance just added and pointed `pending` at (stage's answer said so)
      return { versionId: String(p.n), secret: p.secret, meta: metaOf(k.view.marks.get(p.n)) };
    }
    this.#memo.forget();
    const s = await this.#read();
    const n = s.aliases[ALIAS_PENDING];
    if (n === undefined || s.marks.get(n)?.r !== rotationId) return null;
    return { versionId: String(n), secret: await this.#accessSecret(n), meta: metaOf(s.marks.get(n)) };
  }

  async #readAlias(alias: string, known?: SecretView): Promise<StoredVersion | null> {
    const s = known ?? (await this.#read());
    const n = s.aliases[alias];
    if (n === undefined) return null;
    // read by number, so the value and the metadata belong to the same version
    return { versionId: String(n), secret: await this.#accessSecret(n), meta: metaOf(s.marks.get(n)) };
  }

  // ---------------------------------------------------------------- stage

  async stage(req: StageRequest): Promise<{ versionId: string }> {
    const stage: Stage = 'stage';
    const rid = req.rotationId;
    const fp = fingerprint(req.secret);
    const markFp = req.meta.fingerprint ?? fp;
    const known = this.#memo.take({ step: 'stage' })?.view;
    let s = known ?? (await this.#read(stage));

    // 1. already staged by this rotation (a retry; maybe promoted since): converge, never add again
    const done = this.#ownVersion(s, rid);
    if (done !== undefined) return { versionId: (await this.#finishStage(s, rid, done, markFp, stage)).versionId };
    this.#assertNotLocked(s, rid);

    // 2. take the lock and record what we are about to add, BEFORE adding: one listing (the baseline
    //    above which a retry after a lost AddSecretVersion answer searches) and one update (the
    //    write-ahead marker itself)
    const baseline = await this.#highestVersion(stage);
    let previousFp: string | undefined;
    /** our marker was not there before this update: no earlier attempt can have added a version */
    let freshLock = false;
    s = await this.#cas(stage, s, (x) => {
      freshLock = false;
      this.#assertNotLocked(x, rid);
      if (this.#ownVersion(x, rid) !== undefined) return null;
      const pm = x.pending;
      if (pm?.r === rid && pm.f === fp) return null;
      if (pm?.r === rid && pm.f) previousFp = pm.f;
      freshLock = pm === undefined;
      const next: PendingMark = {
        r: rid,
        a: pm?.r === rid ? pm.a : baseline,
        f: fp,
        t: new Date(this.#clock.now()).toISOString(),
      };
      return { annotations: { ...x.annotations, [ANNOTATION_PENDING]: JSON.stringify(next) } };
    });
    const raced = this.#ownVersion(s, rid);
    if (raced !== undefined) return { versionId: (await this.#finishStage(s, rid, raced, markFp, stage)).versionId };
    const pm = s.pending!;

    // 3. a version added by an earlier attempt whose response was lost? adopt it instead of adding
    // (the marker is written before any add, so a lock taken just now has no orphans: skip the listing)
    const orphans = freshLock ? [] : await this.#orphans(s, pm, stage);
    const mine = orphans
      .filter((o) => o.fp === fp)
      .map((o) => o.n)
      .sort((a, b) => a - b);
    const stale = orphans.filter((o) => o.fp !== fp && previousFp !== undefined && o.fp === previousFp).map((o) => o.n);
    let n: number;
    let added = false;
    if (mine.length) {
      n = mine[0]!;
      this.#log.warn(
        { stage, rotationId: rid, version: n },
        'adopting the version a previous stage attempt added (its response was lost)',
      );
    } else {
      n = await this.#add(req.secret, stage);
      added = true;
    }
    // duplicates of this value, or values an earlier attempt of this rotation abandoned: never usable
    for (const extra of [...mine.slice(1), ...stale]) await this.#retire(extra, stage);

    // 4. record the metadata and point `pending` at it (one more update: the alias verify, describe and
    //    a resumed rotation find the staged version by)
    const out = await this.#finishStage(s, rid, n, markFp, stage, {
      r: rid,
      k: req.meta.issuerKeyId,
      f: markFp,
      c: req.meta.createdAt,
    });
    // verify reads this version next and promote moves it: remember the answer (not on a retry path)
    if (added && out.view.aliases[ALIAS_PENDING] === n && out.view.marks.get(n)?.r === rid) {
      this.#memo.remember(
        { view: out.view, added: { rid, n, secret: req.secret } },
        { readPending: rid, promote: rid },
      );
    }
    return { versionId: out.versionId };
  }

  async #finishStage(
    s: SecretView,
    rid: string,
    n: number,
    markFp: string,
    stage: Stage,
    newMark?: VersionMark,
  ): Promise<{ versionId: string; view: SecretView }> {
    const existing = s.marks.get(n);
    if (existing?.r === rid && existing.f && existing.f !== markFp) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `rotation ${rid} already staged a different value as version ${n} of ${this.label}`,
        {
          stage,
          retryable: false,
          hint: `unstage rotation ${rid} first`,
        },
      );
    }
    const view = await this.#cas(stage, s, (x) => {
      const mark = x.marks.get(n);
      const ours = mark?.r === rid;
      // staged already, or promoted since: a retried stage changes nothing
      if (ours && [ALIAS_PENDING, ALIAS_CURRENT, ALIAS_PREVIOUS].some((a) => x.aliases[a] === n)) return null;
      this.#assertNotLocked(x, rid);
      if (!ours && x.pending?.r !== rid) {
        // someone removed our marker between the add and now (a concurrent unstage): start over
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `the stage marker of rotation ${rid} on ${this.label} disappeared while staging`,
          { stage, retryable: true },
        );
      }
      const aliases: Record<string, number> = { ...x.aliases, [ALIAS_PENDING]: n };
      const annotations = ours
        ? { ...x.annotations }
        : { ...x.annotations, [versionAnnotation(n)]: JSON.stringify(newMark ?? { r: rid, f: markFp }) };
      return { aliases, annotations };
    });
    return { versionId: String(n), view };
  }

  // ---------------------------------------------------------------- promote / demote

  async promote(rotationId: string): Promise<void> {
    const stage: Stage = 'promote';
    const k = this.#memo.take({ step: 'promote', rotationId });
    const known = k?.added ? { view: k.view, n: k.added.n } : undefined;
    const s = known?.view ?? (await this.#read(stage));
    const n = this.#stagedOrCurrent(s, rotationId);
    if (n === undefined) {
      throw new KeyrotorError('STORE_CONFLICT', `rotation ${rotationId} has nothing staged in ${this.label}`, {
        stage,
        retryable: false,
        hint: 'stage the value first; promote only moves an existing pending version',
      });
    }
    // never point consumers at a version they cannot read
    // (skipped for the version this instance added moments ago at stage: it was created ENABLED)
    if (s.aliases[ALIAS_CURRENT] !== n && known?.n !== n) {
      const st = await this.#versionState(n, stage);
      if (st !== 'ENABLED') {
        throw new KeyrotorError(
          'STORE_CORRUPT',
          `version ${n} of ${this.label} staged by rotation ${rotationId} is ${st ?? 'missing'}; refusing to make it current`,
          {
            stage,
            retryable: false,
          },
        );
      }
    }
    await this.#cas(stage, s, (x) => {
      const mark = x.marks.get(n);
      if (mark?.r !== rotationId) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `the metadata of version ${n} (rotation ${rotationId}) vanished from ${this.label} during promote`,
          { stage, retryable: false },
        );
      }
      const ownsLock = x.pending?.r === rotationId;
      if (x.aliases[ALIAS_CURRENT] === n) {
        // promoted already: only tidy what a crash may have left
        if (x.aliases[ALIAS_PENDING] !== n && !ownsLock) return null;
        const aliases = { ...x.aliases };
        if (aliases[ALIAS_PENDING] === n) delete aliases[ALIAS_PENDING];
        const annotations = { ...x.annotations };
        if (ownsLock) delete annotations[ANNOTATION_PENDING];
        return { aliases, annotations };
      }
      if (x.aliases[ALIAS_PENDING] !== n) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `the pending alias of ${this.label} no longer points at version ${n} staged by rotation ${rotationId} (another writer moved it)`,
          { stage, retryable: false, hint: 'check who else edits the aliases of this secret' },
        );
      }
      const oldCurrent = x.aliases[ALIAS_CURRENT];
      const oldPrevious = x.aliases[ALIAS_PREVIOUS];
      const aliases: Record<string, number> = { ...x.aliases, [ALIAS_CURRENT]: n };
      delete aliases[ALIAS_PENDING];
      if (oldCurrent !== undefined) aliases[ALIAS_PREVIOUS] = oldCurrent;
      const annotations = {
        ...x.annotations,
        [versionAnnotation(n)]: JSON.stringify({ ...mark, o: oldCurrent ?? null, q: oldPrevious ?? null }),
      };
      if (ownsLock) delete annotations[ANNOTATION_PENDING];
      return { aliases, annotations };
    });
  }

  async demote(rotationId: string): Promise<void> {
    const stage: Stage = 'demote';
    this.#memo.forget();
    const s = await this.#read(stage);
    const cur = s.aliases[ALIAS_CURRENT];
    const mark = cur === undefined ? undefined : s.marks.get(cur);
    if (cur === undefined || mark?.r !== rotationId) return; // never promoted, or demoted already
    if (mark.o === undefined) {
      throw new KeyrotorError(
        'STORE_CORRUPT',
        `cannot demote rotation ${rotationId} in ${this.label}: it is not recorded which version was current before it`,
        {
          stage,
          retryable: false,
          hint: `point the alias "current" of ${this.secretName} at the right version by hand`,
        },
      );
    }
    // moving `current` back must land on a version consumers can read
    if (mark.o !== null) {
      const st = await this.#versionState(mark.o, stage);
      if (st !== 'ENABLED') {
        throw new KeyrotorError(
          'STORE_CORRUPT',
          `cannot demote rotation ${rotationId}: version ${mark.o} of ${this.label} (current before it) is ${st ?? 'missing'}`,
          {
            stage,
            retryable: false,
            hint: `enable version ${mark.o} (gcloud secrets versions enable) and retry`,
          },
        );
      }
    }
    let restorePrevious = mark.q ?? null;
    if (restorePrevious !== null) {
      const st = await this.#versionState(restorePrevious, stage);
      if (st === undefined || st === 'DESTROYED') restorePrevious = null;
    }
    await this.#cas(stage, s, (x) => {
      const c = x.aliases[ALIAS_CURRENT];
      if (c === undefined || x.marks.get(c)?.r !== rotationId) return null;
      const aliases = { ...x.aliases };
      if (mark.o === null || mark.o === undefined) delete aliases[ALIAS_CURRENT];
      else aliases[ALIAS_CURRENT] = mark.o;
      if (restorePrevious === null) delete aliases[ALIAS_PREVIOUS];
      else aliases[ALIAS_PREVIOUS] = restorePrevious;
      return { aliases };
    });
  }

  // ---------------------------------------------------------------- unstage

  async unstage(rotationId: string): Promise<void> {
    const stage: Stage = 'unstage';
    this.#memo.forget();
    const s = await this.#read(stage);
    const ownsLock = s.pending?.r === rotationId;
    const targets = new Set<number>();
    for (const [n, m] of s.marks) if (m.r === rotationId) targets.add(n);
    if (ownsLock)
      for (const o of await this.#orphans(s, s.pending!, stage)) if (o.fp === s.pending!.f) targets.add(o.n);
    if (!targets.size && !ownsLock) return;

    // disable first (a retry still finds the annotations); never what current/previous/other aliases read
    const held = (v: SecretView) =>
      new Set(
        Object.entries(v.aliases)
          .filter(([k]) => k !== ALIAS_PENDING)
          .map(([, n]) => n),
      );
    const heldNow = held(s);
    const retired = new Set<number>();
    for (const n of targets) {
      if (heldNow.has(n)) continue;
      await this.#disable(n, stage);
      retired.add(n);
    }
    await this.#cas(stage, s, (x) => {
      const aliases = { ...x.aliases };
      const annotations = { ...x.annotations };
      let changed = false;
      const p = aliases[ALIAS_PENDING];
      if (p !== undefined && targets.has(p)) {
        delete aliases[ALIAS_PENDING];
        changed = true;
      }
      const stillHeld = held(x);
      for (const n of retired) {
        if (!stillHeld.has(n) && x.marks.get(n)?.r === rotationId) {
          delete annotations[versionAnnotation(n)];
          changed = true;
        }
      }
      if (x.pending?.r === rotationId) {
        delete annotations[ANNOTATION_PENDING];
        changed = true;
      }
      return changed ? { aliases, annotations } : null;
    });
  }

  // ---------------------------------------------------------------- helpers: logic

  #assertNotLocked(s: SecretView, rid: string): void {
    if (s.pending && s.pending.r !== rid) {
      throw new KeyrotorError(
        'LOCKED',
        `${this.label} is locked by rotation ${s.pending.r} (annotation ${ANNOTATION_PENDING})`,
        {
          stage: 'stage',
          retryable: false,
          hint: `let rotation ${s.pending.r} finish or roll it back; if it is dead, remove the annotation ${ANNOTATION_PENDING} (and the "pending" alias) from ${this.secretName}`,
        },
      );
    }
    const p = s.aliases[ALIAS_PENDING];
    if (p !== undefined) {
      const owner = s.marks.get(p)?.r;
      if (owner !== rid) {
        throw new KeyrotorError(
          'LOCKED',
          `${this.label} already has a pending version ${p}${owner ? ` staged by rotation ${owner}` : ' not staged by keyrotor'}`,
          {
            stage: 'stage',
            retryable: false,
            hint: owner
              ? `let rotation ${owner} finish or roll it back`
              : `remove the "pending" alias from ${this.secretName}`,
          },
        );
      }
    }
  }

  /** the lowest-numbered version annotated as this rotation's */
  #ownVersion(s: SecretView, rid: string): number | undefined {
    let best: number | undefined;
    for (const [n, m] of s.marks) if (m.r === rid && (best === undefined || n < best)) best = n;
    return best;
  }

  /** this rotation's version if `pending` or `current` points at it */
  #stagedOrCurrent(s: SecretView, rid: string): number | undefined {
    for (const alias of [ALIAS_PENDING, ALIAS_CURRENT]) {
      const n = s.aliases[alias];
      if (n !== undefined && s.marks.get(n)?.r === rid) return n;
    }
    return undefined;
  }

  /** enabled versions newer than the marker's baseline, without annotation or alias, with their value's fingerprint */
  async #orphans(s: SecretView, pm: PendingMark, stage: Stage): Promise<Array<{ n: number; fp: string }>> {
    const aliased = new Set(Object.values(s.aliases));
    const out: Array<{ n: number; fp: string }> = [];
    for (const v of await this.#versionsAfter(pm.a, stage)) {
      if (v.state !== 'ENABLED' || s.marks.has(v.n) || aliased.has(v.n)) continue;
      const data = await this.#access(v.n, stage);
      out.push({ n: v.n, fp: fingerprint(data.toString('utf8')) });
      data.fill(0);
    }
    return out;
  }

  // ---------------------------------------------------------------- helpers: calls

  #err(e: unknown, op: GcpOperation, stage?: Stage, version?: number | string): KeyrotorError {
    return mapGcpError(e, {
      op,
      secretName: this.secretName,
      stage,
      version: version === undefined ? undefined : String(version),
    });
  }

  #malformed(op: GcpOperation, what: string, stage?: Stage, version?: number | string): KeyrotorError {
    return malformedAnswer(
      { op, secretName: this.secretName, stage, version: version === undefined ? undefined : String(version) },
      what,
    );
  }

  /**
   * A secret answer (GetSecret, UpdateSecret) must name this secret (the service may spell the
   * project by number, so only the `/secrets/<id>` tail is compared) and carry an etag: a view
   * without one would turn the next alias change into an unconditional write.
   */
  #checkedView(secret: ISecret, op: GcpOperation, stage?: Stage): SecretView {
    const tail = this.secretName.slice(this.secretName.indexOf('/secrets/'));
    if (!secret.name || !secret.name.endsWith(tail))
      throw this.#malformed(op, secret.name ? 'it names another secret' : 'no name', stage);
    if (!secret.etag) throw this.#malformed(op, 'no etag', stage);
    return viewOf(secret);
  }

  async #read(stage?: Stage): Promise<SecretView> {
    let secret: ISecret;
    try {
      [secret] = await this.#client.getSecret({ name: this.secretName }, { timeout: CALL_TIMEOUT_MS });
    } catch (e) {
      throw this.#err(e, 'getSecret', stage);
    }
    return this.#checkedView(secret, 'getSecret', stage);
  }

  /**
   * Compare-and-swap on the secret's aliases/annotations: `plan` sees the latest state and returns
   * the full new maps (a masked map is replaced as a whole), or null when nothing is left to do, or
   * throws when the wanted end state is no longer valid. A stale etag (ABORTED) re-reads and re-plans.
   */
  async #cas(stage: Stage, first: SecretView, plan: (s: SecretView) => Change | null): Promise<SecretView> {
    let s = first;
    for (let attempt = 1; ; attempt++) {
      const change = plan(s);
      if (!change) return s;
      const paths: string[] = [];
      const secret: ISecret = { name: this.secretName, etag: s.etag };
      const aliases = change.aliases ?? s.aliases;
      if (change.aliases) {
        paths.push('version_aliases');
        secret.versionAliases = change.aliases;
      }
      if (change.annotations) {
        paths.push('annotations');
        secret.annotations = pruneMarks(change.annotations, aliases);
      }
      let out: ISecret;
      try {
        [out] = await this.#client.updateSecret({ secret, updateMask: { paths } }, { timeout: CALL_TIMEOUT_MS });
      } catch (e) {
        if (grpcCode(e) !== GRPC.ABORTED) throw this.#err(e, 'updateSecret', stage);
        if (attempt >= CAS_ATTEMPTS) {
          throw new KeyrotorError(
            'STORE_CONFLICT',
            `${this.label} kept changing under us (stale etag ${attempt} times in a row) during ${stage}`,
            {
              stage,
              retryable: true,
              hint: 'another writer is editing the aliases or annotations of this secret; retry later',
            },
          );
        }
        this.#log.debug({ stage, attempt }, 'stale etag; re-reading the secret and retrying');
        await this.#clock.sleep(20 * 2 ** (attempt - 1) + Math.floor(Math.random() * 20));
        s = await this.#read(stage);
        continue;
      }
      return this.#checkedView(out, 'updateSecret', stage);
    }
  }

  async #highestVersion(stage: Stage): Promise<number> {
    try {
      const [versions] = await this.#client.listSecretVersions(
        { parent: this.secretName, pageSize: 1 },
        { autoPaginate: false, timeout: CALL_TIMEOUT_MS },
      );
      return versionNumberOf(versions[0]?.name) ?? 0;
    } catch (e) {
      throw this.#err(e, 'listSecretVersions', stage);
    }
  }

  /** versions numbered above `after`, newest first (the service lists newest first) */
  async #versionsAfter(after: number, stage: Stage): Promise<VersionInfo[]> {
    const out: VersionInfo[] = [];
    let pageToken: string | undefined;
    try {
      for (;;) {
        const [versions, , response] = await this.#client.listSecretVersions(
          { parent: this.secretName, pageSize: this.#pageSize, ...(pageToken ? { pageToken } : {}) },
          { autoPaginate: false, timeout: CALL_TIMEOUT_MS },
        );
        for (const v of versions) {
          const n = versionNumberOf(v.name);
          if (n === undefined) continue;
          if (n <= after) return out;
          out.push({ n, state: String(v.state ?? '') });
        }
        pageToken = response?.nextPageToken || undefined;
        if (!pageToken) return out;
      }
    } catch (e) {
      throw this.#err(e, 'listSecretVersions', stage);
    }
  }

  async #versionState(n: number, stage: Stage): Promise<string | undefined> {
    try {
      const [v] = await this.#client.getSecretVersion(
        { name: `${this.secretName}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
      return String(v.state ?? '');
    } catch (e) {
      if (grpcCode(e) === GRPC.NOT_FOUND) return undefined;
      throw this.#err(e, 'getSecretVersion', stage, n);
    }
  }

  async #add(secret: Secret, stage: Stage): Promise<number> {
    const data = Buffer.from(secret.reveal(), 'utf8');
    try {
      const [v] = await this.#client.addSecretVersion(
        { parent: this.secretName, payload: { data, dataCrc32c: crc32c(data) } },
        { timeout: CALL_TIMEOUT_MS },
      );
      const n = versionNumberOf(v.name);
      // the version was probably added: the retry finds it through the pending marker (see header)
      if (n === undefined) throw this.#malformed('addSecretVersion', 'no version number', stage);
      return n;
    } catch (e) {
      throw this.#err(e, 'addSecretVersion', stage);
    } finally {
      data.fill(0);
    }
  }

  /** the raw payload of version n, integrity-checked; the caller wipes it */
  async #access(n: number, stage?: Stage): Promise<Buffer> {
    let payload: protos.google.cloud.secretmanager.v1.ISecretPayload | null | undefined;
    let name: string | null | undefined;
    try {
      [{ payload, name }] = await this.#client.accessSecretVersion(
        { name: `${this.secretName}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
    } catch (e) {
      if (grpcCode(e) === GRPC.NOT_FOUND) {
        // versions are never deleted one by one: an alias or marker naming a missing version is damage
        throw new KeyrotorError('STORE_CORRUPT', `${this.label} refers to version ${n}, which does not exist`, {
          stage,
          retryable: false,
          hint: `point the alias at an existing version: gcloud secrets update ${this.secretName.split('/').pop()} --update-version-aliases=<alias>=<version>`,
        });
      }
      throw this.#err(e, 'accessSecretVersion', stage, n);
    }
    // an answer for another (or no) version, or without a payload, is not an empty value
    if (versionNumberOf(name) !== n)
      throw this.#malformed('accessSecretVersion', name ? 'it names another version' : 'no name', stage, n);
    if (!payload || payload.data === null || payload.data === undefined)
      throw this.#malformed('accessSecretVersion', 'no payload', stage, n);
    const data = Buffer.from(payload?.data ?? new Uint8Array());
    const sent = payload?.dataCrc32c;
    if (sent !== null && sent !== undefined && Number(String(sent)) !== crc32c(data)) {
      data.fill(0);
      throw new KeyrotorError('STORE_CORRUPT', `version ${n} of ${this.label} failed its CRC32C check`, {
        stage,
        retryable: true,
      });
    }
    return data;
  }

  async #accessSecret(n: number): Promise<Secret> {
    const data = await this.#access(n);
    try {
      if (!data.length) throw new KeyrotorError('STORE_CORRUPT', `version ${n} of ${this.label} is empty`);
      return Secret.of(data.toString('utf8'));
    } finally {
      data.fill(0);
    }
  }

  async #disable(n: number, stage: Stage): Promise<void> {
    try {
      await this.#client.disableSecretVersion(
        { name: `${this.secretName}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
    } catch (e) {
      const code = grpcCode(e);
      // destroyed (FAILED_PRECONDITION) or gone: it cannot be used either way
      if (code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) return;
      throw this.#err(e, 'disableSecretVersion', stage, n);
    }
  }

  /** make an unaliased extra copy unusable: destroy it, or at least disable it when destroy is not allowed */
  async #retire(n: number, stage: Stage): Promise<void> {
    this.#log.warn({ stage, version: n }, 'destroying an extra version left by a retried add');
    try {
      await this.#client.destroySecretVersion(
        { name: `${this.secretName}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
    } catch (e) {
      const code = grpcCode(e);
      if (code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) return;
      if (code === GRPC.PERMISSION_DENIED) return this.#disable(n, stage);
      throw this.#err(e, 'destroySecretVersion', stage, n);
    }
  }
}

/** Drop `keyrotor.v<N>` marks of versions no alias points at, keeping the newest few (for demote and retries). */
function pruneMarks(annotations: Record<string, string>, aliases: Record<string, number>): Record<string, string> {
  const aliased = new Set(Object.values(aliases));
  const unaliased = Object.keys(annotations)
    .map((k) => ({ k, n: Number(VERSION_ANNOTATION_RE.exec(k)?.[1] ?? NaN) }))
    .filter((x) => Number.isFinite(x.n) && !aliased.has(x.n))
    .sort((a, b) => b.n - a.n);
  const out = { ...annotations };
  for (const x of unaliased.slice(KEEP_UNALIASED_MARKS)) delete out[x.k];
  return out;
}
