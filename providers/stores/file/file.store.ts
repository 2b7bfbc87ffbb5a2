/**
 * The embedded default secret store: one JSON file per key holding a few AES-256-GCM encrypted
 * versions and three slots (`current`, `previous`, `pending`) that point at version ids.
 *
 * File format `keyrotor-file-store/1` (pretty JSON, mode 0600, folder 0700):
 *   { format, keyName, masterKeyId, nextSeq,
 *     slots: { current?, previous?, pending?: { versionId, rotationId } },
 *     versions: [{ id, rotationId, createdAt, meta, promotion?, cipher, iv, tag, data }],
 *     mac }
 * - each value: AES-256-GCM, random 12-byte IV, AAD = format + key name + version id (a ciphertext
 *   moved to another version or file no longer decrypts);
 * - `mac`: HMAC-SHA256 over the rest of the envelope, so slots and metadata cannot be edited either;
 * - `masterKeyId`: public id of the master key, to tell "wrong master key" from "tampered file";
 * - `promotion` on the current version remembers what it replaced, so `demote` restores exactly that.
 * Only a bounded number of versions is kept (the slots plus a few recent ones); older ciphertexts
 * are dropped. Damage is never reset silently: it is STORE_CORRUPT naming the file.
 */
import { randomBytes } from 'node:crypto';
import { access, constants, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type {
  ProviderContext,
  SecretStore,
  SlotInfo,
  StageRequest,
  StoredVersion,
  StoreSlots,
  VersionMeta,
} from '../../../src/core/ports.ts';
import { Secret } from '../../../src/core/secret.ts';
import { mac, macEquals, sameValue, seal, unseal, versionAad } from './file.crypto.ts';
import { errnoOf, fsError } from './file.errors.ts';
import { nearestExistingDir, serialized, writeFileAtomic } from '../../../src/core/fs.ts';
import { checkMasterKey, resolveMasterKey, type MasterKey, type MasterKeySource } from './file.master-key.ts';
import type { FileStoreConfig } from './file.schema.ts';
import { StepMemo, type MemoPermits, type MemoStep } from '../../common/step-memo.ts';

export const FILE_STORE_FORMAT = 'keyrotor-file-store/1';
const FORMAT_RE = /^keyrotor-file-store\/(\d+)$/;
/** versions kept besides those in a slot (and the one `demote` would restore as previous) */
export const EXTRA_VERSIONS_KEPT = 3;
const SAFE_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/*
 * Fewer file reads per rotation: within one process a rotation reads the file at `check` and then again
 * before `readCurrent`, `stage`, `readPending` and `promote`. The instance that last read or wrote the
 * file remembers that document (its canonical JSON: ciphertexts only, never a plain value) for exactly
 * the next step (providers/common/step-memo.ts). The memo is scoped to the file, so another instance
 * writing it in this process forgets it; other processes are kept out by the per-key lease.
 */

const metaSchema = z
  .object({
    rotationId: z.string().optional(),
    issuerKeyId: z.string().optional(),
    fingerprint: z.string().optional(),
    createdAt: z.string().optional(),
  })
  .strict();

const versionSchema = z
  .object({
    id: z.string().regex(/^v\d+-[0-9a-f]{8}$/),
    rotationId: z.string().min(1),
    createdAt: z.string(),
    meta: metaSchema,
    promotion: z
      .object({ at: z.string(), replacedCurrent: z.string().optional(), replacedPrevious: z.string().optional() })
      .strict()
      .optional(),
    cipher: z.literal('aes-256-gcm'),
    iv: z.string(),
    tag: z.string(),
    data: z.string(),
  })
  .strict();

const docSchema = z
  .object({
    format: z.literal(FILE_STORE_FORMAT),
    keyName: z.string().regex(SAFE_KEY_NAME),
    masterKeyId: z.string().regex(/^mk_[0-9a-f]{12}$/),
    nextSeq: z.number().int().min(1),
    slots: z
      .object({
        current: z.string().optional(),
        previous: z.string().optional(),
        pending: z
          .object({ versionId: z.string(), rotationId: z.string().min(1) })
          .strict()
          .optional(),
      })
      .strict(),
    versions: z.array(versionSchema),
  })
  .strict();

type Doc = z.output<typeof docSchema>;
type VersionRec = Doc['versions'][number];

function emptyDoc(keyName: string): Doc {
  return { format: FILE_STORE_FORMAT, keyName, masterKeyId: 'mk_000000000000', nextSeq: 1, slots: {}, versions: [] };
}

/** Rebuild the document in one fixed key order without undefined fields: the bytes the MAC covers. */
function canonical(d: Doc): Doc {
  const opt = <T>(k: string, v: T | undefined) => (v === undefined ? {} : { [k]: v });
  return {
    format: d.format,
    keyName: d.keyName,
    masterKeyId: d.masterKeyId,
    nextSeq: d.nextSeq,
    slots: {
      ...opt('current', d.slots.current),
      ...opt('previous', d.slots.previous),
      ...opt(
        'pending',
        d.slots.pending && { versionId: d.slots.pending.versionId, rotationId: d.slots.pending.rotationId },
      ),
    },
    versions: d.versions.map((v) => ({
      id: v.id,
      rotationId: v.rotationId,
      createdAt: v.createdAt,
      meta: {
        ...opt('rotationId', strOrUndef(v.meta.rotationId)),
        ...opt('issuerKeyId', strOrUndef(v.meta.issuerKeyId)),
        ...opt('fingerprint', strOrUndef(v.meta.fingerprint)),
        ...opt('createdAt', strOrUndef(v.meta.createdAt)),
      },
      ...opt(
        'promotion',
        v.promotion && {
          at: v.promotion.at,
          ...opt('replacedCurrent', v.promotion.replacedCurrent),
          ...opt('replacedPrevious', v.promotion.replacedPrevious),
        },
      ),
      cipher: v.cipher,
      iv: v.iv,
      tag: v.tag,
      data: v.data,
    })),
  };
}

function strOrUndef(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Keep the slotted versions, what demote would restore, and the few most recent others. */
function prune(d: Doc): void {
  const keep = new Set<string>();
  for (const id of [d.slots.current, d.slots.previous, d.slots.pending?.versionId]) if (id) keep.add(id);
  const cur = d.versions.find((v) => v.id === d.slots.current);
  if (cur?.promotion?.replacedCurrent) keep.add(cur.promotion.replacedCurrent);
  if (cur?.promotion?.replacedPrevious) keep.add(cur.promotion.replacedPrevious);
  let extra = 0;
  const kept: VersionRec[] = [];
  for (let i = d.versions.length - 1; i >= 0; i--) {
    const v = d.versions[i]!;
    if (keep.has(v.id)) kept.push(v);
    else if (extra < EXTRA_VERSIONS_KEPT) {
      kept.push(v);
      extra++;
    }
  }
  d.versions = kept.reverse();
}

/** What tests and embedders may inject into the file store: nothing yet (the clock and env come with `ctx`). */
export type FileStoreDeps = Record<never, never>;

/** The embedded default store: one AES-256-GCM encrypted file per key. */
export async function createFileStore(
  cfg: FileStoreConfig,
  ctx: ProviderContext,
  _deps: FileStoreDeps = {},
): Promise<SecretStore> {
  if (!SAFE_KEY_NAME.test(ctx.keyName)) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `file store: key name ${JSON.stringify(ctx.keyName)} cannot be used as a file name`,
    );
  }
  const file = cfg.path
    ? path.resolve(ctx.configDir, cfg.path)
    : path.join(ctx.stateDir, 'secrets', `${ctx.keyName}.json`);
  const keyFile = cfg.keyFile ? path.resolve(ctx.configDir, cfg.keyFile) : path.join(ctx.stateDir, 'master.key');
  const rel = path.relative(process.cwd(), file);
  const shown = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
  const label = `file:${shown}`;
  const keySource: MasterKeySource = { envName: cfg.masterKeyEnv, env: ctx.env, keyFile, logger: ctx.logger };
  const log = ctx.logger.child({ store: label });
  const memo = new StepMemo<string>({ scope: `file-store:${file}` });
  /** remember the document by its canonical JSON (`text`: that JSON when the caller has it already) */
  const remember = (doc: Doc, permits: MemoPermits, text = JSON.stringify(canonical(doc))) =>
    memo.remember(text, permits);
  /** the document remembered for step `s` (consumed), each use parsing its own copy; else forgets */
  const recall = (s: MemoStep): Doc | undefined => recallText(s)?.doc;
  /** the same with its canonical JSON (the text remembered) */
  const recallText = (s: MemoStep): { doc: Doc; text: string } | undefined => {
    const text = memo.take(s);
    return text === undefined ? undefined : { doc: JSON.parse(text) as Doc, text };
  };
  const forget = () => memo.forget();

  const corrupt = (what: string, hint?: string, cause?: unknown) =>
    new KeyrotorError('STORE_CORRUPT', `file store ${shown} ${what}`, {
      retryable: false,
      hint: hint ?? 'restore the file from a backup or move it aside; keyrotor never resets a secrets file by itself',
      cause,
    });

  let cachedKey: MasterKey | undefined;
  async function masterKey(create: boolean): Promise<MasterKey | undefined> {
    if (!cachedKey) cachedKey = await resolveMasterKey(keySource, create);
    return cachedKey;
  }

  /** Parse and authenticate the file; undefined when it does not exist. */
  async function load(): Promise<{ doc: Doc; key: MasterKey } | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw fsError(e, 'cannot read', shown);
    }
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      throw corrupt('is not valid JSON (a torn or damaged write?)', undefined, e);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw corrupt('is not a keyrotor secrets file');
    const { mac: fileMac, ...rest } = obj as Record<string, unknown>;
    const fmt = FORMAT_RE.exec(typeof rest.format === 'string' ? rest.format : '');
    if (fmt && Number(fmt[1]) > 1) {
      throw corrupt(
        `was written by a newer keyrotor (format ${fmt[0]}; this version reads ${FILE_STORE_FORMAT})`,
        'upgrade keyrotor',
      );
    }
    if (!fmt) throw corrupt(`is not a keyrotor secrets file (expected format ${FILE_STORE_FORMAT})`);
    const parsed = docSchema.safeParse(rest);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw corrupt(
        `has an invalid structure (${issue ? issue.path.join('.') || '(root)' : '?'}: ${issue?.message ?? 'invalid'})`,
      );
    }
    if (typeof fileMac !== 'string') throw corrupt('has no integrity code (mac)');
    const doc = parsed.data;
    if (doc.keyName !== ctx.keyName) throw corrupt(`belongs to key "${doc.keyName}", not "${ctx.keyName}"`);
    const key = await masterKey(false);
    if (!key) {
      throw corrupt(
        `cannot be decrypted: no master key (${cfg.masterKeyEnv} is unset and ${keyFile} does not exist)`,
        `set ${cfg.masterKeyEnv} or restore ${keyFile}: the file was written with master key ${doc.masterKeyId}`,
      );
    }
    if (doc.masterKeyId !== key.kid) {
      throw corrupt(
        `was encrypted with master key ${doc.masterKeyId}, but ${key.source} holds ${key.kid} (wrong master key)`,
        `use the master key this file was written with`,
      );
    }
    if (!macEquals(mac(key.mac, JSON.stringify(rest)), fileMac))
      throw corrupt('failed its integrity check: it was modified or damaged');
    // authenticated; still check internal consistency (defence against our own bugs)
    const ids = new Set(doc.versions.map((v) => v.id));
    const rots = new Set(doc.versions.map((v) => v.rotationId));
    const pend = doc.slots.pending;
    if (
      ids.size !== doc.versions.length ||
      rots.size !== doc.versions.length ||
      [doc.slots.current, doc.slots.previous, pend?.versionId].some((id) => id !== undefined && !ids.has(id)) ||
      (pend && doc.versions.find((v) => v.id === pend.versionId)?.rotationId !== pend.rotationId)
    ) {
      throw corrupt('is inconsistent (a slot names a missing version)');
    }
    return { doc, key };
  }

  /**
   * write the document; returns its canonical JSON (what the MAC covers). `known`: the document's
   * canonical form and its JSON, when the caller has them (used unless the master key id changes)
   */
  async function save(doc: Doc, key: MasterKey, known?: { body: Doc; text: string }): Promise<string> {
    const same = known !== undefined && doc.masterKeyId === key.kid;
    doc.masterKeyId = key.kid;
    const body = same ? known.body : canonical(doc);
    const bodyText = same ? known.text : JSON.stringify(body);
    const text = JSON.stringify({ ...body, mac: mac(key.mac, bodyText) }, null, 2) + '\n';
    try {
      await writeFileAtomic(file, text);
    } catch (e) {
      throw fsError(e, 'cannot write', shown);
    }
    return bodyText;
  }

  interface Tx {
    doc: Doc;
    /** the master key; generated on first use when the store holds no file yet */
    key(): Promise<MasterKey>;
  }
  /**
   * Read-modify-write under the per-file queue; writes only when the document changed. `after` gets the
   * document's canonical JSON as it now is (written or unchanged).
   */
  function mutate<T>(
    fn: (tx: Tx) => Promise<T> | T,
    known?: () => { doc: Doc; text: string } | undefined,
    after?: (doc: Doc, text: string) => void,
  ): Promise<T> {
    return serialized(file, async () => {
      // the fresh path: the document this instance just read or wrote (see `memo`); else read the file
      const recalled = known?.();
      const memoKey = recalled ? await masterKey(false) : undefined;
      memo.changed(); // this write (or read-only no-op) invalidates what any instance remembers of the file
      const loaded = recalled && memoKey ? { doc: recalled.doc, key: memoKey } : await load();
      const doc = loaded?.doc ?? emptyDoc(ctx.keyName);
      const getKey = async () => {
        const k = loaded?.key ?? (await masterKey(true));
        if (!k) throw new KeyrotorError('INTERNAL', 'file store: master key unavailable');
        return k;
      };
      // (a remembered document is its canonical JSON already)
      const before = recalled && memoKey ? recalled.text : JSON.stringify(canonical(doc));
      const result = await fn({ doc, key: getKey });
      prune(doc);
      const body = canonical(doc);
      let now = JSON.stringify(body);
      if (now !== before) now = await save(doc, await getKey(), { body, text: now });
      after?.(doc, now);
      return result;
    });
  }

  function metaOf(v: VersionRec): VersionMeta {
    return { ...v.meta, rotationId: v.meta.rotationId ?? v.rotationId };
  }

  function decrypt(doc: Doc, key: MasterKey, v: VersionRec): Secret {
    const plain = unseal(key.enc, v, versionAad(doc.keyName, v.id));
    if (plain === undefined || plain.length === 0)
      throw corrupt(`version ${v.id} could not be decrypted (tampered, moved or wrong master key)`);
    return Secret.of(plain);
  }

  async function readSlot(pick: (d: Doc) => string | undefined, known?: Doc): Promise<StoredVersion | null> {
    const memoKey = known ? await masterKey(false) : undefined;
    const loaded = known && memoKey ? { doc: known, key: memoKey } : await load();
    if (!loaded) return null;
    const id = pick(loaded.doc);
    const v = id === undefined ? undefined : loaded.doc.versions.find((x) => x.id === id);
    if (!v) return null;
    return { versionId: v.id, secret: decrypt(loaded.doc, loaded.key, v), meta: metaOf(v) };
  }

  const byRotation = (d: Doc, rotationId: string) => d.versions.find((v) => v.rotationId === rotationId);
  const requireRotationId = (rotationId: string) => {
    if (typeof rotationId !== 'string' || rotationId.length === 0)
      throw new KeyrotorError('INTERNAL', 'file store: empty rotation id');
  };

  return {
    type: 'file',
    label,

    async check() {
      // writes nothing: the folder (or, before the first write, the nearest folder that exists and
      // would hold it) must be readable and writable; the file is read meanwhile (a failed folder
      // check is reported first)
      const dir = path.dirname(file);
      forget();
      const [folder, read] = await Promise.allSettled([
        nearestExistingDir(dir).then((d) => access(d, constants.R_OK | constants.W_OK | constants.X_OK)),
        load(),
      ]);
      if (folder.status === 'rejected') throw fsError(folder.reason, 'cannot use the folder of', shown);
      if (read.status === 'rejected') throw read.reason;
      const loaded = read.value;
      if (!loaded) await checkMasterKey(keySource);
      // a rotation's preflight reads the current value next and stages after that: keep this read
      else remember(loaded.doc, { readCurrent: true, stage: true });
    },

    async describe() {
      forget();
      const loaded = await load();
      const out: StoreSlots = {};
      if (!loaded) return out;
      const info = (id: string | undefined): SlotInfo | undefined => {
        const v = id === undefined ? undefined : loaded.doc.versions.find((x) => x.id === id);
        return v ? { versionId: v.id, meta: metaOf(v) } : undefined;
      };
      const { current, previous, pending } = loaded.doc.slots;
      if (current) out.current = info(current);
      if (previous) out.previous = info(previous);
      if (pending) out.pending = info(pending.versionId);
      return out;
    },

    readCurrent: () => readSlot((d) => d.slots.current, recall({ step: 'readCurrent' })),
    readPrevious: () => {
      forget();
      return readSlot((d) => d.slots.previous);
    },
    readPending: (rotationId) =>
      readSlot(
        (d) => (d.slots.pending?.rotationId === rotationId ? d.slots.pending.versionId : undefined),
        recall({ step: 'readPending', rotationId }),
      ),

    async stage(req: StageRequest) {
      requireRotationId(req.rotationId);
      return mutate(
        async ({ doc, key }) => {
          const { slots } = doc;
          const existing = byRotation(doc, req.rotationId);
          if (existing) {
            if (!sameValue(decrypt(doc, await key(), existing).reveal(), req.secret.reveal())) {
              throw new KeyrotorError(
                'STORE_CONFLICT',
                `file store ${shown}: rotation ${req.rotationId} already staged a different value (version ${existing.id})`,
                { stage: 'stage', retryable: false, hint: `unstage rotation ${req.rotationId} first` },
              );
            }
            const slotted =
              slots.current === existing.id ||
              slots.previous === existing.id ||
              slots.pending?.versionId === existing.id;
            if (!slotted) {
              // demoted earlier while another version was pending: make it pending again
              if (slots.pending)
                log.warn(
                  { rotationId: req.rotationId, replacedRotationId: slots.pending.rotationId },
                  'stage replaces a pending version left by another rotation',
                );
              slots.pending = { versionId: existing.id, rotationId: req.rotationId };
            }
            return { versionId: existing.id };
          }
          const k = await key();
          const id = `v${doc.nextSeq}-${randomBytes(4).toString('hex')}`;
          doc.nextSeq++;
          const sealed = seal(k.enc, req.secret.reveal(), versionAad(doc.keyName, id));
          doc.versions.push({
            id,
            rotationId: req.rotationId,
            createdAt: new Date(ctx.clock.now()).toISOString(),
            meta: { ...req.meta },
            cipher: 'aes-256-gcm',
            ...sealed,
          });
          if (slots.pending)
            log.warn(
              { rotationId: req.rotationId, replacedRotationId: slots.pending.rotationId },
              'stage replaces a pending version left by another rotation',
            );
          slots.pending = { versionId: id, rotationId: req.rotationId };
          return { versionId: id };
        },
        () => recallText({ step: 'stage' }),
        // verify reads this rotation's pending version next, then promote moves it
        (doc, text) => remember(doc, { readPending: req.rotationId, promote: req.rotationId }, text),
      );
    },

    async promote(rotationId) {
      requireRotationId(rotationId);
      await mutate(
        ({ doc }) => {
          const { slots } = doc;
          const v = byRotation(doc, rotationId);
          if (!v) {
            throw new KeyrotorError(
              'STORE_CONFLICT',
              `file store ${shown}: rotation ${rotationId} staged no version; nothing to promote`,
              {
                stage: 'promote',
                retryable: false,
              },
            );
          }
          if (slots.current === v.id) return; // already promoted
          if (slots.pending?.versionId !== v.id) {
            throw new KeyrotorError(
              'STORE_CONFLICT',
              `file store ${shown}: version ${v.id} of rotation ${rotationId} is no longer pending (${slots.previous === v.id ? 'it is previous' : 'another rotation replaced it'})`,
              { stage: 'promote', retryable: false },
            );
          }
          v.promotion = {
            at: new Date(ctx.clock.now()).toISOString(),
            replacedCurrent: slots.current,
            replacedPrevious: slots.previous,
          };
          if (slots.current) slots.previous = slots.current;
          slots.current = v.id;
          slots.pending = undefined;
        },
        () => recallText({ step: 'promote', rotationId }),
      );
    },

    async demote(rotationId) {
      requireRotationId(rotationId);
      await mutate(({ doc }) => {
        const { slots } = doc;
        const v = byRotation(doc, rotationId);
        if (!v || slots.current !== v.id) return; // never promoted, or already demoted
        const has = (id: string | undefined) => id !== undefined && doc.versions.some((x) => x.id === id);
        const p = v.promotion ?? { at: '', replacedCurrent: slots.previous, replacedPrevious: undefined };
        if (p.replacedCurrent !== undefined && !has(p.replacedCurrent)) {
          throw new KeyrotorError(
            'STORE_CONFLICT',
            `file store ${shown}: cannot demote rotation ${rotationId}: the version it replaced (${p.replacedCurrent}) is gone`,
            {
              stage: 'demote',
              retryable: false,
            },
          );
        }
        slots.current = p.replacedCurrent;
        slots.previous = has(p.replacedPrevious) ? p.replacedPrevious : undefined;
        v.promotion = undefined;
        // back to where stage left it, so unstage can remove it
        if (!slots.pending) slots.pending = { versionId: v.id, rotationId };
      });
    },

    async unstage(rotationId) {
      requireRotationId(rotationId);
      await mutate(({ doc }) => {
        const { slots } = doc;
        const v = byRotation(doc, rotationId);
        if (!v) return; // never staged or already removed
        if (slots.current === v.id || slots.previous === v.id) {
          log.warn({ rotationId, versionId: v.id }, 'unstage left a promoted version alone (demote it first)');
          return;
        }
        if (slots.pending?.versionId === v.id) slots.pending = undefined;
        doc.versions = doc.versions.filter((x) => x.id !== v.id);
      });
    },
  };
}
