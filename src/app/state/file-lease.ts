/**
 * Per-key lease on a lock file `<stateDir>/locks/<key>.lock`, created exclusively (a complete temp
 * file hard-linked to the name; link(2) fails if it exists, like O_EXCL) and holding
 * `{ owner, pid, host, bootId, pidStart, pidNs, acquiredAt, expiresAt }`.
 *
 * Rules that keep two processes from both believing they hold a lease:
 * - A lock is only ever *created* with O_EXCL (never written over) by someone who does not hold it.
 * - An unexpired lock is only rewritten by its owner (rename over it), and only while it has a
 *   safety margin left; nobody else touches an unexpired lock.
 * - An expired (or ours-and-nearly-expired) lock is removed by renaming it to a unique name and then
 *   checking that what was moved is exactly the file that was judged (same inode, same bytes). If a
 *   racer's fresh lock was moved instead, the same inode is linked back (never over an existing
 *   lock). Then the lock is created exclusively: of several racers only one can succeed.
 * - An unexpired lock whose holder is provably dead (a process of this host and boot that no longer
 *   exists, or whose pid now belongs to another process: see holder.ts) counts as expired.
 * - A lock file that cannot be parsed (e.g. written by hand, or created on a file system without hard
 *   links by a writer that died between create and write) counts as held by
 *   'unknown' until its mtime + ttl has passed.
 */
import { closeSync, fstatSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { KeyrotorError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { Lease, LeaseHolder } from '../../core/ports.ts';
import {
  DIR_MODE,
  FILE_MODE,
  displayPath,
  errnoOf,
  isTransient,
  uniqueSibling,
  writeAllSync,
  writeFileAtomic,
} from '../../core/fs.ts';
import { lockContentSchema, type LockContent } from './schema.ts';
import { holderLiveness, selfIdentity } from './holder.ts';

const MAX_ATTEMPTS = 8;
/**
 * Lock files are written atomically (temp file + link or rename) but not fsync'd: a lock only
 * matters among live processes, and a power loss ends them all. What a power loss may leave (no lock,
 * the previous one, or an empty one, which counts as held by 'unknown' until its mtime + ttl) costs
 * at most a wait of one ttl, as a lock of another boot already does (holder.ts: not provably dead).
 * Safety never rests on the lock file surviving: every write of a holder is fenced by the token in
 * `<stateDir>/fences/<key>.json`, which is written durably (file-state-store.ts), so a grant the disk
 * forgot is still fenced out by the next one.
 */
const NOT_SYNCED = { sync: false } as const;
/** rewrite our own lock in place only while this much time is left (clock skew + I/O latency) */
const safetyMs = (ttlMs: number) => Math.min(2_000, ttlMs / 4);

interface Observed {
  raw: string;
  dev: number;
  ino: number;
  mtimeMs: number;
  content: LockContent | undefined;
}

function ioError(e: unknown, what: string, file: string): KeyrotorError {
  return new KeyrotorError('INTERNAL', `lease: ${what} ${displayPath(file)} (${errnoOf(e) ?? 'unknown error'})`, {
    cause: e,
    retryable: isTransient(e),
  });
}

/**
 * Read a lock file and its identity through one descriptor; undefined when absent. Like every file
 * operation here, in direct system calls (a lock file is small and local, and a lease's acquire and
 * release make about twenty of them: each would otherwise be a ~35 µs round trip through libuv's
 * thread pool; see writeAllSync in core/fs.ts).
 */
async function observe(file: string): Promise<Observed | undefined> {
  return Promise.resolve().then(() => observeSync(file));
}
function observeSync(file: string): Observed | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return undefined;
    throw ioError(e, 'cannot open', file);
  }
  try {
    const st = fstatSync(fd);
    const raw = readFileSync(fd, 'utf8');
    let content: LockContent | undefined;
    try {
      const p = lockContentSchema.safeParse(JSON.parse(raw));
      if (p.success) content = p.data;
    } catch {
      content = undefined;
    }
    return { raw, dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs, content };
  } catch (e) {
    throw ioError(e, 'cannot read', file);
  } finally {
    closeSync(fd);
  }
}

/** errors that mean the file system has no hard links (some network/FUSE mounts) */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/**
 * Create the lock with its full content in one step; false when a lock already exists. The text is
 * written to a private temp file first and then hard-linked to the lock name (link(2) fails with
 * EEXIST like O_EXCL), so nobody ever sees an empty or half-written lock. On a file system without
 * hard links it falls back to O_EXCL create + write.
 */
