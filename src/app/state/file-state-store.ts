/**
 * The default StateStore: one JSON file per key, `<stateDir>/state/<key>.json`, holding
 * `{ format: 'keyrotor-state/1', record: KeyRecord }` (references only, never secret values), written
 * atomically (temp + fsync + rename + fsync dir; 0600 files, 0700 folders), plus the per-key lease
 * in `<stateDir>/locks/` (see file-lease.ts). Fencing: every grant to a new owner bumps the key's
 * counter in `<stateDir>/fences/<key>.json` (written by the new holder only; a re-acquire by the same
 * owner extends its lease and keeps the token); a write with a fence first checks
 * that counter still equals its token (under the in-process queue; across processes the window
 * between that check and the rename is the file backend's limit — use postgres or dynamodb for fleets).
 *
 * Damage is never reset silently: torn JSON, an unknown format or a record that fails validation is
 * STATE_UNREADABLE naming the file (and the rotation that was in progress, when that much is
 * readable); a newer format is STATE_VERSION.
 *
 * Webhook outbox: one small file per pending notification, `<stateDir>/outbox/<id>.json`
 * (`{ format: 'keyrotor-outbox/1', entry }`, atomic writes); delivered or given-up entries are deleted.
 * A damaged entry file is skipped, never deleted.
 */
import { readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { systemClock, type Clock } from '../../core/clock.ts';
import { KeyrotorError } from '../../core/errors.ts';
import type {
  ClaimCandidate,
  Fence,
  KeyRecord,
  Lease,
  OutboxEntry,
  RecordBatch,
  StateStore,
} from '../../core/ports.ts';
import { isLease } from '../../core/ports.ts';
import { displayPath, errnoOf, isTransient, serialized, writeFileAtomic } from '../../core/fs.ts';
import { createLeaseManager } from './file-lease.ts';
import { claimByAcquire, readEach } from './claim.ts';
import { STATE_FORMAT, STATE_FORMAT_RE, keyRecordSchema } from './schema.ts';
import { leaseLost, recordWriters } from './record.ts';
import { OUTBOX_FORMAT, byAge, checkOutboxEntry, checkOutboxId, parseOutboxEntry } from './outbox.ts';

/** Key names become file names: no separators, no dot-dot, no hidden files. */
const SAFE_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const OUTBOX_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

export interface FileStateStoreOptions {
  clock?: Clock;
}

export function createFileStateStore(stateDir: string, opts: FileStateStoreOptions = {}): StateStore {
  const clock = opts.clock ?? systemClock;
  const root = path.resolve(stateDir);
  const stateFolder = path.join(root, 'state');
  const leases = createLeaseManager(path.join(root, 'locks'), clock);

  function fileOf(keyName: string): string {
    if (!SAFE_KEY_NAME.test(keyName) || keyName.includes('..')) {
      throw new KeyrotorError(
        'UNKNOWN_KEY',
        `invalid key name ${JSON.stringify(keyName)}: it cannot be used as a file name`,
      );
    }
    return path.join(stateFolder, `${keyName}.json`);
  }

  const unreadable = (file: string, why: string, rotationId?: string, cause?: unknown) =>
    new KeyrotorError(
      'STATE_UNREADABLE',
      `state file ${displayPath(file)} is unreadable: ${why}` +
        (rotationId ? ` (rotation ${rotationId} was in progress)` : ''),
      {
        cause,
        hint:
          'keyrotor never resets state by itself: restore the file from a backup, or move it aside after checking ' +
          (rotationId
            ? `what rotation ${rotationId} left behind (new keys at the issuer, pending store versions)`
            : 'that no rotation is half done'),
      },
    );

  /** the in-progress rotation id, if that much of a damaged record can be read */
  function salvageRotationId(obj: unknown): string | undefined {
    const id = (obj as { record?: { active?: { rotationId?: unknown } } } | null)?.record?.active?.rotationId;
    return typeof id === 'string' && /^[A-Za-z0-9._:-]{1,100}$/.test(id) ? id : undefined;
  }

  async function read(keyName: string): Promise<KeyRecord | null> {
    const file = fileOf(keyName);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return null;
      throw new KeyrotorError(
        'STATE_UNREADABLE',
        `cannot read state file ${displayPath(file)} (${errnoOf(e) ?? 'unknown error'})`,
        {
          cause: e,
          retryable: isTransient(e),
        },
      );
    }
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      throw unreadable(file, 'not valid JSON (a torn or damaged write?)', undefined, e);
    }
    const rotationId = salvageRotationId(obj);
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
      throw unreadable(file, 'not a keyrotor state file');
    const format = (obj as { format?: unknown }).format;
    const m = STATE_FORMAT_RE.exec(typeof format === 'string' ? format : '');
    if (m && Number(m[1]) > 1) {
      throw new KeyrotorError(
        'STATE_VERSION',
        `state file ${displayPath(file)} was written by a newer keyrotor (format ${m[0]}; this version reads ${STATE_FORMAT})` +
          (rotationId ? ` (rotation ${rotationId} was in progress)` : ''),
        { hint: 'upgrade keyrotor to the version that wrote it' },
      );
    }
    if (format !== STATE_FORMAT) throw unreadable(file, `unknown format (expected ${STATE_FORMAT})`, rotationId);
    const parsed = keyRecordSchema.safeParse((obj as { record?: unknown }).record);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue ? ['record', ...issue.path.map(String)].join('.') : 'record';
      throw unreadable(file, `invalid record (${where}: ${issue?.message ?? 'invalid'})`, rotationId);
    }
    if (parsed.data.keyName !== keyName)
      throw unreadable(file, `it holds key "${parsed.data.keyName}", not "${keyName}"`, rotationId);
    return parsed.data;
  }

  async function write(keyName: string, record: KeyRecord): Promise<void> {
    const file = fileOf(keyName);
    // never write what we could not read back
    const check = keyRecordSchema.safeParse(JSON.parse(JSON.stringify(record)));
    if (!check.success) {
      const issue = check.error.issues[0];
      throw new KeyrotorError(
        'INTERNAL',
        `refusing to write an invalid state record for key "${keyName}" (${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'})`,
      );
    }
    try {
      await writeFileAtomic(file, JSON.stringify({ format: STATE_FORMAT, record }, null, 2) + '\n');
    } catch (e) {
      throw new KeyrotorError(
        'INTERNAL',
        `cannot write state file ${displayPath(file)} (${errnoOf(e) ?? 'unknown error'})`,
        {
          cause: e,
          retryable: isTransient(e),
        },
      );
    }
  }

  const fenceFile = (keyName: string) => path.join(root, 'fences', `${keyName}.json`);
  async function readFence(keyName: string): Promise<{ token: number; owner: string }> {
    try {
      const o = JSON.parse(await readFile(fenceFile(keyName), 'utf8')) as { token?: unknown; owner?: unknown };
      const n = Number(o.token);
      return { token: Number.isSafeInteger(n) && n >= 0 ? n : 0, owner: typeof o.owner === 'string' ? o.owner : '' };
    } catch (e) {
      if (errnoOf(e) === 'ENOENT' || e instanceof SyntaxError) return { token: 0, owner: '' };
      throw new KeyrotorError(
        'STATE_UNREADABLE',
        `cannot read ${displayPath(fenceFile(keyName))} (${errnoOf(e) ?? e})`,
        {
          cause: e,
          retryable: isTransient(e),
        },
      );
    }
  }

  const empty = (keyName: string): KeyRecord => ({
    keyName,
    active: null,
    last: null,
    lastRotatedAt: null,
    currentKeyId: null,
    providerState: {},
  });

  /** read-modify-write under the per-file queue (across processes the lease guards) */
  function update(keyName: string, fn: (r: KeyRecord) => void, fence?: Fence): Promise<void> {
    return serialized(fileOf(keyName), async () => {
      if (fence) {
        const current = (await readFence(keyName)).token;
        if (current !== fence.token) throw leaseLost(keyName, fence, `the lease was granted again (token ${current})`);
      }
      const r = (await read(keyName)) ?? empty(keyName);
      fn(r);
      await write(keyName, r);
    });
  }

  const outboxFolder = path.join(root, 'outbox');
  const outboxFile = (id: string) => {
    checkOutboxId(id);
    return path.join(outboxFolder, `${id}.json`);
  };
  const outboxError = (doing: string, e: unknown) =>
    new KeyrotorError(
      'INTERNAL',
      `cannot ${doing} in ${displayPath(outboxFolder)} (${errnoOf(e) ?? 'unknown error'})`,
      {
        cause: e,
        retryable: isTransient(e),
      },
    );
  async function readOutbox(id: string): Promise<OutboxEntry | undefined> {
    try {
      const o = JSON.parse(await readFile(outboxFile(id), 'utf8')) as { format?: unknown; entry?: unknown };
      return o.format === OUTBOX_FORMAT ? parseOutboxEntry(o.entry) : undefined;
    } catch (e) {
      if (errnoOf(e) === 'ENOENT' || e instanceof SyntaxError) return undefined;
      throw outboxError(`read outbox entry ${id}`, e);
    }
  }
  const writeOutbox = async (e: OutboxEntry) => {
    checkOutboxEntry(e);
    try {
      await writeFileAtomic(outboxFile(e.id), JSON.stringify({ format: OUTBOX_FORMAT, entry: e }) + '\n');
    } catch (err) {
      throw outboxError(`write outbox entry ${e.id}`, err);
    }
  };

  return {
    label: `file:${displayPath(root)}`,
    read,

    ...recordWriters(update, clock),

    async acquire(keyName: string, owner: string, ttlMs: number) {
      fileOf(keyName); // validates the name
      const got = await leases.acquire(keyName, owner, ttlMs);
      if (!isLease(got)) return got;
      // a grant to a new owner bumps the fencing counter (only the holder writes it)
      let token: number;
      try {
        token = await serialized(fenceFile(keyName), async () => {
          const seen = await readFence(keyName);
          if (seen.owner === owner && seen.token > 0) return seen.token;
          const next = seen.token + 1;
          await writeFileAtomic(fenceFile(keyName), JSON.stringify({ token: next, owner }) + '\n');
          return next;
        });
      } catch (e) {
        await got.release().catch(() => undefined);
        throw e;
      }
      const lease: Lease = {
        owner: got.owner,
        get expiresAt() {
          return got.expiresAt;
        },
        token,
        renew: () => got.renew(),
        release: () => got.release(),
      };
      return lease;
    },

    /** local files: read one by one */
    async readMany(keyNames: string[]): Promise<RecordBatch> {
      return readEach({ read }, keyNames, clock.now());
    },

    /** the file backend's claim is its per-key acquire, in due order (never a lease its owner holds) */
    async claim(candidates: ClaimCandidate[], owner: string, limit: number) {
      const acquire = async (k: string, o: string, ttl: number) => {
        const h = await leases.holder(k, ttl);
        return h?.owner === o ? h : this.acquire(k, o, ttl);
      };
      return claimByAcquire({ acquire }, candidates, owner, limit);
    },

    async outboxAdd(entry: OutboxEntry) {
      await serialized(outboxFile(entry.id), () => writeOutbox(entry));
    },

    async outboxPending(limit?: number) {
      let names: string[];
      try {
        names = await readdir(outboxFolder);
      } catch (e) {
        if (errnoOf(e) === 'ENOENT') return [];
        throw outboxError('list the outbox', e);
      }
      const ids = names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length));
      const out: OutboxEntry[] = [];
      for (const id of ids) {
        if (!OUTBOX_NAME.test(id)) continue;
        const e = await readOutbox(id);
        if (e && e.id === id) out.push(e);
      }
      out.sort(byAge);
      return limit === undefined ? out : out.slice(0, limit);
    },

    async outboxDone(id: string) {
      await serialized(outboxFile(id), async () => {
        try {
          await unlink(outboxFile(id));
        } catch (e) {
          if (errnoOf(e) !== 'ENOENT') throw outboxError(`remove outbox entry ${id}`, e);
        }
      });
    },

    async outboxAttempted(id: string, n: number) {
      await serialized(outboxFile(id), async () => {
        const e = await readOutbox(id);
        if (e) await writeOutbox({ ...e, attempts: e.attempts + n });
      });
    },

    async keys() {
      let names: string[];
      try {
        names = await readdir(stateFolder);
      } catch (e) {
        if (errnoOf(e) === 'ENOENT') return [];
        throw new KeyrotorError(
          'STATE_UNREADABLE',
          `cannot list ${displayPath(stateFolder)} (${errnoOf(e) ?? 'unknown error'})`,
          { cause: e },
        );
      }
      return names
        .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
        .map((n) => n.slice(0, -'.json'.length))
        .filter((k) => SAFE_KEY_NAME.test(k))
        .sort();
    },
  };
}
