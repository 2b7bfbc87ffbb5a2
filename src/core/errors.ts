import { scrubText } from './secret.ts';
import type { Stage } from './stages.ts';

/** Stable error codes. Never rename one; add new ones. Documented in docs/operations.md "Error codes". */
export const ERROR_CODES = {
  // usage and configuration (exit 2)
  USAGE: 2,
  CONFIG_INVALID: 2,
  CONFIG_ENV_MISSING: 2,
  CONFIG_NOT_FOUND: 2,
  UNKNOWN_KEY: 2,
  STATE_UNREADABLE: 2,
  STATE_VERSION: 2,
  /** the state backend's schema/table does not exist (or is older than this keyrotor): `keyrotor state init` */
  STATE_NOT_INITIALIZED: 2,
  /** the state backend cannot be reached or refuses us (connection, URL, credentials, permission) */
  STATE_UNAVAILABLE: 2,
  // concurrency (exit 3)
  LOCKED: 3,
  /** a write under a lease was refused: the lease was granted to someone else since (fencing token) */
  LEASE_LOST: 3,
  // rotation failures that were rolled back safely (exit 1)
  ISSUER_AUTH: 1,
  ISSUER_PERMISSION: 1,
  ISSUER_POLICY: 1,
  ISSUER_RATE_LIMITED: 1,
  ISSUER_UNAVAILABLE: 1,
  ISSUER_BAD_RESPONSE: 1,
  ISSUER_NOT_FOUND: 1,
  CREATE_AMBIGUOUS: 1,
  KEY_INVALID: 1,
  KEY_MISSING_SCOPES: 1,
  STORE_NOT_FOUND: 1,
  STORE_ACCESS_DENIED: 1,
  STORE_CONFLICT: 1,
  STORE_UNAVAILABLE: 1,
  STORE_CORRUPT: 1,
  SECRET_UNAVAILABLE: 1,
  GATE_TIMEOUT: 1,
  GATE_REJECTED: 1,
  GATE_ERROR: 1,
  /** a step did not finish within the caller's time budget; the state is saved, retrying is safe */
  IN_PROGRESS: 1,
  // a human must act (exit 4)
  ADOPT_REQUIRED: 4,
  REVOKE_FAILED: 4,
  REVOKE_UNCONFIRMED: 4,
  ROLLBACK_FAILED: 4,
  INTERNAL: 4,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface KeyrotorErrorOptions {
  stage?: Stage | undefined;
  retryable?: boolean;
  cause?: unknown;
  /** a short hint saying how to fix it, shown after the message */
  hint?: string;
}

/** The one error family. Messages are built by us and scrubbed; never put a secret value in one. */
export class KeyrotorError extends Error {
  override readonly name = 'KeyrotorError';
  readonly code: ErrorCode;
  readonly stage: Stage | undefined;
  readonly retryable: boolean;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, opts: KeyrotorErrorOptions = {}) {
    super(scrubText(message), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.stage = opts.stage;
    this.retryable = opts.retryable ?? false;
    this.hint = opts.hint;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code];
  }

  /** Serializable, secret-free form stored in workflow context, snapshots and results. */
  toRecord(): ErrorRecord {
    return {
      code: this.code,
      message: this.message,
      ...(this.stage ? { stage: this.stage } : {}),
      retryable: this.retryable,
      ...(this.hint ? { hint: this.hint } : {}),
    };
  }
}

export interface ErrorRecord {
  code: ErrorCode;
  message: string;
  stage?: Stage;
  retryable: boolean;
  hint?: string;
}

export function isKeyrotorError(e: unknown): e is KeyrotorError {
  return e instanceof KeyrotorError;
}

/** Normalise anything thrown into a KeyrotorError (unknown errors become INTERNAL, message scrubbed). */
export function toKeyrotorError(e: unknown, stage?: Stage): KeyrotorError {
  if (e instanceof KeyrotorError) {
    if (stage && !e.stage) {
      return new KeyrotorError(e.code, e.message, {
        stage,
        retryable: e.retryable,
        cause: e.cause,
        hint: e.hint ?? '',
      });
    }
    return e;
  }
  const message = e instanceof Error ? e.message : String(e);
  return new KeyrotorError('INTERNAL', `unexpected error: ${message}`, { stage, cause: e });
}

/** Turn an ErrorRecord (from a snapshot) back into an error. */
export function fromRecord(r: ErrorRecord): KeyrotorError {
  return new KeyrotorError(r.code, r.message, {
    stage: r.stage,
    retryable: r.retryable,
    ...(r.hint ? { hint: r.hint } : {}),
  });
}