async function createExclusive(file: string, text: string): Promise<boolean> {
  return Promise.resolve().then(() => createExclusiveSync(file, text));
}
function createExclusiveSync(file: string, text: string): boolean {
  const temp = uniqueSibling(file, 'new');
  try {
    writeNew(temp, text);
  } catch (e) {
    throw ioError(e, 'cannot write', temp);
  }
  try {
    linkSync(temp, file);
  } catch (e) {
    const code = errnoOf(e);
    if (code === 'EEXIST') return false;
    if (code && NO_LINKS.has(code)) return createExclusiveNoLinks(file, text);
    throw ioError(e, 'cannot create', file);
  } finally {
    unlinkQuietly(temp);
  }
  return true;
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // gone already
  }
}

/** O_EXCL create of `file` holding `text` (not synced: see NOT_SYNCED); a failed write removes the file it created. */
function writeNew(file: string, text: string): void {
  let fd: number;
  try {
    fd = openSync(file, 'wx', FILE_MODE);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT') throw e;
    mkdirSync(path.dirname(file), { recursive: true, mode: DIR_MODE });
    fd = openSync(file, 'wx', FILE_MODE);
  }
  try {
    writeAllSync(fd, text);
  } catch (e) {
    closeSync(fd);
    unlinkQuietly(file);
    throw e;
  }
  closeSync(fd);
}

/** O_EXCL create, then write: a reader may briefly see an empty lock (it counts as held). */
function createExclusiveNoLinks(file: string, text: string): boolean {
  try {
    writeNew(file, text);
  } catch (e) {
    if (errnoOf(e) === 'EEXIST') return false;
    throw ioError(e, 'cannot create', file);
  }
  return true;
}

/**
 * Remove the lock only if it is still exactly the file observed (compare-and-delete). Returns true
 * when it was removed. Never leaves someone else's lock deleted unless a third racer re-created the
 * lock in the same instant (then the displaced owner finds out on renew).
 */
async function removeIfSame(file: string, seen: Observed): Promise<boolean> {
  return Promise.resolve().then(() => removeIfSameSync(file, seen));
}
function removeIfSameSync(file: string, seen: Observed): boolean {
  const aside = uniqueSibling(file, 'stale');
  try {
    renameSync(file, aside);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return false;
    throw ioError(e, 'cannot move aside', file);
  }
  let moved: Observed | undefined;
  try {
    moved = observeSync(aside);
  } catch {
    moved = undefined;
  }
  if (moved && moved.dev === seen.dev && moved.ino === seen.ino && moved.raw === seen.raw) {
    unlinkQuietly(aside);
    return true;
  }
  // We moved a lock that someone had just (re)created: put the same file (inode) back without
  // overwriting anything, so its owner's view of it stays true.
  if (moved) putBack(aside, file, moved.raw);
  unlinkQuietly(aside);
  return false;
}

function putBack(aside: string, file: string, raw: string): void {
  try {
    linkSync(aside, file); // EEXIST: someone holds the name again; theirs wins, ours is dropped
  } catch (e) {
    const code = errnoOf(e);
    if (code && NO_LINKS.has(code)) {
      try {
        createExclusiveSync(file, raw);
      } catch {
        // best effort, as before
      }
    }
  }
}

function holderOf(o: Observed, ttlMs: number): LeaseHolder {
  return o.content
    ? { owner: o.content.owner, expiresAt: Date.parse(o.content.expiresAt) }
    : { owner: 'unknown', expiresAt: o.mtimeMs + ttlMs };
}

export interface LeaseManager {
  acquire(keyName: string, owner: string, ttlMs: number): Promise<Lease | LeaseHolder>;
  /** the unexpired holder of the key's lease, or null (a claim leaves out what its owner holds) */
  holder(keyName: string, ttlMs: number): Promise<LeaseHolder | null>;
}

