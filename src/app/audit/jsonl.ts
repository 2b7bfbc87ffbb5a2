/**
 * The default audit log: hash-chained JSONL (`<stateDir>/audit/audit.jsonl`, mode 0600) plus a head
 * file (`audit.jsonl.head`) naming the seq and hash of the last record appended.
 *
 * Append (one process at a time: an in-process queue plus a lock `audit.jsonl.lock`, see createLock):
 *   1. read the tail of the log: the last complete line gives `seq` and `prev`;
 *   2. a torn last line (bytes after the last newline: a crash in the middle of an append) is
 *      repaired: if it is a complete, valid record it only gets its newline; otherwise it is cut off
 *      and a `repair` record saying how many bytes were dropped (and their SHA-256) is chained first.
 *      The dropped record was never acknowledged (the head still names the record before it);
 *   3. write the new line(s) in one write to the O_APPEND descriptor, fsync, then replace the head
 *      file atomically.
 * A damaged last complete line is never chained onto: append fails (the rotation goes on; the
 * observer logs it) until an operator has looked (`keyrotor audit verify`) and moved the log aside.
 *
 * Verify walks every line: valid JSON, record shape, `seq` without gaps, `prev` = hash of the record
 * before, `hash` = hash of its content. Then the head: records the head names must exist with that
 * hash (records deleted from the end are caught). A torn last line is a warning, not a failure, as
 * long as the head shows it was never acknowledged. A chain alone cannot stop someone from rewriting
 * the whole file and the head: anchor `headHash` elsewhere (e.g. ship it with your logs) if that
 * matters.
 */
import { hostname } from 'node:os';
import { link, lstat, open, readFile, readlink, rm, stat, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { statSync, symlinkSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { KeyrotorError } from '../../core/errors.ts';
import {
  displayPath,
  ensureDir,
  errnoOf,
  fsyncDir,
  replaceFileSync,
  serialized,
  uniqueSibling,
  readTail,
  writeAllSync,
  writeFileAtomic,
} from '../../core/fs.ts';
import {
  chainRecord,
  isAuditRecord,
  recordHash,
  recordLine,
  sha256Hex,
  type AuditEntry,
  type AuditRecord,
} from './record.ts';
import type { AuditLog, AuditReadResult, VerifyProblem, VerifyReport } from './sink.ts';

export const AUDIT_HEAD_FORMAT = 'keyrotor-audit-head/1';

export interface JsonlAuditOptions {
  /** how long append waits for another process's lock (default 10 s) */
  lockTimeoutMs?: number;
  /** a lock older than this is taken over (default 30 s); a lock of a dead process on this host at once */
  staleLockMs?: number;
  now?: () => number;
  /**
   * Records committed durably elsewhere that may not have reached this log yet (the file state
   * store's per-key journals: see file-state-store.ts), from the sources modified since the given
   * time. Consulted under the lock on this instance's first append or read and after taking over a
   * dead writer's lock: those that continue the chain are appended first.
   */
  committed?: (modifiedSinceMs: number) => Promise<AuditRecord[]>;
}

/** The log as a state store writes it: chained under the lock, made durable by the store's own write. */
export interface CommittingAuditLog extends AuditLog {
  /**
   * Chain `entries` (under the log's lock), hand the records to `commit` (which makes them durable,
   * e.g. in the same fsync'd append as a snapshot), then add them to this log without an fsync of
   * its own. `commit` failing leaves the log untouched.
   */
  appendCommitted(entries: readonly AuditEntry[], commit: (records: AuditRecord[]) => Promise<void>): Promise<void>;
  /** make what this log holds durable (before a store drops its own copies) */
  sync(): Promise<void>;
  /**
   * Keep the log's descriptor open between appends (and the last record in memory, checked against
   * the file by one stat before each append) until the returned function is called (e.g. while a
   * state store holds a key's lease). Idempotent.
   */
  keepOpen(): () => Promise<void>;
}

interface Head {
  format: string;
  seq: number;
  hash: string;
  time: string;
}

function parseLine(text: string): AuditRecord | null {
  try {
    const x: unknown = JSON.parse(text);
    return isAuditRecord(x) ? x : null;
  } catch {
    return null;
  }
}

const hashOk = (r: AuditRecord) => recordHash(r) === r.hash;
/** a file's identity: device, inode and birth time (a file replaced by another reusing the inode differs) */
const idOf = (st: { dev: number; ino: number; birthtimeMs: number }) => `${st.dev}:${st.ino}:${st.birthtimeMs}`;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoOf(e) === 'EPERM';
  }
}

