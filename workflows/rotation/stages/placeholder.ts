/**
 * Placeholders: a value that infrastructure code put into a store before any key existed (Terraform's
 * `aws_secretsmanager_secret_version` with "CHANGE_ME", ...). It is not a key, so it can be neither
 * identified at the issuer nor revoked. `keyrotor adopt <key> --placeholder` declares the store's
 * current value a placeholder (recorded by fingerprint in the key's state record and in the audit
 * trail); from then on preflight treats that value as an empty slot: the rotation *bootstraps* over
 * it (`bootstrap: true, placeholder: true`), skips revoke and verifyRevoked, and never calls the
 * issuer's revoke for it (it has no issuer key id, and none is ever guessed).
 *
 * Rollback: a compensation puts back exactly what the store held before, i.e. the placeholder (it is
 * the previous version of the store; nothing new is invented). Consumers then read the placeholder
 * again, as they did before the rotation; the declaration stays, so the next rotation bootstraps again.
 */
import type { SecretStore } from '../../../src/core/ports.ts';
import { fingerprint } from '../../../src/core/fingerprint.ts';

type Current = Awaited<ReturnType<SecretStore['readCurrent']>>;

/** The two ways past ADOPT_REQUIRED, for its hint. */
export const ADOPT_WAYS = (key: string) =>
  `a real key made by hand: \`keyrotor adopt ${key} --key-id <issuer key id>\`; a dummy value that is no key (e.g. CHANGE_ME from Terraform): \`keyrotor adopt ${key} --placeholder\``;

/**
 * The stores' current values with declared placeholders replaced by null, and the fingerprint of the
 * placeholder that was seen (null when none). A value carrying keyrotor's issuer key id is never
 * treated as a placeholder.
 */
export function withoutPlaceholders(
  read: Current[],
  isPlaceholder: ((fp: string) => boolean) | undefined,
): { currents: Current[]; placeholder: string | null } {
  let placeholder: string | null = null;
  const currents = read.map((c) => {
    if (!c || !isPlaceholder || c.meta.issuerKeyId) return c;
    const fp = fingerprint(c.secret);
    if (!isPlaceholder(fp)) return c;
    placeholder = fp;
    return null;
  });
  return { currents, placeholder };
}
