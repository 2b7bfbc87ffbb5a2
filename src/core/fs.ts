/**
 * Durable file primitives for the file store: atomic replace (temp file in the same folder, fsync,
 * rename, fsync the folder), private modes, and a per-path in-process queue so concurrent writers
 * in one process never lose an update. Across processes the per-key lease guards.
 * Used by the file secret store and the file state store (src/app/state), plus errno helpers.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/** `dir` if it exists, else its nearest existing ancestor (a file in the way is ENOTDIR). Writes nothing. */
export async function nearestExistingDir(dir: string): Promise<string> {
  let d = path.resolve(dir);
  for (;;) {
    try {
      const st = await stat(d);
      if (!st.isDirectory()) throw Object.assign(new Error(`${d} is not a folder`), { code: 'ENOTDIR' });
      return d;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const up = path.dirname(d);
      if (up === d) throw e;
      d = up;
    }
  }
}

/**
 * `open(file, flags, 0600)`, creating its folder (0700) only when the open says it is missing: one
 * system call in the usual case instead of a mkdir (EEXIST) before every write.
 */
export async function openCreating(file: string, flags: string): Promise<FileHandle> {
  try {
    return await open(file, flags, FILE_MODE);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await ensureDir(path.dirname(file));
    return open(file, flags, FILE_MODE);
  }
}

/** fsync a directory so a rename in it survives a power loss (not supported everywhere: ignored then). */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF' && code !== 'ENOTSUP') throw e;
  } finally {
    await fh?.close();
  }
}

/** A unique hidden name beside `file` (temp files, stale locks set aside); readers never look at these. */
export function uniqueSibling(file: string, suffix: string): string {
  return path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.${suffix}`,
  );
}

/**
 * Replace `file` atomically with `data` (mode 0600, folder 0700). A crash leaves the old file intact.
 * `sync: false` skips both fsyncs: still atomic for readers and across a process crash, not durable
 * across a power loss (for files rebuilt from a durable source).
 */
export async function writeFileAtomic(file: string, data: string, opts: { sync?: boolean } = {}): Promise<void> {
  const sync = opts.sync !== false;
  const dir = path.dirname(file);
  const tmp = uniqueSibling(file, 'tmp');
  const fh = await openCreating(tmp, 'wx');
  try {
    try {
      await fh.writeFile(data, 'utf8');
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  if (sync) await fsyncDir(dir);
}

/**
 * Write all of `data` at the descriptor's position (O_APPEND: the end) with synchronous system calls.
 * For the state backend's hot path only: a short local write costs a few microseconds as a system call
 * but ~35 µs as a round trip through libuv's thread pool, and every state transition makes several.
 * Never for an fsync: that waits for the disk and stays asynchronous.
 */
export function writeAllSync(fd: number, data: string | Buffer): number {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, null);
  return buf.length;
}

/**
 * writeFileAtomic with `sync: false`, in synchronous system calls (see writeAllSync): atomic for
 * readers and across a process crash, not durable across a power loss. For small files rebuilt from
 * a durable source (the audit log's head).
 */
export function replaceFileSync(file: string, data: string): void {
  const tmp = uniqueSibling(file, 'tmp');
  let fd: number;
  try {
    fd = openSync(tmp, 'wx', FILE_MODE);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(path.dirname(file), { recursive: true, mode: DIR_MODE });
    fd = openSync(tmp, 'wx', FILE_MODE);
  }
  try {
    try {
      writeAllSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** The end of a file of lines: its last complete line and what follows it (a torn append). */
export interface Tail {
  /** offset just after the last newline (0 if none) */
  completeEnd: number;
  /** the last complete line, without its newline */
  lastLine: string | null;
  /** bytes after the last newline */
  fragment: Buffer;
}

/**
 * Read the last complete line of a file of `size` bytes from its end, `window` bytes at a time (doubled
 * until the line fits), not the whole file.
 */
export async function readTail(fh: FileHandle, size: number, window = 64 * 1024): Promise<Tail> {
  for (;;) {
    const start = Math.max(0, size - window);
    const buf = Buffer.alloc(size - start);
    if (buf.length) await fh.read(buf, 0, buf.length, start);
    const nl = buf.lastIndexOf(0x0a);
    if (nl === -1) {
      if (start === 0) return { completeEnd: 0, lastLine: null, fragment: buf };
      window *= 2;
      continue;
    }
    const prevNl = nl === 0 ? -1 : buf.lastIndexOf(0x0a, nl - 1);
    if (prevNl === -1 && start > 0) {
      window *= 2;
      continue;
    }
    return {
      completeEnd: start + nl + 1,
      lastLine: buf.subarray(prevNl + 1, nl).toString('utf8'),
      fragment: buf.subarray(nl + 1),
    };
  }
}

const queues = new Map<string, Promise<unknown>>();

/** Run `fn` after every earlier call for the same key has settled (a per-file in-process mutex). */
export function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return run;
}
export function errnoOf(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

const TRANSIENT = new Set(['EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'ENOSPC', 'EIO', 'ETIMEDOUT', 'EINTR']);
export const isTransient = (e: unknown) => TRANSIENT.has(errnoOf(e) ?? '');

/** A path for messages: relative to the cwd when inside it, else absolute. */
export function displayPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}
