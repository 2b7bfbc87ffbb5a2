/**
 * Google-signed OIDC ID tokens (Cloud Scheduler and Pub/Sub push send one with an `audience` you set):
 * the signature is checked against Google's JWKS (cached by jose, refetched on an unknown `kid`), then
 * issuer, audience, expiry (and not-before, issued-at) and, when configured, the caller's e-mail.
 *
 * The audience alone does not authorize: any Google identity can mint a token for any audience. So
 * the allowed service-account e-mails should always be set; without them any Google account passes.
 */
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';

export const GOOGLE_JWKS_URL = 'https://www.googleapis.com/oauth2/v3/certs';
export const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];

export interface OidcOptions {
  /** accepted `aud` values (e.g. the service URL) */
  audiences: string[];
  /** accepted `email` claims (verified e-mail of the calling service account); empty = any */
  emails: string[];
  /** default Google's JWKS */
  jwksUrl?: string;
  /** default Google's issuers */
  issuers?: string[];
  /** allowed clock skew, seconds (default 30) */
  clockToleranceSec?: number;
}

export type OidcResult = { ok: true; subject: string; email: string | undefined } | { ok: false; reason: string };

export interface OidcVerifier {
  verify(token: string): Promise<OidcResult>;
}

export function createOidcVerifier(o: OidcOptions): OidcVerifier {
  const url = new URL(o.jwksUrl ?? GOOGLE_JWKS_URL);
  const jwks: JWTVerifyGetKey = createRemoteJWKSet(url, {
    timeoutDuration: 5_000,
    cooldownDuration: 30_000,
    cacheMaxAge: 3_600_000,
  });
  const emails = new Set(o.emails.map((e) => e.toLowerCase()));
  return {
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, jwks, {
          issuer: o.issuers ?? GOOGLE_ISSUERS,
          audience: o.audiences,
          algorithms: ['RS256'],
          clockTolerance: o.clockToleranceSec ?? 30,
          requiredClaims: ['exp', 'iat', 'sub'],
          // Google ID tokens live one hour; also refuses an `iat` in the future
          maxTokenAge: '1h',
        });
        const email = typeof payload.email === 'string' ? payload.email : undefined;
        if (emails.size > 0) {
          if (!email || payload.email_verified !== true || !emails.has(email.toLowerCase())) {
            return { ok: false, reason: `identity ${email ?? payload.sub ?? '(none)'} is not an allowed caller` };
          }
        }
        return { ok: true, subject: payload.sub ?? '', email };
      } catch (e) {
        return { ok: false, reason: describe(e) };
      }
    },
  };
}

/** a short reason, never the token */
function describe(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return 'token expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `claim ${e.claim} rejected (${e.reason})`;
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (e instanceof joseErrors.JWKSNoMatchingKey) return 'signed by an unknown key';
  if (e instanceof joseErrors.JWKSTimeout) return 'could not fetch the signing keys (timeout)';
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (e instanceof joseErrors.JWTInvalid || e instanceof joseErrors.JWSInvalid) return 'malformed token';
  if (e instanceof joseErrors.JOSEError) return `rejected (${e.code})`;
  return 'could not verify the token';
}
