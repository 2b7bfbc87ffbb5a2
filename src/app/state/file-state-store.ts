/**
 * The default StateStore: per key an append-only journal `<stateDir>/state/<key>.journal` (0600 files,
 * 0700 folders): every write is ONE fsync'd line `{ format: 'keyrotor-journal/1', record: KeyRecord,
 * audit?: AuditRecord[] }` whose record is the whole new record (references only, never secret values)
 * and whose `audit` holds the transition's audit records, chained under the audit log's lock and
 * appended to the audit log (`audit.jsonl`) right after without an fsync of their own; the log restores
 * from the journals what a crash kept from it (audit/jsonl.ts, `committed`). Reading takes the
 * journal's last complete line (a torn last line was never acknowledged), else `<key>.json`
 * (`{ format: 'keyrotor-state/1', record }`, as 0.2.0 wrote it, and what a journal longer than
 * JOURNAL_COMPACT_BYTES is folded into), plus the per-key lease in `<stateDir>/locks/` (see
 * file-lease.ts). Fencing: every grant to a new owner bumps the key's
 * counter in `<stateDir>/fences/<key>.json` (a line appended by the new holder only; a re-acquire by the same
 * owner extends its lease and keeps the token); a write with a fence first checks
 * that counter still equals its token (under the in-process queue; across processes the window
 * between that check and the rename is the file backend's limit — use postgres or dynamodb for fleets).
 *
 * While this instance holds a key's lease, the key's journal (and the audit log) stay open between
 * appends and what was last appended is remembered with the file's identity and size: a transition
 * is a stat of the fence file and of the journal, then one write + fsync (see `journals`).
 *
 * Damage is never reset silently: torn JSON, an unknown format or a record that fails validation is
 * STATE_UNREADABLE naming the file (and the rotation that was in progress, when that much is
 * readable); a newer format is STATE_VERSION.
 *
 * Webhook outbox: one small file per pending notification, `<stateDir>/outbox/<id>.json`
 * (`{ format: 'keyrotor-outbox/1', entry }`, atomic writes); delivered or given-up entries are deleted.
 * A damaged entry file is skipped, never deleted.
 */
import { open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { closeSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock } from '../../core/clock.ts';
import { KeyrotorError } from '../../core/errors.ts';
import type {
  AuditNotWritten,
  ClaimCandidate,
  Fence,
  KeyRecord,
  Lease,
  OutboxEntry,
  RecordBatch,
  StateStore,
} from '../../core/ports.ts';
import { isLease } from '../../core/ports.ts';
import {
  displayPath,
  errnoOf,
  fsyncDir,
  isTransient,
  openCreating,
  readTail,
  serialized,
  writeAllSync,
  writeFileAtomic,
} from '../../core/fs.ts';
import type { AuditEntry } from '../../core/audit.ts';
import { createJsonlAuditLog, type CommittingAuditLog } from '../audit/jsonl.ts';
import { isAuditRecord, type AuditRecord } from '../audit/record.ts';
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
  /** the audit trail written with the snapshots (`audit.path`); default `<stateDir>/audit/audit.jsonl` */
  auditFile?: string;
}

export const JOURNAL_FORMAT = 'keyrotor-journal/1';
/** a journal longer than this is folded into `<key>.json` after its next append */
export const JOURNAL_COMPACT_BYTES = 256 * 1024;
/** a fence file longer than this is replaced by its last line (about 60 grants) */
export const FENCE_COMPACT_BYTES = 4 * 1024;

/** a key's journal as this instance last appended to it (see `journals` in createFileStateStore) */
interface Journal {
  /** open while this instance holds the key's lease */
  fh?: FileHandle;
  /** device, inode and birth time */
  id: string;
  size: number;
  record: KeyRecord;
}

interface JournalLine {
  format: string;
  record: unknown;
  audit?: unknown[];
}

