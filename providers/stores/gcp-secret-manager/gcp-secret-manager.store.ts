/**
 * GCP Secret Manager as a keyrotor SecretStore.
 *
 * **Consumers read `latest`** (`projects/<p>/secrets/<s>/versions/latest`, the default of Cloud Run
 * secret env vars and volumes, the GKE Secret Manager add-on, `gcloud secrets versions access latest`
 * and most client code) **or the `current` alias**: at every instant both serve a key that works at the
 * issuer. So nothing unverified, and nothing that is later disabled, is ever the newest version of the
 * secret consumers read (the "main" secret):
 *
 * - stage   adds the new value to a SIDE secret `<s>-keyrotor-pending` (config `pendingSecret`), created
 *           on first use with the main secret's replication (config `createPendingSecret`). The side
 *           secret carries the lock, the per-version metadata and a `pending` alias, exactly as the main
 *           secret did before: `keyrotor.pending-rotation` = `{ r: rotationId, a: highest side version
 *           before the add, f: fingerprint }` is set (CAS) BEFORE `AddSecretVersion` (no idempotency
 *           token: a retried stage after a lost answer finds the version it already added, above `a`,
 *           with fingerprint `f`, instead of adding a second one; extra copies are destroyed); then
 *           `keyrotor.v<N>` = `{ r, k, f, c, m }` (m = highest MAIN version at stage) and `pending` -> N.
 * - verify  reads the staged value from the side secret (readPending).
 * - promote copies the verified value into the main secret as a new version M (found again by
 *           fingerprint among unmarked versions above `m` after a lost answer: never added twice), then
 *           one CAS on the main secret moves `current` -> M and `previous` -> the old current and writes
 *           M's mark `{ r, k, f, c, o: old current, q: old previous, s: N }`; then releases the side
 *           lock (`pending` alias and marker removed, N's mark gets `p: 1`) and disables N.
 * - demote  adds the old value (the version `o`) AGAIN as a new version R (mark `{ ...old mark, rb:
 *           rotationId, from: o }`), moves `current` -> R and `previous` -> `q` in one CAS that also
 *           marks M `x: 1` (rolled back), and only then disables M: `latest` is never a disabled version.
 *           A promote that added M but crashed before recording it is found by fingerprint and handled
 *           the same way. Rolling back a bootstrap (nothing was current before) disables M: there is no
 *           working key to serve. Idempotent: a retry finds R by its mark and only disables.
 * - unstage disables this rotation's side versions and releases the side lock. Never touches main.
 *
 * Every alias/annotation change is an `UpdateSecret` with the etag read just before (a compare-and-swap:
 * a stale etag is ABORTED, and we re-read, re-plan and retry a few times). Marks live in the SECRET's
 * annotations (GCP versions carry no labels). Version ids: `versionId` is `pending-<N>` (version N of the
 * side secret) for a value keyrotor staged, reported by readPending and, after promote, by the copy in
 * the main secret (and by a restored copy of it); versions keyrotor did not stage report their number.
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
import { StepMemo } from '../../common/step-memo.ts';
import { GRPC, grpcCode, malformedAnswer, mapGcpError, type GcpOperation } from './gcp-secret-manager.errors.ts';

type ISecret = protos.google.cloud.secretmanager.v1.ISecret;

export const ALIAS_CURRENT = 'current';
export const ALIAS_PREVIOUS = 'previous';
/** on the side secret only */
export const ALIAS_PENDING = 'pending';
/** the lock and add-marker, on the side secret */
export const ANNOTATION_PENDING = 'keyrotor.pending-rotation';
/** on the side secret: which secret it stages for */
export const ANNOTATION_PENDING_OF = 'keyrotor.pending-of';
export const PENDING_SECRET_SUFFIX = '-keyrotor-pending';
const VERSION_ANNOTATION_RE = /^keyrotor\.v(\d+)$/;
export const versionAnnotation = (n: number) => `keyrotor.v${n}`;

/** marks of versions no alias points at are pruned, except this many of the newest */
const KEEP_UNALIASED_MARKS = 8;
const CAS_ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 30_000;

type Which = 'main' | 'side';

/** Per-version metadata (annotation `keyrotor.v<N>`). References only, never values. */
interface VersionMark {
  /** rotation that issued the key ('' for a restored copy of a version keyrotor did not write) */
  r: string;
  k?: string | undefined;
  f?: string | undefined;
  c?: string | undefined;
  /** main: version that was current when this one was promoted; null = none (bootstrap) */
  o?: number | null | undefined;
  /** main: version that was previous when this one was promoted; null = none */
  q?: number | null | undefined;
  /** main: the side version this value was staged as */
  s?: number | undefined;
  /** main: rolled back by demote (disabled once a working version is newest) */
  x?: 1 | undefined;
  /** main: a restored copy written by the rollback of this rotation */
  rb?: string | undefined;
  /** main: the version a restored copy copies */
  from?: number | undefined;
  /** side: highest main version when staged (a lost add at promote is searched above it) */
  m?: number | undefined;
  /** side: promoted (copied into the main secret) */
  p?: 1 | undefined;
}

