/**
 * Durable file primitives for the state store: the same atomic replace, private modes and per-path
 * in-process queue as the file secret store (one implementation, in its folder), plus errno helpers.
 */
import path from 'node:path';

export { DIR_MODE, FILE_MODE, ensureDir, fsyncDir, serialized, uniqueSibling, writeFileAtomic } from '../../providers/stores/file/file.io.ts';

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
