import { createHash } from 'node:crypto';
import type { Secret } from './secret.ts';

/**
 * One-way short digest of a key, safe to log, store and compare:
 * first 12 hex chars of SHA-256("keyrotor-fp-v1\0" + key). Consumers compute the same value
 * (exported from `keyrotor/consumer`) to report which key they have loaded.
 */
export const FINGERPRINT_LABEL = 'keyrotor-fp-v1\u0000';
export function fingerprint(secret: Secret | string): string {
  const raw = typeof secret === 'string' ? secret : secret.reveal();
  return 'fp_' + createHash('sha256').update(FINGERPRINT_LABEL).update(raw).digest('hex').slice(0, 12);
}