/** the holder a lock names: `<pid>@<host>`, or the JSON `{ pid, host }` of earlier versions */
function lockHolder(text: string): { pid: number; host: string } | undefined {
  const m = /^(\d+)@(.+)$/.exec(text);
  if (m) return { pid: Number(m[1]), host: m[2]! };
  try {
    const h = JSON.parse(text) as { pid?: unknown; host?: unknown };
    if (typeof h.pid === 'number' && typeof h.host === 'string') return { pid: h.pid, host: h.host };
  } catch {
    // garbage
  }
  return undefined;
}

export function createJsonlAuditLog(file: string, opts: JsonlAuditOptions = {}): CommittingAuditLog {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const headFile = `${abs}.head`;
  const lockFile = `${abs}.lock`;
  const shown = displayPath(abs);
  const lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  const staleLockMs = opts.staleLockMs ?? 30_000;
  const now = opts.now ?? Date.now;
  const host = hostname(); // once: a system call (uname) otherwise on every append

  async function isStale(): Promise<boolean> {
    try {
      // a symbolic link whose target is the holder (see createLock), or a regular file holding it
      const st = await lstat(lockFile);
      const text = st.isSymbolicLink() ? await readlink(lockFile) : await readFile(lockFile, 'utf8');
      const h = lockHolder(text);
      if (h && h.host === host && !pidAlive(h.pid)) return true;
      // otherwise (another host, being written right now, or garbage): by its age
      return Date.now() - st.mtimeMs > staleLockMs;
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return false; // released meanwhile: just retry
      throw e;
    }
  }

  /**
   * Create the lock with its content in one step, so a crash can never leave an empty lock that
   * nobody can attribute: a symbolic link whose target text is the holder (symlink(2) is one atomic,
   * exclusive system call: EEXIST when taken). Where symbolic links are not supported: a temp file
   * hard-linked into place (EEXIST when taken).
   */
  async function createLock(): Promise<void> {
    // `<pid>@<host>`: short enough (under 60 bytes with a host name of up to ~50) for ext4 to keep the
    // link's target in its inode, with no data block to allocate: about a third of the cost
    const holder = `${process.pid}@${host}`;
    try {
      // one system call, made directly (see writeAllSync): this runs on every append
      symlinkSync(holder, lockFile);
      return;
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'ENOENT') {
        await ensureDir(dir);
        return createLock();
      }
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
    }
    const tmp = uniqueSibling(lockFile, 'tmp');
    await writeFile(tmp, holder, {
      mode: 0o600,
      flag: 'wx',
    });
    try {
      await link(tmp, lockFile);
    } catch (e) {
      const code = errnoOf(e);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw e;
      // no hard links on this file system: exclusive create (a crash right after it leaves an empty
      // lock, taken over after staleLockMs)
      const fh = await open(lockFile, 'wx', 0o600);
      try {
        await fh.writeFile(await readFile(tmp, 'utf8'));
      } finally {
        await fh.close();
      }
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** recover committed records on this instance's first append and after a dead writer's lock */
  let recoverNext = opts.committed !== undefined;
  async function withLock<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + lockTimeoutMs;
    for (;;) {
      try {
        await createLock();
        break;
      } catch (e) {
        if (errnoOf(e) !== 'EEXIST') throw unavailable('cannot lock', e);
        if (await isStale()) {
          await unlink(lockFile).catch((e: unknown) => {
            if (errnoOf(e) !== 'ENOENT') throw e;
          });
          // its holder died, maybe between committing records and appending them here
          if (opts.committed) recoverNext = true;
          continue;
        }
        if (Date.now() > deadline) {
          throw new KeyrotorError('LOCKED', `audit log ${shown} is locked by another process (${lockFile})`, {
            retryable: true,
            hint: `if no keyrotor process is running, remove ${lockFile}`,
          });
        }
        await new Promise((r) => setTimeout(r, 5 + Math.floor(Math.random() * 20)));
      }
    }
    try {
      return await fn();
    } finally {
      try {
        unlinkSync(lockFile); // unlink: rm would lstat first
      } catch {
        // gone already (taken over as stale): nothing to release
      }
    }
  }

  function unavailable(what: string, e: unknown): KeyrotorError {
    return new KeyrotorError(
      'STATE_UNREADABLE',
      `audit log ${shown}: ${what} (${errnoOf(e) ?? (e instanceof Error ? e.message : 'error')})`,
      { cause: e, retryable: true },
    );
  }

  interface Prepared {
    fh: FileHandle;
    /** the log's device, inode and birth time */
    id: string;
    /** its size before this append (after a torn tail was cut off) */
    size: number;
    /** the last record of the log (after a torn tail was dealt with) */
    last: AuditRecord | null;
    /** '\n' when the last record only lacked its newline */
    prefix: string;
    /** a repair record to chain first (a torn tail was cut off) */
    repair: AuditRecord[];
  }

  /** open the log and read its tail: the record to chain onto, a torn last line completed or cut off */
  async function prepare(fh: FileHandle): Promise<Prepared> {
    const st = await fh.stat();
    let size = st.size;
    const tail = await readTail(fh, size);
    let last: AuditRecord | null = null;
    if (tail.lastLine !== null) {
      last = parseLine(tail.lastLine);
      if (!last || !hashOk(last)) {
        throw new KeyrotorError(
          'STATE_UNREADABLE',
          `audit log ${shown}: its last record is damaged; new records are not chained onto it`,
          {
            hint: 'run `keyrotor audit verify`, keep the log as evidence and move it aside to start a new one',
          },
        );
      }
    }
    let prefix = '';
    const repair: AuditRecord[] = [];
    if (tail.fragment.length) {
      const frag = parseLine(tail.fragment.toString('utf8'));
      if (frag && hashOk(frag) && frag.seq === (last?.seq ?? 0) + 1 && frag.prev === (last?.hash ?? frag.prev)) {
        prefix = '\n'; // a complete record that only lost its newline
        last = frag;
      } else {
        await fh.truncate(tail.completeEnd);
        size = tail.completeEnd;
        const r = chainRecord(
          {
            type: 'repair',
            time: new Date(now()).toISOString(),
            droppedBytes: tail.fragment.length,
            droppedSha256: sha256Hex(tail.fragment),
          },
          last,
        );
        repair.push(r);
        last = r;
      }
    }
    return { fh, id: idOf(st), size, last, prefix, repair };
  }

  async function writeHead(rec: AuditRecord, sync: boolean): Promise<void> {
    const head: Head = { format: AUDIT_HEAD_FORMAT, seq: rec.seq, hash: rec.hash, time: rec.time };
    const text = JSON.stringify(head) + '\n';
    // not durable: made in direct system calls (this runs on every committed append)
    if (!sync) replaceFileSync(headFile, text);
    else await writeFileAtomic(headFile, text);
  }

  /** the log opened for appending and reading (created 0600 when missing) */
  async function openLog(): Promise<FileHandle> {
    try {
      return await open(abs, 'a+', 0o600);
    } catch (e) {
      throw unavailable('cannot open', e);
    }
  }

  async function opened<T>(fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    const fh = await openLog();
    try {
      return await fn(fh);
    } finally {
      await fh.close();
    }
  }

  /**
   * Under the lock: append the committed records (opts.committed) that continue this log's chain,
   * durably. A crash between a store's commit and its append here left them out; a later writer
   * would otherwise chain other records onto the same seq.
   */
  async function recoverLocked(): Promise<void> {
    if (!recoverNext || !opts.committed) return;
    let st: { size: number; mtimeMs: number };
    try {
      st = await stat(abs);
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT') throw unavailable('cannot read', e);
      st = { size: 0, mtimeMs: 0 };
    }
    // an empty log is a new one (e.g. the old one moved aside): nothing older is carried into it.
    // Committed records that may be missing were written after the log's last write reached the disk:
    // only sources modified since then (less a margin for coarse timestamps) need looking at.
    const candidates = st.size > 0 ? await opts.committed(st.mtimeMs - 2_000) : [];
    if (!candidates.length) {
      recoverNext = false;
      return;
    }
    await opened(async (fh) => {
      const size = (await fh.stat()).size;
      const tail = await readTail(fh, size);
      // an empty log is a new one (e.g. the old one moved aside): nothing older is carried into it
      if (tail.lastLine === null) return;
      let last = parseLine(tail.lastLine);
      if (!last || !hashOk(last)) return; // damaged: the next append says so
      const bySeq = new Map(candidates.map((r) => [r.seq, r]));
      const found: AuditRecord[] = [];
      for (;;) {
        const next = bySeq.get(last.seq + 1);
        if (!next || !hashOk(next) || next.prev !== last.hash) break;
        found.push(next);
        last = next;
      }
      if (found.length) {
        // a torn line left by the crash is superseded by the committed records
        if (tail.fragment.length) await fh.truncate(tail.completeEnd);
        await fh.write(found.map(recordLine).join(''));
        await fh.sync();
        await writeHead(found[found.length - 1]!, true);
      }
    });
    recoverNext = false;
  }

  /** before reading: committed records a crash kept from this log are added first (see recoverLocked) */
  async function recoverCommitted(): Promise<void> {
    if (recoverNext) await serialized(`audit:${abs}`, () => withLock(recoverLocked));
  }

  /**
   * The log as this instance's last append left it, with its descriptor still open: kept only while
   * some caller holds `keepOpen()` (the file state store, while it holds a key's lease). When a stat
   * shows the log still has that identity and size, the next append needs no open and no tail read.
   */
  let kept: { fh: FileHandle; id: string; size: number; last: AuditRecord } | undefined;
  let keepers = 0;
  async function dropKept(): Promise<void> {
    const k = kept;
    kept = undefined;
    await k?.fh.close().catch(() => undefined);
  }

  /**
   * A committed append made while the log is kept open does not replace the head file: replacing a
   * file by rename makes ext4 flush the new file's data (auto_da_alloc), which cost about as much as
   * the journal's fsync on every transition. The head is brought up to date when a keeper lets go
   * (`keepOpen()`'s release: a key's lease released) instead. Until then it may name an earlier
   * record, which verify accepts (records after the head are fine; records the head names must exist):
   * only the end-of-log truncation check lags behind, by the records of the rotations in flight.
   */
  let headOwed = false;
  async function settleHeadLocked(): Promise<void> {
    if (!headOwed) return;
    headOwed = false;
    if (kept && sameAsKept(kept)) {
      await writeHead(kept.last, false);
      return;
    }
    // the log changed since (another writer appended; it owes or wrote the head itself), or the
    // descriptor was dropped: name what the log ends with now
    await opened(async (fh) => {
      const tail = await readTail(fh, (await fh.stat()).size);
      const last = tail.lastLine === null ? null : parseLine(tail.lastLine);
      if (last && hashOk(last)) await writeHead(last, false);
    });
  }
  function sameAsKept(k: { id: string; size: number }): boolean {
    let st: { dev: number; ino: number; birthtimeMs: number; size: number };
    try {
      st = statSync(abs); // one direct system call (see writeAllSync)
    } catch {
      return false;
    }
    return idOf(st) === k.id && st.size === k.size;
  }

  /** open the log for an append: the kept descriptor when the log is unchanged since, else `prepare` */
  async function openForAppend(): Promise<Prepared> {
    if (kept) {
      if (sameAsKept(kept))
        return { fh: kept.fh, id: kept.id, size: kept.size, last: kept.last, prefix: '', repair: [] };
      await dropKept();
    }
    const fh = await openLog();
    try {
      return await prepare(fh);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  /** after an append of `bytes` ending with `last`: keep the descriptor (when asked to) or close it */
  async function appended(p: Prepared, bytes: number, last: AuditRecord): Promise<void> {
    if (keepers > 0) kept = { fh: p.fh, id: p.id, size: p.size + bytes, last };
    else {
      if (kept?.fh === p.fh) kept = undefined;
      await p.fh.close();
    }
  }

  async function failed(p: Prepared, e: unknown): Promise<never> {
    if (kept?.fh === p.fh) kept = undefined;
    await p.fh.close().catch(() => undefined);
    throw e;
  }

  async function appendLocked(entry: AuditEntry): Promise<AuditRecord> {
    await recoverLocked();
    const p = await openForAppend();
    try {
      const rec = chainRecord(entry, p.last);
      const out = [...p.repair, rec];
      const text = p.prefix + out.map(recordLine).join('');
      await p.fh.write(text);
      await p.fh.sync();
      if (p.size === 0) await fsyncDir(dir);
      await writeHead(rec, true);
      headOwed = false; // the head names the newest record
      await appended(p, Buffer.byteLength(text), rec);
      return rec;
    } catch (e) {
      return failed(p, e);
    }
  }

  async function appendCommittedLocked(
    entries: readonly AuditEntry[],
    commit: (records: AuditRecord[]) => Promise<void>,
  ): Promise<void> {
    await recoverLocked();
    const p = await openForAppend();
    try {
      const out = [...p.repair];
      let last = p.last;
      for (const e of entries) {
        last = chainRecord(e, last);
        out.push(last);
      }
      // the durable write (the store's); a failure leaves this log as it was (a torn tail stays cut
      // off: the next append records the repair again)
      await commit(out);
      const text = p.prefix + out.map(recordLine).join('');
      // not fsync'd (the commit was): one direct write to the O_APPEND descriptor
      const bytes = writeAllSync(p.fh.fd, text);
      if (keepers > 0) headOwed = true;
      else await writeHead(last!, false);
      await appended(p, bytes, last!);
    } catch (e) {
      await failed(p, e);
    }
  }

  async function readHead(): Promise<Head | null | 'bad'> {
    try {
      const h = JSON.parse(await readFile(headFile, 'utf8')) as Partial<Head>;
      if (h.format !== AUDIT_HEAD_FORMAT || typeof h.seq !== 'number' || typeof h.hash !== 'string') return 'bad';
      return h as Head;
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return null;
      return 'bad';
    }
  }

  async function readText(): Promise<string | null> {
    try {
      return await readFile(abs, 'utf8');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return null;
      throw unavailable('cannot read', e);
    }
  }

  return {
    label: shown,
    file: abs,

    async importChain(records) {
      if (records.length === 0) return;
      await ensureDir(dir);
      await serialized(abs, async () => {
        let size = 0;
        try {
          size = (await stat(abs)).size;
        } catch (e) {
          if (errnoOf(e) !== 'ENOENT') throw e;
        }
        if (size > 0)
          throw new KeyrotorError(
            'USAGE',
            `audit log ${shown} is not empty; the imported audit chain was not written`,
            {
              hint: 'import into a fresh state (move the existing audit log aside first)',
            },
          );
        const last = records[records.length - 1]!;
        await writeFileAtomic(abs, records.map(recordLine).join(''));
        const head: Head = { format: AUDIT_HEAD_FORMAT, seq: last.seq, hash: last.hash, time: last.time };
        await writeFileAtomic(headFile, JSON.stringify(head) + '\n');
      });
    },

    append(entry) {
      return serialized(`audit:${abs}`, () => withLock(() => appendLocked(entry)));
    },

    trail: `file:${abs}`,

    appendCommitted(entries, commit) {
      return serialized(`audit:${abs}`, () => withLock(() => appendCommittedLocked(entries, commit)));
    },

    keepOpen() {
      keepers++;
      let done = false;
      return () => {
        if (done) return Promise.resolve();
        done = true;
        keepers--;
        return serialized(`audit:${abs}`, async () => {
          // best effort: a head left behind is brought up to date by the next settle or append
          if (headOwed)
            await withLock(settleHeadLocked).catch(() => {
              headOwed = true;
            });
          if (keepers === 0) await dropKept();
        });
      };
    },

    async sync() {
      await serialized(`audit:${abs}`, async () => {
        try {
          const fh = await open(abs, 'r');
          try {
            await fh.sync();
          } finally {
            await fh.close();
          }
        } catch (e) {
          if (errnoOf(e) !== 'ENOENT') throw unavailable('cannot sync', e);
        }
      });
    },

    async read(): Promise<AuditReadResult> {
      await recoverCommitted();
      const text = await readText();
      if (text === null) return { records: [], warnings: [] };
      const lines = text.split('\n');
      const torn = lines.pop() ?? '';
      const records: AuditRecord[] = [];
      const warnings: string[] = [];
      lines.forEach((l, i) => {
        const r = parseLine(l);
        if (r) records.push(r);
        else warnings.push(`line ${i + 1} is not an audit record (skipped); run \`keyrotor audit verify\``);
      });
      if (torn) {
        const r = parseLine(torn);
        if (r) records.push(r);
        else warnings.push(`torn last line (${Buffer.byteLength(torn)} bytes) ignored`);
      }
      return { records, warnings };
    },

    async verify(): Promise<VerifyReport> {
      const report: VerifyReport = { file: abs, ok: true, records: 0, headHash: null, headSeq: null, warnings: [] };
      await recoverCommitted();
      const text = await readText();
      const head = await readHead();
      if (text === null) {
        if (head && head !== 'bad') {
          report.ok = false;
          report.broken = {
            line: 1,
            seq: head.seq,
            reason: `the log is missing but its head names record #${head.seq}: the log was deleted`,
          };
        }
        return report;
      }
      const lines = text.split('\n');
      const fragment = lines.pop() ?? '';
      let prev: AuditRecord | null = null;
      const bySeq = new Map<number, AuditRecord>();
      const fail = (p: VerifyProblem): VerifyReport => {
        report.ok = false;
        report.broken = p;
        return report;
      };
      const where = (r: AuditRecord | null, line: number) => ({
        line,
        seq: r?.seq ?? null,
        ...(r?.key ? { key: r.key } : {}),
        ...(r?.rotationId ? { rotationId: r.rotationId } : {}),
        ...(r?.state ? { state: r.state } : {}),
      });
      const check = (r: AuditRecord | null, line: number): string | null => {
        if (!r) return 'is not a valid audit record (not JSON, or fields missing)';
        if (!hashOk(r)) return 'does not match its hash: the record was edited';
        const expected = (prev?.seq ?? 0) + 1;
        if (r.seq !== expected) {
          return r.seq > expected
            ? `has seq ${r.seq} where ${expected} was expected: record(s) #${expected}${r.seq - 1 > expected ? `..#${r.seq - 1}` : ''} before it were deleted`
            : `has seq ${r.seq} where ${expected} was expected: records were inserted, duplicated or reordered`;
        }
        if (r.prev !== (prev?.hash ?? r.prev) || (prev === null && !/^0{64}$/.test(r.prev))) {
          return line === 1
            ? 'does not start the chain: records before it were deleted'
            : 'does not chain to the record before it: that record was replaced';
        }
        void line;
        return null;
      };
      for (const [i, l] of lines.entries()) {
        const r = parseLine(l);
        const why = check(r, i + 1);
        if (why) return fail({ ...where(r ?? looseParse(l), i + 1), reason: `record ${why}` });
        bySeq.set(r!.seq, r!);
        prev = r;
      }
      let tornNote: string | null = null;
      if (fragment) {
        const r = parseLine(fragment);
        if (r && check(r, lines.length + 1) === null) {
          bySeq.set(r.seq, r);
          prev = r;
          report.warnings.push(
            `the last record (#${r.seq}) lacks its newline (a crash right after writing it); the next append completes it`,
          );
        } else {
          tornNote = `torn last line ${lines.length + 1} (${Buffer.byteLength(fragment)} bytes, a crash in the middle of an append) ignored; the next append cuts it off and records a repair`;
        }
      }
      report.records = bySeq.size;
      report.headSeq = prev?.seq ?? null;
      report.headHash = prev?.hash ?? null;
      // the head: every record it names must still be there, unchanged
      if (head === null) {
        if (report.records > 0)
          report.warnings.push(
            `no head file ${displayPath(headFile)}: records deleted from the end could not be detected`,
          );
      } else if (head === 'bad') {
        return fail({ line: lines.length, seq: null, reason: `the head file ${displayPath(headFile)} is damaged` });
      } else {
        const named = bySeq.get(head.seq);
        if (!named) {
          const lastSeq = prev?.seq ?? 0;
          if (head.seq > lastSeq) {
            return fail({
              line: lines.length + 1,
              seq: lastSeq + 1,
              reason: `record #${lastSeq + 1}${head.seq > lastSeq + 1 ? `..#${head.seq}` : ''} ${head.seq > lastSeq + 1 ? 'were' : 'was'} appended (the head names #${head.seq}) but ${head.seq > lastSeq + 1 ? 'are' : 'is'} gone: records were deleted from the end of the log`,
            });
          }
        } else if (named.hash !== head.hash) {
          return fail({
            ...where(named, lines.findIndex((l) => parseLine(l)?.seq === named.seq) + 1),
            reason: `record does not match the head file: the log was rewritten`,
          });
        }
      }
      if (tornNote) report.warnings.push(tornNote);
      return report;
    },
  };
}

/** best effort context for a record that fails the shape check */
function looseParse(line: string): AuditRecord | null {
  try {
    const x = JSON.parse(line) as Partial<AuditRecord>;
    if (!x || typeof x !== 'object') return null;
    return { ...x, seq: typeof x.seq === 'number' ? x.seq : (null as unknown as number) } as AuditRecord;
  } catch {
    return null;
  }
}
