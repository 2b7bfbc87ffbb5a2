/**
 * The wire format between a consumer and the `http` gate (served by `keyrotor/consumer`):
 *
 *   GET <url>  ->  200  content-type: application/json
 *                  {"format":"keyrotor-fingerprint/1","fingerprint":"fp_0123456789ab","loadedAt":"2026-11-23T15:15:00.000Z"}
 *
 * Only `fingerprint` is required. A plain-text body holding just the fingerprint (`fp_0123456789ab`,
 * optionally followed by a newline) is accepted too, so a shell script or a one-line handler can
 * answer. The fingerprint is `fp_` + 12 hex chars (src/core/fingerprint.ts), never the key.
 * 503 with `"fingerprint": null` means "no key loaded yet". Anything else is not a fingerprint.
 */
export const FINGERPRINT_FORMAT = 'keyrotor-fingerprint/1';
export const FINGERPRINT_RE = /^fp_[0-9a-f]{12}$/;
/** bodies above this size are refused (a fingerprint document is ~100 bytes) */
export const MAX_FINGERPRINT_BODY = 16 * 1024;

export interface FingerprintDocument {
  format: typeof FINGERPRINT_FORMAT;
  fingerprint: string | null;
  /** when the consumer loaded that key (ISO), when known */
  loadedAt?: string | null | undefined;
}

/** The fingerprint a consumer reports, or undefined when the body is not a fingerprint document. */
export function parseFingerprintBody(body: string): string | undefined {
  const text = body.trim();
  if (FINGERPRINT_RE.test(text)) return text;
  if (!text.startsWith('{')) return undefined;
  try {
    const doc = JSON.parse(text) as unknown;
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
      const fp = (doc as { fingerprint?: unknown }).fingerprint;
      if (typeof fp === 'string' && FINGERPRINT_RE.test(fp)) return fp;
    }
  } catch {
    // not JSON: garbage
  }
  return undefined;
}