/** The lock and add-marker (annotation `keyrotor.pending-rotation` on the side secret). */
interface PendingMark {
  r: string;
  /** highest side version number before the add: anything newer may be this rotation's lost add */
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
  replication?: ISecret['replication'];
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
export async function createGcpClient(cfg: Partial<GcpSecretManagerStoreConfig>): Promise<SecretManagerServiceClient> {
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
const posInt = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined);
const numOrNull = (v: unknown) =>
  v === null ? null : typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;

function parseMark(text: string): VersionMark | undefined {
  const j = parseJson(text);
  const r = str(j?.r) ?? (str(j?.rb) ? '' : undefined);
  if (!j || r === undefined) return undefined;
  return {
    r,
    k: str(j.k),
    f: str(j.f),
    c: str(j.c),
    ...('o' in j ? { o: numOrNull(j.o) } : {}),
    ...('q' in j ? { q: numOrNull(j.q) } : {}),
    ...(posInt(j.s) !== undefined ? { s: posInt(j.s) } : {}),
    ...(j.x === 1 ? { x: 1 as const } : {}),
    ...(str(j.rb) ? { rb: str(j.rb) } : {}),
    ...(posInt(j.from) !== undefined ? { from: posInt(j.from) } : {}),
    ...(typeof j.m === 'number' && Number.isSafeInteger(j.m) && j.m >= 0 ? { m: j.m } : {}),
    ...(j.p === 1 ? { p: 1 as const } : {}),
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
  return {
    etag: s.etag ?? '',
    aliases,
    annotations,
    marks,
    pending: p === undefined ? undefined : parsePending(p),
    replication: s.replication,
  };
}

function metaOf(mark: VersionMark | undefined): VersionMeta {
  if (!mark) return {};
  return {
    ...(mark.r ? { rotationId: mark.r } : {}),
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
 * The store's factory. The main secret must exist (the store never creates it); the side secret is
 * created on the first stage unless `createPendingSecret: false`. `close()` releases the gRPC channel of
 * a client the store built.
 */
export async function createGcpSecretManagerStore(
  cfg: GcpSecretManagerStoreConfig,
  ctx: ProviderContext,
  deps: GcpSecretManagerStoreDeps = {},
): Promise<SecretStore & { close(): Promise<void> }> {
  const client = deps.client ?? (await createGcpClient(cfg));
  return new GcpSecretManagerStore(cfg, ctx, client, !deps.client, deps);
}

/** What a step remembers for the next one (see providers/common/step-memo.ts). */
interface Memo {
  main?: SecretView | undefined;
  /** null: the side secret does not exist */
  side?: SecretView | null | undefined;
  added?: { rid: string; n: number; secret: Secret } | undefined;
}

const stagedId = (n: number) => `pending-${n}`;

class GcpSecretManagerStore implements SecretStore {
  readonly type = 'gcp-secret-manager';
  readonly label: string;
  /** `projects/<p>/secrets/<s>`: the secret consumers read */
  readonly secretName: string;
  /** `projects/<p>/secrets/<s>-keyrotor-pending`: staged values */
  readonly pendingName: string;
  readonly #project: string;
  readonly #pendingId: string;
  readonly #createPending: boolean;
  readonly #client: SecretManagerServiceClient;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #pageSize: number;
  /**
   * What the last step read or updated, for the next step of the same rotation in this process.
   * Mutations stay safe on a stale view: every update carries the etag, and a stale one is re-read and
   * re-planned (#cas). Values only inside a Secret.
   */
  readonly #memo = new StepMemo<Memo>();
  readonly #ownsClient: boolean;

  constructor(
    cfg: GcpSecretManagerStoreConfig,
    ctx: ProviderContext,
    client: SecretManagerServiceClient,
    ownsClient: boolean,
    opts: Pick<GcpSecretManagerStoreDeps, 'listPageSize'> = {},
  ) {
    this.#ownsClient = ownsClient;
    this.#project = `projects/${cfg.project}`;
    this.secretName = `${this.#project}/secrets/${cfg.secret}`;
    this.#pendingId = cfg.pendingSecret ?? `${cfg.secret}${PENDING_SECRET_SUFFIX}`;
    this.pendingName = `${this.#project}/secrets/${this.#pendingId}`;
    this.#createPending = cfg.createPendingSecret;
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

  #name(w: Which): string {
    return w === 'main' ? this.secretName : this.pendingName;
  }

  // ---------------------------------------------------------------- reads

  async check(): Promise<void> {
    this.#memo.forget();
    const main = await this.#read('main', 'preflight');
    const side = await this.#readSide('preflight');
    if (side === null && !this.#createPending) throw this.#noSide('preflight');
    // a rotation's preflight reads the current value next and stages after that
    this.#memo.remember({ main, side }, { readCurrent: true, stage: true });
  }

  async describe(): Promise<StoreSlots> {
    this.#memo.forget();
    const s = await this.#read('main');
    const side = await this.#readSide();
    const slot = (alias: string): SlotInfo | undefined => {
      const n = s.aliases[alias];
      return n === undefined ? undefined : { versionId: this.#idOf(s, n), meta: metaOf(s.marks.get(n)) };
    };
    const p = side?.aliases[ALIAS_PENDING];
    return {
      current: slot(ALIAS_CURRENT),
      previous: slot(ALIAS_PREVIOUS),
      pending: p === undefined ? undefined : { versionId: stagedId(p), meta: metaOf(side!.marks.get(p)) },
    };
  }

  async readCurrent(): Promise<StoredVersion | null> {
    // the aliases check() just read (the value is still read: it is not remembered)
    const k = this.#memo.take({ step: 'readCurrent' });
    return this.#readAlias(ALIAS_CURRENT, k?.main);
  }

  async readPrevious(): Promise<StoredVersion | null> {
    this.#memo.forget();
    return this.#readAlias(ALIAS_PREVIOUS);
  }

  async readPending(rotationId: string): Promise<StoredVersion | null> {
    const k = this.#memo.take({ step: 'readPending', rotationId });
    const p = k?.added;
    if (k?.side && p?.rid === rotationId && k.side.aliases[ALIAS_PENDING] === p.n) {
      // the version this instance just added and pointed `pending` at (stage's answer said so)
      return { versionId: stagedId(p.n), secret: p.secret, meta: metaOf(k.side.marks.get(p.n)) };
    }
    this.#memo.forget();
    const s = await this.#readSide();
    const n = s ? this.#stagedBy(s, rotationId) : undefined;
    if (n === undefined) return null;
    return { versionId: stagedId(n), secret: await this.#accessSecret('side', n), meta: metaOf(s!.marks.get(n)) };
  }

  async #readAlias(alias: string, known?: SecretView): Promise<StoredVersion | null> {
    const s = known ?? (await this.#read('main'));
    const n = s.aliases[alias];
    if (n === undefined) return null;
    // read by number, so the value and the metadata belong to the same version
    return { versionId: this.#idOf(s, n), secret: await this.#accessSecret('main', n), meta: metaOf(s.marks.get(n)) };
  }

  /** the id a main version reports: the staged id it was promoted from (also for a restored copy), else its number */
  #idOf(s: SecretView, n: number): string {
    const mark = s.marks.get(n);
    const base = mark?.from !== undefined ? (s.marks.get(mark.from) ?? mark) : mark;
    if (base?.s !== undefined) return stagedId(base.s);
    return String(mark?.from ?? n);
  }

  // ---------------------------------------------------------------- stage (side secret)

  async stage(req: StageRequest): Promise<{ versionId: string }> {
    const stage: Stage = 'stage';
    const rid = req.rotationId;
    const fp = fingerprint(req.secret);
    const markFp = req.meta.fingerprint ?? fp;
    const known = this.#memo.take({ step: 'stage' })?.side;
    let s = known ?? (await this.#ensureSide(stage));
    s = await this.#releaseStaleLock(s, rid, stage);

    // 1. already staged by this rotation (a retry; maybe promoted since): converge, never add again
    const done = this.#ownVersion(s, rid);
    if (done !== undefined) {
      if (s.marks.get(done)?.p) return { versionId: stagedId(done) };
      return { versionId: (await this.#finishStage(s, rid, done, markFp, stage)).versionId };
    }
    this.#assertNotLocked(s, rid);

    // 2. take the lock and record what we are about to add, BEFORE adding: the baseline above which a
    //    retry after a lost AddSecretVersion answer searches, and the write-ahead marker itself
    const baseline = await this.#highestVersion('side', stage);
    const mainBaseline = await this.#highestVersion('main', stage);
    let previousFp: string | undefined;
    /** our marker was not there before this update: no earlier attempt can have added a version */
    let freshLock = false;
    s = await this.#cas('side', stage, s, (x) => {
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
    const orphans = freshLock ? [] : await this.#orphans('side', s, pm.a, stage);
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
      n = await this.#add('side', req.secret, stage);
      added = true;
    }
    // duplicates of this value, or values an earlier attempt of this rotation abandoned: never usable
    for (const extra of [...mine.slice(1), ...stale]) await this.#retire('side', extra, stage);

    // 4. record the metadata and point `pending` at it
    const out = await this.#finishStage(s, rid, n, markFp, stage, {
      r: rid,
      k: req.meta.issuerKeyId,
      f: markFp,
      c: req.meta.createdAt,
      m: mainBaseline,
    });
    // verify reads this version next and promote copies it: remember the answer (not on a retry path)
    if (added && out.view.aliases[ALIAS_PENDING] === n && out.view.marks.get(n)?.r === rid) {
      this.#memo.remember(
        { side: out.view, added: { rid, n, secret: req.secret } },
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
        `rotation ${rid} already staged a different value as version ${n} of ${this.pendingName}`,
        { stage, retryable: false, hint: `unstage rotation ${rid} first` },
      );
    }
    const view = await this.#cas('side', stage, s, (x) => {
      const mark = x.marks.get(n);
      const ours = mark?.r === rid;
      // staged already, or promoted since: a retried stage changes nothing
      if (ours && (x.aliases[ALIAS_PENDING] === n || mark.p)) return null;
      this.#assertNotLocked(x, rid);
      if (!ours && x.pending?.r !== rid) {
        // someone removed our marker between the add and now (a concurrent unstage): start over
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `the stage marker of rotation ${rid} on ${this.pendingName} disappeared while staging`,
          { stage, retryable: true },
        );
      }
      const aliases: Record<string, number> = { ...x.aliases, [ALIAS_PENDING]: n };
      const annotations = ours
        ? { ...x.annotations }
        : { ...x.annotations, [versionAnnotation(n)]: JSON.stringify(newMark ?? { r: rid, f: markFp }) };
      return { aliases, annotations };
    });
    return { versionId: stagedId(n), view };
  }

  // ---------------------------------------------------------------- promote / demote (main secret)

  async promote(rotationId: string): Promise<void> {
    const stage: Stage = 'promote';
    const k = this.#memo.take({ step: 'promote', rotationId });
    const side = k?.side ?? (await this.#readSide(stage));
    let main = await this.#read('main', stage);
    const p = side ? this.#stagedBy(side, rotationId) : undefined;

    let n = this.#promotedIn(main, rotationId);
    if (n === undefined) {
      if (p === undefined || !side) {
        throw new KeyrotorError('STORE_CONFLICT', `rotation ${rotationId} has nothing staged in ${this.label}`, {
          stage,
          retryable: false,
          hint: 'stage the value first; promote only copies an existing staged version',
        });
      }
      const pmark = side.marks.get(p)!;
      /** this instance staged it just now (stage's answer): no earlier promote attempt can have added a copy */
      const justStaged = k?.added?.n === p && k.added.rid === rotationId ? k.added.secret : undefined;
      const secret = justStaged ?? (await this.#accessSecret('side', p, stage));
      const fp = fingerprint(secret);
      // 1. a copy an earlier attempt added whose answer was lost? adopt it; else add (the value was verified)
      const copies = justStaged
        ? []
        : (await this.#orphans('main', main, pmark.m ?? main.aliases[ALIAS_CURRENT] ?? 0, stage))
            .filter((o) => o.fp === fp)
            .map((o) => o.n)
            .sort((a, b) => a - b);
      if (copies.length) {
        n = copies[0]!;
        this.#log.warn({ stage, rotationId, version: n }, 'adopting the copy a previous promote attempt added');
      } else {
        n = await this.#add('main', secret, stage);
      }
      // (extra copies hold the same verified value; they stay enabled below the newest, harmless)
      // 2. one CAS: current -> n, previous -> old current, n's mark
      const target = n;
      main = await this.#cas('main', stage, main, (x) => {
        const mk = x.marks.get(target);
        if (mk?.r === rotationId && !mk.rb) {
          if (x.aliases[ALIAS_CURRENT] === target) return null;
          throw this.#moved(rotationId, target, stage);
        }
        const oldCurrent = x.aliases[ALIAS_CURRENT];
        const oldPrevious = x.aliases[ALIAS_PREVIOUS];
        const aliases: Record<string, number> = { ...x.aliases, [ALIAS_CURRENT]: target };
        if (oldCurrent !== undefined) aliases[ALIAS_PREVIOUS] = oldCurrent;
        const mark: VersionMark = {
          r: rotationId,
          k: pmark.k,
          f: pmark.f,
          c: pmark.c,
          o: oldCurrent ?? null,
          q: oldPrevious ?? null,
          s: p,
        };
        return { aliases, annotations: { ...x.annotations, [versionAnnotation(target)]: JSON.stringify(mark) } };
      });
    } else if (main.aliases[ALIAS_CURRENT] !== n) {
      throw this.#moved(rotationId, n, stage);
    }

    // 3. release the side lock and retire the staged copy (it now lives in the main secret)
    if (side) await this.#releaseSide(side, rotationId, stage);
  }

  #moved(rotationId: string, n: number, stage: Stage): KeyrotorError {
    return new KeyrotorError(
      'STORE_CONFLICT',
      `version ${n} of ${this.label} (rotation ${rotationId}) is no longer current: it was rolled back or another writer moved the "current" alias`,
      { stage, retryable: false, hint: 'check who else edits the aliases of this secret' },
    );
  }

  async #releaseSide(side: SecretView, rotationId: string, stage: Stage): Promise<SecretView> {
    const staged = new Set<number>();
    const after = await this.#cas('side', stage, side, (x) => {
      staged.clear();
      const aliases = { ...x.aliases };
      const annotations = { ...x.annotations };
      let changed = false;
      for (const [n, m] of x.marks) {
        if (m.r !== rotationId) continue;
        staged.add(n);
        if (aliases[ALIAS_PENDING] === n) {
          delete aliases[ALIAS_PENDING];
          changed = true;
        }
        if (!m.p) {
          annotations[versionAnnotation(n)] = JSON.stringify({ ...m, p: 1 });
          changed = true;
        }
      }
      if (x.pending?.r === rotationId) {
        delete annotations[ANNOTATION_PENDING];
        changed = true;
      }
      return changed ? { aliases, annotations } : null;
    });
    for (const n of staged) if (after.aliases[ALIAS_PENDING] !== n) await this.#disable('side', n, stage);
    return after;
  }

