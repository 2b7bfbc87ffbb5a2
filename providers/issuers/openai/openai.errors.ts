/**
 * The one place that turns `openai` SDK errors into KeyrotorError codes.
 *
 * Branches on the API's `error.code`, not on the HTTP status alone: a revoked or unknown key is
 * `401 invalid_api_key`, while a valid key that lacks a scope is also 401 but with `code: null` and a
 * "Missing scopes" message.
 *
 * Foreign text (the API's message, socket errors) is scrubbed before it reaches a message, and the raw
 * SDK error is never attached as `cause`: a scrubbed stand-in with the same name, status, code and
 * request id is attached instead, so a logger that walks `cause` finds no key material either.
 */
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { ErrorCode } from '../../../src/core/errors.ts';
import { scrubText } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';

export interface MapContext {
  /** what we were doing, e.g. `create key keyrotor.app.rot-... in project proj_1` */
  action: string;
  stage?: Stage | undefined;
  /** the resource a 404 refers to, e.g. `project proj_1 or service account svc_1` */
  notFound?: string | undefined;
  /** name of the env var holding the admin key (for hints) */
  adminKeyEnv?: string | undefined;
  /** values that must never appear (the admin key, a key under test) */
  secrets?: readonly string[] | undefined;
}

/** A secret-free copy of an SDK error: same name, status, code and request id, scrubbed text. */
export class ScrubbedSdkError extends Error {
  override readonly name: string;
  readonly status: number | undefined;
  readonly code: string | null | undefined;
  readonly type: string | undefined;
  readonly requestID: string | null | undefined;

  constructor(e: unknown, secrets: readonly string[] = []) {
    const raw = e instanceof Error ? e.message : String(e);
    super(scrubText(raw, secrets));
    this.name = e instanceof Error ? e.constructor.name || e.name : 'Error';
    if (e instanceof APIError) {
      this.status = e.status;
      this.code = e.code;
      this.type = e.type;
      this.requestID = e.requestID;
    } else {
      this.status = undefined;
      this.code = undefined;
      this.type = undefined;
      this.requestID = undefined;
    }
    // Keep only the frames of the original stack: its first line repeats the unscrubbed message.
    if (e instanceof Error && typeof e.stack === 'string') {
      const frames = e.stack.split('\n').filter((l) => /^\s+at /.test(l));
      this.stack = `${this.name}: ${this.message}\n${frames.join('\n')}`;
    }
  }
}

/** The API's own message (scrubbed, one line), without the SDK's `401 ` status prefix. */
export function apiMessage(e: unknown, secrets: readonly string[] = []): string {
  let msg: string;
  if (e instanceof APIError) {
    const body = e.error as { message?: unknown } | undefined;
    msg = typeof body?.message === 'string' && body.message ? body.message : e.message;
  } else if (e instanceof Error) {
    msg = e.message;
    const cause = (e as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message && !msg.includes(cause.message)) msg += ` (${cause.message})`;
  } else {
    msg = String(e);
  }
  return scrubText(msg.replace(/\s+/g, ' ').trim(), secrets).slice(0, 300);
}

export function statusOf(e: unknown): number | undefined {
  return e instanceof APIError && typeof e.status === 'number' ? e.status : undefined;
}

/** A connection error or timeout: no HTTP answer at all. */
export function isConnectionError(e: unknown): boolean {
  return e instanceof APIConnectionError || e instanceof APIConnectionTimeoutError;
}

/**
 * After a failed POST that creates something: could it have been applied? True for anything that is
 * not a clean HTTP rejection (no answer, timeout, 5xx, 408, or an error we do not recognise).
 */
export function isAmbiguous(e: unknown): boolean {
  if (e instanceof APIUserAbortError) return true; // aborted after sending: the server may have applied it
  if (isConnectionError(e)) return true;
  const status = statusOf(e);
  if (status === undefined) return true;
  return status >= 500 || status === 408;
}