export function createFileStateStore(
  stateDir: string,
  opts: FileStateStoreOptions = {},
): StateStore & { auditLog(): CommittingAuditLog } {
  const clock = opts.clock ?? systemClock;
  const root = path.resolve(stateDir);
  const stateFolder = path.join(root, 'state');
  const leases = createLeaseManager(path.join(root, 'locks'), clock);
  const journalOf = (keyName: string) => path.join(stateFolder, `${keyName}.journal`);
  /** the audit records the journals written since `modifiedSinceMs` hold (the audit log recovers from them after a crash) */
  async function journaledAudit(modifiedSinceMs: number): Promise<AuditRecord[]> {
    let names: string[];
    try {
      names = await readdir(stateFolder);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return [];
      throw e;
    }
    const out: AuditRecord[] = [];
    for (const n of names) {
      if (!n.endsWith('.journal') || n.startsWith('.')) continue;
      let text: string;
      try {
        // a journal last written before the audit log was is fully in it already
        if ((await stat(path.join(stateFolder, n))).mtimeMs < modifiedSinceMs) continue;
        text = await readFile(path.join(stateFolder, n), 'utf8');
      } catch (e) {
        if (errnoOf(e) === 'ENOENT') continue;
        throw e;
      }
      for (const l of text.split('\n').slice(0, -1)) {
        try {
          const o = JSON.parse(l) as JournalLine;
          for (const r of o.audit ?? []) if (isAuditRecord(r)) out.push(r);
        } catch {
          // a damaged line: read() reports it for its key
        }
      }
    }
    return out;
  }
  const audit = createJsonlAuditLog(opts.auditFile ?? path.join(root, 'audit', 'audit.jsonl'), {
    committed: journaledAudit,
  });
  /**
   * What this instance last appended to a key's journal: the record, the journal's identity (device,
   * inode and birth time: a journal folded away and created again is another file even when its inode
   * number is reused) and its size after that append. Valid while the journal on disk still has that
   * identity and size: every writer only appends (a torn tail is cut off before a complete line is
   * added), so any other write grows the file. While this instance holds the key's lease the journal
   * stays open (`fh`), so a transition's append is one write and one fsync; it is closed on release.
   */
  const journals = new Map<string, Journal>();
  /** the keys whose lease this instance holds (their journals stay open between appends) */
  const held = new Set<string>();
  const idOf = (st: { dev: number; ino: number; birthtimeMs: number }) => `${st.dev}:${st.ino}:${st.birthtimeMs}`;
  async function forget(keyName: string): Promise<void> {
    const j = journals.get(keyName);
    journals.delete(keyName);
    await j?.fh?.close().catch(() => undefined);
  }
  /** close the key's journal (what is known of it stays: it is checked against the file before use) */
  async function closeJournal(keyName: string): Promise<void> {
    const j = journals.get(keyName);
    if (!j?.fh) return;
    const fh = j.fh;
    journals.set(keyName, { id: j.id, size: j.size, record: j.record });
    await fh.close().catch(() => undefined);
  }
  const fenceStamp = (st: { dev: number; ino: number; birthtimeMs: number; size: number; mtimeMs: number }) =>
    `${idOf(st)}:${st.size}:${st.mtimeMs}`;
  /** what this instance knows of each key's fencing counter, valid while the fence file is unchanged */
  const fences = new Map<string, { stamp: string; token: number; owner: string }>();

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

  /** the record in the key's journal (its last complete line), or undefined when there is no journal */
  async function readJournal(keyName: string): Promise<{ record: KeyRecord } | undefined> {
    const file = journalOf(keyName);
    const failed = (e: unknown) =>
      new KeyrotorError(
        'STATE_UNREADABLE',
        `cannot read state journal ${displayPath(file)} (${errnoOf(e) ?? 'unknown error'})`,
        { cause: e, retryable: isTransient(e) },
      );
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw failed(e);
    }
    let line: string | null;
    try {
      // only its last line counts (up to JOURNAL_COMPACT_BYTES of older ones before it): read from the end
      line = (await readTail(fh, (await fh.stat()).size, 16 * 1024)).lastLine;
    } catch (e) {
      throw failed(e);
    } finally {
      await fh.close().catch(() => undefined);
    }
    // a torn last line (a crash in the middle of an append) was never acknowledged: ignored
    if (line === null) return undefined;
    let obj: JournalLine;
    try {
      obj = JSON.parse(line) as JournalLine;
    } catch (e) {
      throw unreadable(file, 'its last line is not valid JSON (a damaged write?)', undefined, e);
    }
    return { record: checkStored(file, keyName, obj, JOURNAL_FORMAT, /^keyrotor-journal\/(\d+)$/) };
  }

  async function read(keyName: string): Promise<KeyRecord | null> {
    const j = await readJournal(keyName);
    if (j) return j.record;
    return readJson(keyName);
  }

  /** `<key>.json`: the record as 0.2.0 wrote it, and as a journal is folded into */
  async function readJson(keyName: string): Promise<KeyRecord | null> {
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
    return checkStored(file, keyName, obj, STATE_FORMAT, STATE_FORMAT_RE);
  }

  /** a stored `{ format, record }` (state file or journal line), validated */
  function checkStored(file: string, keyName: string, obj: unknown, expected: string, formatRe: RegExp): KeyRecord {
    const rotationId = salvageRotationId(obj);
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
      throw unreadable(file, 'not a keyrotor state file');
    const format = (obj as { format?: unknown }).format;
    const m = formatRe.exec(typeof format === 'string' ? format : '');
    if (m && Number(m[1]) > 1) {
      throw new KeyrotorError(
        'STATE_VERSION',
        `state file ${displayPath(file)} was written by a newer keyrotor (format ${m[0]}; this version reads ${expected})` +
          (rotationId ? ` (rotation ${rotationId} was in progress)` : ''),
        { hint: 'upgrade keyrotor to the version that wrote it' },
      );
    }
    if (format !== expected) throw unreadable(file, `unknown format (expected ${expected})`, rotationId);
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

  /** the record's JSON and what reading it back gives; never write what we could not read back */
  function checkWritable(keyName: string, record: KeyRecord): { json: string; readBack: KeyRecord } {
    const json = JSON.stringify(record);
    const check = keyRecordSchema.safeParse(JSON.parse(json));
    if (!check.success) {
      const issue = check.error.issues[0];
      throw new KeyrotorError(
        'INTERNAL',
        `refusing to write an invalid state record for key "${keyName}" (${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'})`,
      );
    }
    return { json, readBack: check.data };
  }

  /** `<key>.json`, replaced atomically and durably (a journal folded in) */
  async function writeJson(keyName: string, record: KeyRecord): Promise<void> {
    const file = fileOf(keyName);
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
  const fenceError = (code: 'STATE_UNREADABLE' | 'INTERNAL', doing: string, file: string, e: unknown) =>
    new KeyrotorError(code, `cannot ${doing} ${displayPath(file)} (${errnoOf(e) ?? String(e)})`, {
      cause: e,
      retryable: isTransient(e),
    });
  /**
   * The key's fencing counter: the last complete line of its fence file. A grant appends a line and
   * fsyncs it (one fsync: replacing the file took two, the file's and its folder's); a file past
   * FENCE_COMPACT_BYTES is replaced by its last line (atomically, durably). A torn last line (a grant
   * that died before its fsync returned, never acknowledged) is not the last complete line, and every
   * append starts on a line of its own. Each append changes the file's size and each replacement its
   * inode, so while a stat shows the file as this instance last read it, that reading still holds: one
   * stat per fenced write instead of reading the file.
   */
  async function readFence(keyName: string): Promise<{ token: number; owner: string }> {
    const file = fenceFile(keyName);
    const failed = (e: unknown) => fenceError('STATE_UNREADABLE', 'read', file, e);
    let stamp: string;
    try {
      // every fenced write makes this stat: one direct system call (see writeAllSync in core/fs.ts)
      const st = statSync(file);
      stamp = fenceStamp(st);
    } catch (e) {
      fences.delete(keyName);
      if (errnoOf(e) === 'ENOENT') return { token: 0, owner: '' };
      throw failed(e);
    }
    const known = fences.get(keyName);
    if (known?.stamp === stamp) return { token: known.token, owner: known.owner };
    fences.delete(keyName);
    // content and identity through one descriptor: what is remembered is what was read (a small
    // local file, read after every grant: direct system calls, as the stat above)
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return { token: 0, owner: '' };
      throw failed(e);
    }
    try {
      const st = fstatSync(fd);
      const text = readFileSync(fd, 'utf8');
      // its last complete line that is not empty (an append starts with a newline of its own; what
      // follows the last newline is a torn append, never acknowledged)
      const end = text.lastIndexOf('\n');
      const last =
        end === -1
          ? ''
          : (text
              .slice(0, end)
              .split('\n')
              .findLast((l) => l !== '') ?? '');
      let o: { token?: unknown; owner?: unknown };
      try {
        o = JSON.parse(last) as { token?: unknown; owner?: unknown };
      } catch {
        return { token: 0, owner: '' }; // unreadable counts as 0 (not remembered)
      }
      const n = Number(o.token);
      const seen = {
        token: Number.isSafeInteger(n) && n >= 0 ? n : 0,
        owner: typeof o.owner === 'string' ? o.owner : '',
      };
      fences.set(keyName, { stamp: fenceStamp(st), ...seen });
      return seen;
    } catch (e) {
      throw failed(e);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Append a grant's line to the key's fence file, durably (see readFence). Not remembered: the next
   * readFence reads the file back (a racer's append after this one would make a stamp taken here wrong).
   */
  async function appendFence(keyName: string, json: string): Promise<void> {
    const file = fenceFile(keyName);
    fences.delete(keyName);
    const failed = (e: unknown) => fenceError('INTERNAL', 'write', file, e);
    let fh: FileHandle;
    try {
      fh = await openCreating(file, 'a');
    } catch (e) {
      throw failed(e);
    }
    let size: number;
    try {
      const before = fstatSync(fh.fd).size;
      // on a line of its own, whatever a torn append left before it
      size = before + writeAllSync(fh.fd, `${before > 0 ? '\n' : ''}${json}\n`);
      await fh.sync();
      if (before === 0) await fsyncDir(path.dirname(file)); // a new file's name must survive a power loss too
    } catch (e) {
      throw failed(e);
    } finally {
      await fh.close().catch(() => undefined);
    }
    if (size > FENCE_COMPACT_BYTES) {
      try {
        await writeFileAtomic(file, `${json}\n`);
      } catch (e) {
        throw failed(e);
      }
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

  /**
   * Append one line to the key's journal and fsync it: the one durable write of a state change. A
   * torn last line (a crash in the middle of an earlier append, never acknowledged) is cut off first.
   * `known` is the journal as `current` found it unchanged since this instance's last append: then
   * the line goes straight to its open descriptor (no open, no tail check: the file ends with that
   * append's newline).
   */
  async function appendJournal(
    keyName: string,
    line: string,
    record: KeyRecord,
    known: Journal | undefined,
  ): Promise<number> {
    const file = journalOf(keyName);
    let j = known?.fh && journals.get(keyName) === known ? known : undefined;
    if (!j) {
      await forget(keyName);
      let fh: FileHandle;
      try {
        fh = await openCreating(file, 'a+');
      } catch (e) {
        throw new KeyrotorError('INTERNAL', `cannot open state journal ${displayPath(file)} (${errnoOf(e) ?? e})`, {
          cause: e,
          retryable: isTransient(e),
        });
      }
      try {
        const st = await fh.stat();
        let size = st.size;
        if (size > 0) {
          const last = Buffer.alloc(1);
          await fh.read(last, 0, 1, size - 1);
          if (last[0] !== 0x0a) {
            const all = await fh.readFile();
            size = all.lastIndexOf(0x0a) + 1;
            await fh.truncate(size);
          }
        }
        j = { fh, id: idOf(st), size, record };
      } catch (e) {
        await fh.close().catch(() => undefined);
        throw appendFailed(file, e);
      }
    }
    const fh = j.fh!;
    try {
      // the write in a direct system call (short, local); the fsync waits for the disk: asynchronous
      const bytes = Buffer.from(line, 'utf8');
      writeAllSync(fh.fd, bytes);
      await fh.sync();
      // a new journal's name must survive a power loss too
      if (j.size === 0) await fsyncDir(stateFolder);
      j.size += bytes.length;
      j.record = record;
    } catch (e) {
      journals.delete(keyName);
      await fh.close().catch(() => undefined);
      throw appendFailed(file, e);
    }
    if (held.has(keyName)) journals.set(keyName, j);
    else {
      // not under this instance's lease: nothing is kept open
      journals.delete(keyName);
      await fh.close().catch(() => undefined);
      journals.set(keyName, { id: j.id, size: j.size, record: j.record });
    }
    return j.size;
  }
  const appendFailed = (file: string, e: unknown) =>
    new KeyrotorError(
      'INTERNAL',
      `cannot append to state journal ${displayPath(file)} (${errnoOf(e) ?? 'unknown error'})`,
      { cause: e, retryable: isTransient(e) },
    );

  /**
   * The key's current record: this instance's last append while the journal on disk is still exactly
   * what that append left (one stat), else read from disk.
   */
  async function current(keyName: string): Promise<{ record: KeyRecord; journal: Journal | undefined }> {
    const j = journals.get(keyName);
    if (j) {
      let st: { dev: number; ino: number; birthtimeMs: number; size: number } | undefined;
      try {
        st = statSync(journalOf(keyName)); // every write makes this stat: direct (see readFence)
      } catch {
        st = undefined;
      }
      if (st && idOf(st) === j.id && st.size === j.size) return { record: structuredClone(j.record), journal: j };
      await forget(keyName);
    }
    return { record: (await read(keyName)) ?? empty(keyName), journal: undefined };
  }

  /**
   * Fold a long journal into `<key>.json`: the audit log first made durable (its records leave the
   * journal), then the record written atomically, then the journal removed. A crash in between leaves
   * the journal, which still wins on read.
   */
  async function compact(keyName: string, record: KeyRecord): Promise<void> {
    await audit.sync();
    await writeJson(keyName, record);
    await forget(keyName);
    await unlink(journalOf(keyName)).catch((e: unknown) => {
      if (errnoOf(e) !== 'ENOENT') throw e;
    });
    await fsyncDir(stateFolder);
  }

  /**
   * read-modify-write under the per-key queue (across processes the lease guards): one fsync'd append
   * to the key's journal holding the new record and, when given, the audit records chained from
   * `entries` (appended to the audit log after that write, without a second fsync)
   */
  function update(
    keyName: string,
    fn: (r: KeyRecord) => void,
    fence?: Fence,
    entries?: readonly AuditEntry[],
  ): Promise<void | AuditNotWritten> {
    return serialized(fileOf(keyName), async (): Promise<void | AuditNotWritten> => {
      // the fence check and the journal's stat are independent: asked for together (one wait, not two)
      const [seen, now] = await Promise.allSettled([fence ? readFence(keyName) : undefined, current(keyName)]);
      if (fence) {
        if (seen.status === 'rejected') throw seen.reason;
        const token = seen.value!.token;
        if (token !== fence.token) throw leaseLost(keyName, fence, `the lease was granted again (token ${token})`);
      }
      if (now.status === 'rejected') throw now.reason;
      const { record: r, journal } = now.value;
      fn(r);
      // `readBack` (a copy of r as a read would return it) is what this instance remembers
      const { json, readBack } = checkWritable(keyName, r);
      // JSON.stringify({ format, record: r, audit? }), the record's JSON made once
      const line = (records?: AuditRecord[]) =>
        `{"format":${JSON.stringify(JOURNAL_FORMAT)},"record":${json}` +
        (records?.length ? `,"audit":${JSON.stringify(records)}` : '') +
        '}\n';
      let size: number;
      let refused: AuditNotWritten | undefined;
      if (entries?.length) {
        let committed = false;
        let written = 0;
        try {
          await audit.appendCommitted(entries, async (records) => {
            committed = true;
            written = await appendJournal(keyName, line(records), readBack, journal);
          });
        } catch (e) {
          if (committed) throw e;
          // the audit log refused before anything was written (damaged, locked): the snapshot alone
          refused = { auditError: e };
          written = await appendJournal(keyName, line(), readBack, journal);
        }
        size = written;
      } else size = await appendJournal(keyName, line(), readBack, journal);
      if (size > JOURNAL_COMPACT_BYTES) await compact(keyName, r);
      return refused;
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
    auditTrail: audit.trail,
    auditLog: () => audit,
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
          await appendFence(keyName, JSON.stringify({ token: next, owner }));
          return next;
        });
      } catch (e) {
        await got.release().catch(() => undefined);
        throw e;
      }
      // A racer that took an expired lock over on a stale look may have moved this lock aside meanwhile
      // (file-lease.ts removeIfSame): if the lock names someone else now, this grant is not ours. (Moved
      // after this look, it is the fencing token that stops this holder: the new one's grant is larger.)
      const now = await leases.holder(keyName, ttlMs);
      if (now && now.owner !== owner) {
        await got.release().catch(() => undefined);
        return now;
      }
      held.add(keyName);
      // while the lease is held, the audit log's descriptor stays open between the transitions' appends
      const unkeep = audit.keepOpen();
      const lease: Lease = {
        owner: got.owner,
        get expiresAt() {
          return got.expiresAt;
        },
        token,
        renew: () => got.renew(),
        release: async () => {
          try {
            await got.release();
          } finally {
            held.delete(keyName);
            await serialized(fileOf(keyName), () => closeJournal(keyName));
            await unkeep();
          }
        },
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

    /** closes the journals still open (held leases keep theirs open between appends) */
    async close() {
      for (const k of [...journals.keys()]) await serialized(fileOf(k), () => closeJournal(k));
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
      const keys = new Set<string>();
      for (const n of names) {
        if (n.startsWith('.')) continue;
        const k = n.endsWith('.json') ? n.slice(0, -'.json'.length) : n.endsWith('.journal') ? n.slice(0, -8) : '';
        if (k && SAFE_KEY_NAME.test(k)) keys.add(k);
      }
      return [...keys].sort();
    },
  };
}