  /**
   * The side lock of ANOTHER rotation whose promote already reached the main secret (its copy is marked
   * there) is stale: that rotation never needs the side secret again (a retried promote only releases
   * it, a rollback works on the main secret). Release it, so that a promote that failed between its main
   * update and the release (then maybe a failed rollback: needs_attention) does not block every later
   * stage, the operator's repair included. A lock whose holder never promoted stays.
   */
  async #releaseStaleLock(s: SecretView, rid: string, stage: Stage): Promise<SecretView> {
    const p = s.aliases[ALIAS_PENDING];
    const holder = s.pending && s.pending.r !== rid ? s.pending.r : p === undefined ? undefined : s.marks.get(p)?.r;
    if (!holder || holder === rid) return s;
    const main = await this.#read('main', stage);
    if (this.#promotedIn(main, holder) === undefined) return s;
    this.#log.warn(
      { stage, rotationId: rid, holder },
      'releasing the side-secret lock of a rotation that was already promoted',
    );
    return this.#releaseSide(s, holder, stage);
  }

  async demote(rotationId: string): Promise<void> {
    const stage: Stage = 'demote';
    this.#memo.forget();
    const main = await this.#read('main', stage);
    const bad = new Set<number>();
    for (const [n, m] of main.marks) if (m.r === rotationId && !m.rb) bad.add(n);
    /** promote recorded its copy (and moved `current`): the aliases and marks must be put back */
    const recorded = bad.size > 0;
    if (!bad.size) {
      // a promote that added its copy but crashed (or failed) before recording it: find it by fingerprint
      const side = await this.#readSide(stage);
      const p = side ? this.#stagedBy(side, rotationId) : undefined;
      if (side && p !== undefined) {
        const base = side.marks.get(p)?.m ?? main.aliases[ALIAS_CURRENT] ?? 0;
        if (
          (await this.#versionsAfter('main', base, stage)).some((v) => v.state === 'ENABLED' && !main.marks.has(v.n))
        ) {
          const fp = fingerprint(await this.#accessSecret('side', p, stage));
          for (const o of await this.#orphans('main', main, base, stage)) if (o.fp === fp) bad.add(o.n);
        }
      }
    }
    if (!bad.size) return; // never promoted (nothing reached the main secret)

    const cur = main.aliases[ALIAS_CURRENT];
    const curMark = cur === undefined ? undefined : main.marks.get(cur);
    const curIsBad = cur !== undefined && bad.has(cur);
    if (curIsBad && curMark?.o === undefined) {
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
    /** the version consumers should get again; null = none (a rolled-back bootstrap) */
    const target: number | null = curIsBad ? (curMark!.o ?? null) : (cur ?? null);
    if (target !== null) {
      const st = await this.#versionState('main', target, stage);
      if (st !== 'ENABLED') {
        throw new KeyrotorError(
          'STORE_CORRUPT',
          `cannot demote rotation ${rotationId}: version ${target} of ${this.label} (current before it) is ${st ?? 'missing'}`,
          { stage, retryable: false, hint: `enable version ${target} (gcloud secrets versions enable) and retry` },
        );
      }
    }
    let restorePrevious: number | null | undefined = curIsBad ? (curMark!.q ?? null) : undefined;
    if (restorePrevious !== null && restorePrevious !== undefined) {
      const st = await this.#versionState('main', restorePrevious, stage);
      if (st === undefined || st === 'DESTROYED') restorePrevious = null;
    }

    // 1. the newest version must serve a working key before anything is disabled: if a bad version is
    //    newer than the target, add the target's value again (found again after a lost answer)
    let restored: number | undefined;
    for (const [n, m] of main.marks) if (m.rb === rotationId && (restored === undefined || n > restored)) restored = n;
    const newestBad = Math.max(...bad);
    if (target !== null && restored === undefined && newestBad > target) {
      const value = await this.#accessSecret('main', target, stage);
      const fp = fingerprint(value);
      const copies = (await this.#orphans('main', main, newestBad, stage)).filter((o) => o.fp === fp).map((o) => o.n);
      if (copies.length) {
        restored = Math.min(...copies);
        this.#log.warn(
          { stage, rotationId, version: restored },
          'adopting the restored copy a previous demote attempt added',
        );
      } else {
        restored = await this.#add('main', value, stage);
      }
    }
    const serve = restored ?? target;
    // 2. one CAS: current -> the working version, previous -> what it was, marks. Not for a copy promote
    //    never recorded: no alias points at it, and a retry finds it (and the restored copy) by fingerprint
    if (recorded)
      await this.#cas('main', stage, main, (x) => {
        const aliases = { ...x.aliases };
        const annotations = { ...x.annotations };
        let changed = false;
        const c = x.aliases[ALIAS_CURRENT];
        if (c !== undefined && bad.has(c)) {
          if (serve === null) delete aliases[ALIAS_CURRENT];
          else aliases[ALIAS_CURRENT] = serve;
          if (restorePrevious === null || restorePrevious === undefined) delete aliases[ALIAS_PREVIOUS];
          else aliases[ALIAS_PREVIOUS] = restorePrevious;
          changed = true;
        }
        if (restored !== undefined && target !== null && x.marks.get(restored)?.rb !== rotationId) {
          const from = x.marks.get(target);
          const mark: VersionMark = { ...(from ?? { r: '' }), rb: rotationId, from: target };
          delete mark.x;
          annotations[versionAnnotation(restored)] = JSON.stringify(mark);
          changed = true;
        }
        for (const n of bad) {
          const m = x.marks.get(n);
          if (m && !m.x) {
            annotations[versionAnnotation(n)] = JSON.stringify({ ...m, x: 1 });
            changed = true;
          }
        }
        return changed ? { aliases, annotations } : null;
      });
    // 3. only now: the rolled-back copies stop working
    for (const n of bad) await this.#disable('main', n, stage);
  }

  // ---------------------------------------------------------------- unstage (side secret)

  async unstage(rotationId: string): Promise<void> {
    const stage: Stage = 'unstage';
    this.#memo.forget();
    const s = await this.#readSide(stage);
    if (!s) return;
    const ownsLock = s.pending?.r === rotationId;
    const targets = new Set<number>();
    for (const [n, m] of s.marks) if (m.r === rotationId) targets.add(n);
    if (ownsLock)
      for (const o of await this.#orphans('side', s, s.pending!.a, stage)) if (o.fp === s.pending!.f) targets.add(o.n);
    if (!targets.size && !ownsLock) return;

    // disable first (a retry still finds the annotations)
    for (const n of targets) await this.#disable('side', n, stage);
    await this.#cas('side', stage, s, (x) => {
      const aliases = { ...x.aliases };
      const annotations = { ...x.annotations };
      let changed = false;
      const p = aliases[ALIAS_PENDING];
      if (p !== undefined && targets.has(p)) {
        delete aliases[ALIAS_PENDING];
        changed = true;
      }
      for (const n of targets) {
        if (x.marks.get(n)?.r === rotationId && !x.marks.get(n)?.p) {
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
        `${this.label} is locked by rotation ${s.pending.r} (annotation ${ANNOTATION_PENDING} on ${this.pendingName})`,
        {
          stage: 'stage',
          retryable: false,
          hint: `let rotation ${s.pending.r} finish or roll it back; if it is dead, remove the annotation ${ANNOTATION_PENDING} (and the "pending" alias) from ${this.pendingName}`,
        },
      );
    }
    const p = s.aliases[ALIAS_PENDING];
    if (p !== undefined) {
      const owner = s.marks.get(p)?.r;
      if (owner !== rid) {
        throw new KeyrotorError(
          'LOCKED',
          `${this.label} already has a pending version ${p} in ${this.pendingName}${owner ? ` staged by rotation ${owner}` : ' not staged by keyrotor'}`,
          {
            stage: 'stage',
            retryable: false,
            hint: owner
              ? `let rotation ${owner} finish or roll it back`
              : `remove the "pending" alias from ${this.pendingName}`,
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

  /** side: this rotation's version if `pending` points at it */
  #stagedBy(s: SecretView, rid: string): number | undefined {
    const n = s.aliases[ALIAS_PENDING];
    return n !== undefined && s.marks.get(n)?.r === rid ? n : undefined;
  }

  /** main: the copy promote recorded for this rotation (not a restored copy) */
  #promotedIn(s: SecretView, rid: string): number | undefined {
    let best: number | undefined;
    for (const [n, m] of s.marks) if (m.r === rid && !m.rb && (best === undefined || n < best)) best = n;
    return best;
  }

  /** enabled versions newer than `after`, without annotation or alias, with their value's fingerprint */
  async #orphans(w: Which, s: SecretView, after: number, stage: Stage): Promise<Array<{ n: number; fp: string }>> {
    const aliased = new Set(Object.values(s.aliases));
    const out: Array<{ n: number; fp: string }> = [];
    for (const v of await this.#versionsAfter(w, after, stage)) {
      if (v.state !== 'ENABLED' || s.marks.has(v.n) || aliased.has(v.n)) continue;
      const data = await this.#access(w, v.n, stage);
      out.push({ n: v.n, fp: fingerprint(data.toString('utf8')) });
      data.fill(0);
    }
    return out;
  }

  // ---------------------------------------------------------------- helpers: calls

  #err(e: unknown, op: GcpOperation, w: Which, stage?: Stage, version?: number | string): KeyrotorError {
    return mapGcpError(e, {
      op,
      secretName: this.#name(w),
      stage,
      version: version === undefined ? undefined : String(version),
    });
  }

  #malformed(op: GcpOperation, w: Which, what: string, stage?: Stage, version?: number | string): KeyrotorError {
    return malformedAnswer(
      { op, secretName: this.#name(w), stage, version: version === undefined ? undefined : String(version) },
      what,
    );
  }

  /**
   * A secret answer (GetSecret, UpdateSecret, CreateSecret) must name this secret (the service may spell
   * the project by number, so only the `/secrets/<id>` tail is compared) and carry an etag: a view
   * without one would turn the next alias change into an unconditional write.
   */
  #checkedView(secret: ISecret, op: GcpOperation, w: Which, stage?: Stage): SecretView {
    const name = this.#name(w);
    const tail = name.slice(name.indexOf('/secrets/'));
    if (!secret.name || !secret.name.endsWith(tail))
      throw this.#malformed(op, w, secret.name ? 'it names another secret' : 'no name', stage);
    if (!secret.etag) throw this.#malformed(op, w, 'no etag', stage);
    return viewOf(secret);
  }

  async #read(w: Which, stage?: Stage): Promise<SecretView> {
    let secret: ISecret;
    try {
      [secret] = await this.#client.getSecret({ name: this.#name(w) }, { timeout: CALL_TIMEOUT_MS });
    } catch (e) {
      throw this.#err(e, 'getSecret', w, stage);
    }
    return this.#checkedView(secret, 'getSecret', w, stage);
  }

  /** the side secret, or null when it does not exist (yet) */
  async #readSide(stage?: Stage): Promise<SecretView | null> {
    try {
      return await this.#read('side', stage);
    } catch (e) {
      if (e instanceof KeyrotorError && e.code === 'STORE_NOT_FOUND') return null;
      throw e;
    }
  }

  #noSide(stage: Stage): KeyrotorError {
    return new KeyrotorError(
      'STORE_NOT_FOUND',
      `the side secret ${this.pendingName} (staged values of ${this.secretName}) does not exist and createPendingSecret is false`,
      {
        stage,
        retryable: false,
        hint: `gcloud secrets create ${this.#pendingId} --project ${this.#project.split('/')[1]} (same replication as ${this.secretName}), or set createPendingSecret: true`,
      },
    );
  }

  /** the side secret, created (with the main secret's replication) when missing */
  async #ensureSide(stage: Stage): Promise<SecretView> {
    const side = await this.#readSide(stage);
    if (side) return side;
    if (!this.#createPending) throw this.#noSide(stage);
    const main = await this.#read('main', stage);
    let created: ISecret;
    try {
      [created] = await this.#client.createSecret(
        {
          parent: this.#project,
          secretId: this.#pendingId,
          secret: {
            replication: main.replication ?? { automatic: {} },
            labels: { 'keyrotor-role': 'pending' },
            annotations: { [ANNOTATION_PENDING_OF]: this.secretName },
          },
        },
        { timeout: CALL_TIMEOUT_MS },
      );
    } catch (e) {
      // another instance created it at the same moment
      if (grpcCode(e) === GRPC.ALREADY_EXISTS) return this.#read('side', stage);
      throw this.#err(e, 'createSecret', 'side', stage);
    }
    this.#log.info({ stage, secret: this.pendingName }, 'created the side secret for staged values');
    return this.#checkedView(created, 'createSecret', 'side', stage);
  }

  /**
   * Compare-and-swap on a secret's aliases/annotations: `plan` sees the latest state and returns the
   * full new maps (a masked map is replaced as a whole), or null when nothing is left to do, or throws
   * when the wanted end state is no longer valid. A stale etag (ABORTED) re-reads and re-plans.
   */
  async #cas(w: Which, stage: Stage, first: SecretView, plan: (s: SecretView) => Change | null): Promise<SecretView> {
    let s = first;
    for (let attempt = 1; ; attempt++) {
      const change = plan(s);
      if (!change) return s;
      const paths: string[] = [];
      const secret: ISecret = { name: this.#name(w), etag: s.etag };
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
        if (grpcCode(e) !== GRPC.ABORTED) throw this.#err(e, 'updateSecret', w, stage);
        if (attempt >= CAS_ATTEMPTS) {
          throw new KeyrotorError(
            'STORE_CONFLICT',
            `${this.label} kept changing under us (stale etag of ${this.#name(w)} ${attempt} times in a row) during ${stage}`,
            {
              stage,
              retryable: true,
              hint: 'another writer is editing the aliases or annotations of this secret; retry later',
            },
          );
        }
        this.#log.debug({ stage, attempt }, 'stale etag; re-reading the secret and retrying');
        await this.#clock.sleep(20 * 2 ** (attempt - 1) + Math.floor(Math.random() * 20));
        s = await this.#read(w, stage);
        continue;
      }
      return this.#checkedView(out, 'updateSecret', w, stage);
    }
  }

  async #highestVersion(w: Which, stage: Stage): Promise<number> {
    try {
      const [versions] = await this.#client.listSecretVersions(
        { parent: this.#name(w), pageSize: 1 },
        { autoPaginate: false, timeout: CALL_TIMEOUT_MS },
      );
      return versionNumberOf(versions[0]?.name) ?? 0;
    } catch (e) {
      throw this.#err(e, 'listSecretVersions', w, stage);
    }
  }

  /** versions numbered above `after`, newest first (the service lists newest first) */
  async #versionsAfter(w: Which, after: number, stage: Stage): Promise<VersionInfo[]> {
    const out: VersionInfo[] = [];
    let pageToken: string | undefined;
    try {
      for (;;) {
        const [versions, , response] = await this.#client.listSecretVersions(
          { parent: this.#name(w), pageSize: this.#pageSize, ...(pageToken ? { pageToken } : {}) },
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
      throw this.#err(e, 'listSecretVersions', w, stage);
    }
  }

  async #versionState(w: Which, n: number, stage: Stage): Promise<string | undefined> {
    try {
      const [v] = await this.#client.getSecretVersion(
        { name: `${this.#name(w)}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
      return String(v.state ?? '');
    } catch (e) {
      if (grpcCode(e) === GRPC.NOT_FOUND) return undefined;
      throw this.#err(e, 'getSecretVersion', w, stage, n);
    }
  }

  async #add(w: Which, secret: Secret, stage: Stage): Promise<number> {
    const data = Buffer.from(secret.reveal(), 'utf8');
    try {
      const [v] = await this.#client.addSecretVersion(
        { parent: this.#name(w), payload: { data, dataCrc32c: crc32c(data) } },
        { timeout: CALL_TIMEOUT_MS },
      );
      const n = versionNumberOf(v.name);
      // the version was probably added: the retry finds it by fingerprint (see header)
      if (n === undefined) throw this.#malformed('addSecretVersion', w, 'no version number', stage);
      return n;
    } catch (e) {
      throw this.#err(e, 'addSecretVersion', w, stage);
    } finally {
      data.fill(0);
    }
  }

  /** the raw payload of version n, integrity-checked; the caller wipes it */
  async #access(w: Which, n: number, stage?: Stage): Promise<Buffer> {
    let payload: protos.google.cloud.secretmanager.v1.ISecretPayload | null | undefined;
    let name: string | null | undefined;
    try {
      [{ payload, name }] = await this.#client.accessSecretVersion(
        { name: `${this.#name(w)}/versions/${n}` },
        { timeout: CALL_TIMEOUT_MS },
      );
    } catch (e) {
      if (grpcCode(e) === GRPC.NOT_FOUND) {
        // versions are never deleted one by one: an alias or marker naming a missing version is damage
        throw new KeyrotorError('STORE_CORRUPT', `${this.#name(w)} refers to version ${n}, which does not exist`, {
          stage,
          retryable: false,
          hint: `point the alias at an existing version: gcloud secrets update ${this.#name(w).split('/').pop()} --update-version-aliases=<alias>=<version>`,
        });
      }
      throw this.#err(e, 'accessSecretVersion', w, stage, n);
    }
    // an answer for another (or no) version, or without a payload, is not an empty value
    if (versionNumberOf(name) !== n)
      throw this.#malformed('accessSecretVersion', w, name ? 'it names another version' : 'no name', stage, n);
    if (!payload || payload.data === null || payload.data === undefined)
      throw this.#malformed('accessSecretVersion', w, 'no payload', stage, n);
    const data = Buffer.from(payload?.data ?? new Uint8Array());
    const sent = payload?.dataCrc32c;
    if (sent !== null && sent !== undefined && Number(String(sent)) !== crc32c(data)) {
      data.fill(0);
      throw new KeyrotorError('STORE_CORRUPT', `version ${n} of ${this.#name(w)} failed its CRC32C check`, {
        stage,
        retryable: true,
      });
    }
    return data;
  }

  async #accessSecret(w: Which, n: number, stage?: Stage): Promise<Secret> {
    const data = await this.#access(w, n, stage);
    try {
      if (!data.length) throw new KeyrotorError('STORE_CORRUPT', `version ${n} of ${this.#name(w)} is empty`);
      return Secret.of(data.toString('utf8'));
    } finally {
      data.fill(0);
    }
  }

  async #disable(w: Which, n: number, stage: Stage): Promise<void> {
    try {
      await this.#client.disableSecretVersion({ name: `${this.#name(w)}/versions/${n}` }, { timeout: CALL_TIMEOUT_MS });
    } catch (e) {
      const code = grpcCode(e);
      // destroyed (FAILED_PRECONDITION) or gone: it cannot be used either way
      if (code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) return;
      throw this.#err(e, 'disableSecretVersion', w, stage, n);
    }
  }

  /** make an unaliased extra copy unusable: destroy it, or at least disable it when destroy is not allowed */
  async #retire(w: Which, n: number, stage: Stage): Promise<void> {
    this.#log.warn({ stage, version: n }, 'destroying an extra version left by a retried add');
    try {
      await this.#client.destroySecretVersion({ name: `${this.#name(w)}/versions/${n}` }, { timeout: CALL_TIMEOUT_MS });
    } catch (e) {
      const code = grpcCode(e);
      if (code === GRPC.NOT_FOUND || code === GRPC.FAILED_PRECONDITION) return;
      if (code === GRPC.PERMISSION_DENIED) return this.#disable(w, n, stage);
      throw this.#err(e, 'destroySecretVersion', w, stage, n);
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