/** 401 with `code: null` (or a "Missing scopes" message): a valid key without the needed scope. */
export function isMissingScopes(e: unknown): boolean {
  if (!(e instanceof APIError)) return false;
  if (e.status === 403) return true;
  if (e.status !== 401) return false;
  if (e.code === 'invalid_api_key') return false;
  // 401 without a code is also what a request with no key at all gets ("You didn't provide an API key")
  if (/didn't provide an api key|did not provide an api key/i.test(apiMessage(e))) return false;
  if (e.code === null || e.code === undefined) return true;
  return /missing scope|insufficient permission/i.test(apiMessage(e));
}

function retryAfter(e: APIError): string {
  const h = e.headers;
  const ra = h?.get?.('retry-after-ms')
    ? `${h.get('retry-after-ms')}ms`
    : h?.get?.('retry-after')
      ? `${h.get('retry-after')}s`
      : undefined;
  return ra ? ` (retry after ${ra})` : '';
}

/** Map any error thrown by an SDK call to one KeyrotorError. Already-mapped errors pass through. */
export function mapOpenAIError(e: unknown, c: MapContext): KeyrotorError {
  if (e instanceof KeyrotorError) return e;
  const secrets = c.secrets ?? [];
  const cause = new ScrubbedSdkError(e, secrets);
  const msg = apiMessage(e, secrets);
  const base = { stage: c.stage, cause };
  const make = (code: ErrorCode, text: string, retryable: boolean, hint?: string) =>
    new KeyrotorError(code, `openai: ${c.action}: ${text}`, { ...base, retryable, ...(hint ? { hint } : {}) });
  const envHint = c.adminKeyEnv ? `$${c.adminKeyEnv}` : 'the admin key env var';

  if (e instanceof APIConnectionTimeoutError) return make('ISSUER_UNAVAILABLE', 'request timed out', true);
  if (e instanceof APIUserAbortError) return make('ISSUER_UNAVAILABLE', 'request aborted', true);
  if (e instanceof APIConnectionError) return make('ISSUER_UNAVAILABLE', `connection failed: ${msg}`, true);
  if (e instanceof SyntaxError) {
    // a 200 whose JSON does not parse (cut off, garbled): retryable. Its text may quote the body (a
    // create's body holds the new key), so neither the message nor the cause carries it.
    return new KeyrotorError('ISSUER_BAD_RESPONSE', `openai: ${c.action}: malformed answer (not valid JSON)`, {
      stage: c.stage,
      retryable: true,
      cause: new ScrubbedSdkError(new SyntaxError('answer is not valid JSON (text withheld)')),
    });
  }
  if (!(e instanceof APIError)) {
    return make('ISSUER_BAD_RESPONSE', `unexpected error: ${msg}`, false);
  }
  const status = e.status ?? 0;
  const code = e.code ?? null;
  const tag = code ? `${status} ${code}` : `${status}`;
  switch (true) {
    case status === 400 || status === 422:
      return make(
        'ISSUER_POLICY',
        `rejected by the API (${tag}): ${msg}`,
        false,
        'the request breaks an organization or project policy (key lifetime, scopes, who may create keys); see the message',
      );
    case status === 401 && isMissingScopes(e):
      return make(
        'ISSUER_PERMISSION',
        `admin key lacks a required scope (${tag}): ${msg}`,
        false,
        `give the admin key in ${envHint} write access to project API keys and service accounts`,
      );
    case status === 401:
      return make(
        'ISSUER_AUTH',
        `admin key rejected (${tag}): ${msg}`,
        false,
        `set ${envHint} to a valid OpenAI admin key (sk-admin-...); project keys cannot use the Admin API`,
      );
    case status === 403:
      return make(
        'ISSUER_PERMISSION',
        `permission denied (${tag}): ${msg}`,
        false,
        `the admin key in ${envHint} may not manage this project's keys`,
      );
    case status === 404:
      return make(
        'ISSUER_NOT_FOUND',
        `${c.notFound ?? 'resource'} not found (${tag}): ${msg}`,
        false,
        'check `project` and `serviceAccount` in the issuer config',
      );
    case status === 409:
      return make('ISSUER_UNAVAILABLE', `conflict (${tag}): ${msg}`, true);
    case status === 429:
      return make(
        'ISSUER_RATE_LIMITED',
        `rate limited (${tag})${retryAfter(e)}: ${msg}`,
        code !== 'insufficient_quota',
      );
    case status === 408 || status >= 500:
      return make('ISSUER_UNAVAILABLE', `server error (${tag}): ${msg}`, true);
    default:
      return make('ISSUER_BAD_RESPONSE', `unexpected answer (${tag}): ${msg}`, false);
  }
}
