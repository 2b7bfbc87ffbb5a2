import { KeyrotorError } from '../../../src/core/errors.ts';

const TRANSIENT = new Set(['EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'ENOSPC', 'EIO', 'ETIMEDOUT', 'EINTR']);
const DENIED = new Set(['EACCES', 'EPERM', 'EROFS']);

export function errnoOf(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Map a node:fs error once: what we tried (`cannot write`), on which file, with the errno code. */
export function fsError(e: unknown, what: string, file: string): KeyrotorError {
  const code = errnoOf(e) ?? 'unknown error';
  if (DENIED.has(code)) {
    return new KeyrotorError('STORE_ACCESS_DENIED', `file store: ${what} ${file} (${code})`, {
      cause: e,
      retryable: false,
      hint: 'check the owner and permissions of the file and its folder',
    });
  }
  return new KeyrotorError('STORE_UNAVAILABLE', `file store: ${what} ${file} (${code})`, {
    cause: e,
    retryable: TRANSIENT.has(code),
  });
}