export function createLeaseManager(locksDir: string, clock: Clock): LeaseManager {
  const me = selfIdentity();
  const body = (owner: string, acquiredAt: number, expiresAt: number) =>
    JSON.stringify({
      owner,
      pid: me.pid,
      host: me.host,
      ...(me.bootId ? { bootId: me.bootId } : {}),
      ...(me.pidStart ? { pidStart: me.pidStart } : {}),
      ...(me.pidNs ? { pidNs: me.pidNs } : {}),
      acquiredAt: new Date(acquiredAt).toISOString(),
      expiresAt: new Date(expiresAt).toISOString(),
    } satisfies LockContent) + '\n';

  function makeLease(
    keyName: string,
    file: string,
    owner: string,
    ttlMs: number,
    acquiredAt: number,
    expiresAt: number,
  ): Lease {
    let exp = expiresAt;
    const lost = (o: Observed | undefined) =>
      new KeyrotorError(
        'LOCKED',
        `lease on key "${keyName}" is no longer held by ${owner}` +
          (o ? ` (now held by ${holderOf(o, ttlMs).owner})` : ' (the lock file is gone)'),
        { retryable: false, hint: 'another run took over after the lease expired; renew more often than the ttl' },
      );
    return {
      owner,
      token: 0, // the fencing token is the state store's (file-state-store.ts wraps this lease)
      get expiresAt() {
        return exp;
      },
      async renew() {
        const now = clock.now();
        const o = await observe(file);
        if (!o?.content || o.content.owner !== owner) throw lost(o);
        const next = now + ttlMs;
        if (Date.parse(o.content.expiresAt) - now > safetyMs(ttlMs)) {
          // unexpired and ours: nobody else touches it, so replacing it in place is safe
          try {
            await writeFileAtomic(file, body(owner, acquiredAt, next), NOT_SYNCED);
          } catch (e) {
            throw ioError(e, 'cannot renew', file);
          }
          exp = next;
          return;
        }
        // expired or about to: only a compare-and-delete + exclusive create is safe now
        if ((await removeIfSame(file, o)) && (await createExclusive(file, body(owner, acquiredAt, next)))) {
          exp = next;
          return;
        }
        throw lost(await observe(file));
      },
      async release() {
        const o = await observe(file);
        if (!o?.content || o.content.owner !== owner) return; // not ours (any more): leave it alone
        await removeIfSame(file, o);
      },
    };
  }

  return {
    async holder(keyName, ttlMs) {
      const o = await observe(path.join(locksDir, `${keyName}.lock`));
      if (!o) return null;
      const h = holderOf(o, ttlMs);
      return h.expiresAt > clock.now() ? h : null;
    },

    async acquire(keyName, owner, ttlMs) {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0)
        throw new KeyrotorError('INTERNAL', `lease: ttl must be a positive number of ms (got ${ttlMs})`);
      if (!owner) throw new KeyrotorError('INTERNAL', 'lease: owner must not be empty');
      const file = path.join(locksDir, `${keyName}.lock`);
      // the locks folder is created by the first exclusive create that finds it missing (openCreating)
      let last: Observed | undefined;
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const now = clock.now();
        if (await createExclusive(file, body(owner, now, now + ttlMs)))
          return makeLease(keyName, file, owner, ttlMs, now, now + ttlMs);
        const o = await observe(file);
        if (!o) continue; // released in between: try to create again
        last = o;
        const holder = holderOf(o, ttlMs);
        // a holder on this host that provably died (killed, crashed) does not make anyone wait for its ttl
        const expired =
          holder.expiresAt <= now || (o.content !== undefined && holderLiveness(o.content, me) === 'dead');
        if (!expired && o.content && holder.owner === owner) {
          // re-acquire by the same owner: extend in place while safely unexpired
          if (holder.expiresAt - now > safetyMs(ttlMs)) {
            const acquiredAt = Date.parse(o.content.acquiredAt);
            const since = Number.isFinite(acquiredAt) ? acquiredAt : now;
            try {
              await writeFileAtomic(file, body(owner, since, now + ttlMs), NOT_SYNCED);
            } catch (e) {
              throw ioError(e, 'cannot extend', file);
            }
            return makeLease(keyName, file, owner, ttlMs, since, now + ttlMs);
          }
        } else if (!expired) {
          return holder;
        }
        // expired (or ours and nearly expired): compare-and-delete, then race on the exclusive create
        await removeIfSame(file, o);
      }
      // still contended after several rounds: report whoever holds it now
      const o = (await observe(file)) ?? last;
      if (o) return holderOf(o, ttlMs);
      throw new KeyrotorError('LOCKED', `lease on key "${keyName}" is contended; try again`, { retryable: true });
    },
  };
}
