/**
 * Request authentication for `keyrotor serve`: a Google-signed OIDC ID token (Cloud Scheduler, Pub/Sub
 * push) or a shared bearer token from the environment (other hosts). Either may be configured, or both;
 * with neither the server refuses to start.
 */
import { KeyrotorError } from '../../core/errors.ts';
import type { Secret } from '../../core/secret.ts';
import { bearerMatches } from './bearer.ts';
import { createOidcVerifier, type OidcOptions } from './oidc.ts';

export { bearerTokenFromEnv, constantTimeEquals, MIN_BEARER_TOKEN_LENGTH } from './bearer.ts';
export { GOOGLE_ISSUERS, GOOGLE_JWKS_URL, type OidcOptions } from './oidc.ts';

export interface AuthOptions {
  oidc?: OidcOptions | undefined;
  bearer?: Secret | undefined;
}

export type AuthResult = { ok: true; method: 'oidc' | 'bearer'; principal: string } | { ok: false; reason: string };

export interface Authenticator {
  /** check an `Authorization` header value */
  authenticate(authorization: string | undefined): Promise<AuthResult>;
  readonly methods: string[];
}

export function createAuthenticator(o: AuthOptions): Authenticator {
  const oidc = o.oidc ? createOidcVerifier(o.oidc) : undefined;
  if (!oidc && !o.bearer) {
    throw new KeyrotorError(
      'USAGE',
      'no authentication configured: every request except /healthz must be authenticated',
      {
        hint: 'set --audience (Google OIDC ID tokens) and/or put a bearer token in the env var named by --token-env',
      },
    );
  }
  if (o.oidc && o.oidc.audiences.length === 0) throw new KeyrotorError('USAGE', 'OIDC needs at least one audience');
  const methods = [...(oidc ? ['oidc'] : []), ...(o.bearer ? ['bearer'] : [])];
  return {
    methods,
    async authenticate(authorization) {
      const m = /^Bearer[ ]+([^\s]+)\s*$/i.exec(authorization ?? '');
      if (!m) return { ok: false, reason: authorization ? 'malformed Authorization header' : 'no credentials' };
      const token = m[1]!;
      if (o.bearer && bearerMatches(o.bearer, token)) return { ok: true, method: 'bearer', principal: 'bearer-token' };
      if (oidc && token.split('.').length === 3) {
        const r = await oidc.verify(token);
        return r.ok ? { ok: true, method: 'oidc', principal: r.email ?? r.subject } : r;
      }
      return { ok: false, reason: 'invalid credentials' };
    },
  };
}
