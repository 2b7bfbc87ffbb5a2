/**
 * A shared bearer token (for hosts without Google-signed identity tokens), read from an environment
 * variable and compared in constant time. Both sides are hashed first, so neither the comparison's
 * time nor an early length check tells a caller anything about the expected token.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { KeyrotorError } from '../../core/errors.ts';
import { Secret } from '../../core/secret.ts';

/** the shortest token accepted: anything shorter is guessable */
export const MIN_BEARER_TOKEN_LENGTH = 32;

export function constantTimeEquals(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a, 'utf8').digest();
  const hb = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(ha, hb);
}

/** The token held in `env[name]`, or undefined when unset; too short is a configuration error. */
export function bearerTokenFromEnv(env: NodeJS.ProcessEnv, name: string): Secret | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (v.length < MIN_BEARER_TOKEN_LENGTH) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `the bearer token in ${name} is shorter than ${MIN_BEARER_TOKEN_LENGTH} characters`,
      {
        hint: `generate one: openssl rand -hex 32, and keep it in ${name}`,
      },
    );
  }
  return Secret.of(v);
}

export function bearerMatches(expected: Secret, presented: string): boolean {
  return constantTimeEquals(expected.reveal(), presented);
}
