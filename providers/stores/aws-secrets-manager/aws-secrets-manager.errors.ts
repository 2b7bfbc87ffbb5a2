/**
 * AWS SDK error -> KeyrotorError, in one place. Branches on the SDK error `name` and
 * `$metadata.httpStatusCode` (plus Node's socket error codes for network failures), never on message
 * text. Messages are built here, name the secret, region and IAM action, and are scrubbed; the AWS
 * message (scrubbed) is kept only as detail and in a sanitized `cause` (the raw SDK error, which
 * carries the HTTP response, is never attached).
 */
import { KeyrotorError, type ErrorCode } from '../../../src/core/errors.ts';
import { scrubText } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';

/** The Secrets Manager operations this store calls; each is also the IAM action name. */
export type AwsSmOperation = 'DescribeSecret' | 'GetSecretValue' | 'PutSecretValue' | 'UpdateSecretVersionStage';

export interface AwsErrorContext {
  op: AwsSmOperation;
  secretId: string;
  region: string;
  stage?: Stage | undefined;
  versionId?: string | undefined;
  /** values that must never appear in the message (the value being written, if any) */
  scrub?: readonly string[] | undefined;
}

const THROTTLING = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
  'ProvisionedThroughputExceededException',
]);
const SERVER_SIDE = new Set([
  'InternalServiceError',
  'InternalFailure',
  'InternalServerError',
  'ServiceUnavailable',
  'ServiceUnavailableException',
]);
const BAD_CREDENTIALS = new Set([
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'InvalidClientTokenId',
  'ExpiredToken',
  'ExpiredTokenException',
  'IncompleteSignature',
  'MissingAuthenticationToken',
]);
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);
const NETWORK_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'NetworkingError']);

interface SdkErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  $metadata?: { httpStatusCode?: number; requestId?: string };
  cause?: unknown;
}

function nameOf(e: SdkErrorLike): string {
  return typeof e.name === 'string' ? e.name : 'Error';
}

function networkCode(e: unknown, depth = 0): string | undefined {
  if (!e || typeof e !== 'object' || depth > 3) return undefined;
  const x = e as SdkErrorLike;
  if (typeof x.code === 'string' && NETWORK_CODES.has(x.code)) return x.code;
  if (typeof x.name === 'string' && NETWORK_NAMES.has(x.name)) return x.name;
  return networkCode(x.cause, depth + 1);
}

/** A secret-free stand-in for the SDK error, kept as `cause`. */
function sanitizedCause(e: SdkErrorLike, detail: string): Error {
  const c = new Error(detail);
  c.name = nameOf(e);
  const status = e.$metadata?.httpStatusCode;
  const requestId = e.$metadata?.requestId;
  Object.assign(c, { ...(status ? { httpStatusCode: status } : {}), ...(requestId ? { requestId } : {}) });
  return c;
}

const WRITES: ReadonlySet<AwsSmOperation> = new Set(['PutSecretValue', 'UpdateSecretVersionStage']);

/**
 * A 2xx answer the store cannot use (a body that is not JSON, or JSON without the fields the operation
 * answers with): retryable, because every store call re-reads before it writes and writes are keyed by
 * rotation-derived tokens, so a retry converges whether or not the call took effect. The parser's text
 * is never kept (it can quote the body, and a cut GetSecretValue body holds part of the value).
 */
export function malformedAnswer(ctx: AwsErrorContext, what: string): KeyrotorError {
  const where = `secret ${ctx.secretId} in region ${ctx.region}`;
  const maybe = WRITES.has(ctx.op) ? '; the change may or may not have taken effect' : '';
  return new KeyrotorError(
    'STORE_UNAVAILABLE',
    `Secrets Manager sent a malformed answer to ${ctx.op} on ${where} (${what})${maybe}`,
    {
      stage: ctx.stage,
      retryable: true,
      hint: 'usually a proxy or gateway between keyrotor and Secrets Manager garbling answers; retry the rotation (it re-reads the secret first)',
    },
  );
}

/** Map anything the SDK threw during `ctx.op` to a KeyrotorError. KeyrotorErrors pass through. */
export function mapAwsError(err: unknown, ctx: AwsErrorContext): KeyrotorError {
  if (err instanceof KeyrotorError) return err;
  const e = (err && typeof err === 'object' ? err : { message: String(err) }) as SdkErrorLike;
  const name = nameOf(e);
  const status = e.$metadata?.httpStatusCode;
  // the SDK could not deserialize a 2xx answer (SyntaxError from its JSON parser)
  if ((status !== undefined && status >= 200 && status < 300) || name === 'SyntaxError') {
    return malformedAnswer(ctx, name === 'SyntaxError' ? 'not JSON' : 'unreadable');
  }
  const rawMessage = typeof e.message === 'string' ? e.message : '';
  const detail = scrubText(rawMessage, ctx.scrub ?? [])
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 300);
  const where = `secret ${ctx.secretId} in region ${ctx.region}`;
  const action = `secretsmanager:${ctx.op}`;
  const cause = sanitizedCause(e, detail);

  const make = (code: ErrorCode, message: string, retryable: boolean, hint?: string) =>
    new KeyrotorError(code, scrubText(message, ctx.scrub ?? []), {
      stage: ctx.stage,
      retryable,
      cause,
      ...(hint ? { hint } : {}),
    });
  const withDetail = (m: string) => (detail ? `${m} (AWS: ${name}: ${detail})` : `${m} (AWS: ${name})`);

  if (name === 'ResourceNotFoundException' || (status === 404 && !THROTTLING.has(name))) {
    if (ctx.versionId) {
      return make(
        'STORE_NOT_FOUND',
        withDetail(`version ${ctx.versionId} of ${where} not found during ${ctx.op}`),
        false,
      );
    }
    return make(
      'STORE_NOT_FOUND',
      `secret ${ctx.secretId} does not exist in region ${ctx.region}; create it first`,
      false,
      `aws secretsmanager create-secret --name ${ctx.secretId} --region ${ctx.region} (without a value: keyrotor writes the first one)`,
    );
  }
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || status === 403) {
    return make(
      'STORE_ACCESS_DENIED',
      withDetail(`access denied: ${action} on ${where}`),
      false,
      `allow ${action} on this secret for the identity keyrotor runs as` +
        (ctx.op === 'GetSecretValue' || ctx.op === 'PutSecretValue'
          ? ' (and kms:Decrypt / kms:GenerateDataKey on its KMS key if it uses a customer-managed key)'
          : ''),
    );
  }
  if (name === 'DecryptionFailure' || name === 'EncryptionFailure') {
    const kms = name === 'DecryptionFailure' ? 'kms:Decrypt' : 'kms:GenerateDataKey';
    return make(
      'STORE_ACCESS_DENIED',
      withDetail(`KMS refused ${ctx.op} on ${where}`),
      false,
      `allow ${kms} on the secret's KMS key for the identity keyrotor runs as`,
    );
  }
  if (BAD_CREDENTIALS.has(name) || status === 401) {
    return make(
      'STORE_ACCESS_DENIED',
      withDetail(`AWS rejected the credentials used for ${action} on ${where}`),
      false,
      'check the AWS credentials (profile, role or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) keyrotor runs with',
    );
  }
  if (name === 'CredentialsProviderError') {
    return make(
      'STORE_ACCESS_DENIED',
      `no AWS credentials found for ${action} on ${where}`,
      false,
      'configure credentials: an instance/task role, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY',
    );
  }
  if (THROTTLING.has(name) || status === 429) {
    return make('STORE_UNAVAILABLE', withDetail(`Secrets Manager throttled ${ctx.op} on ${where}`), true);
  }
  if (SERVER_SIDE.has(name) || (status !== undefined && status >= 500)) {
    return make(
      'STORE_UNAVAILABLE',
      withDetail(`Secrets Manager failed ${ctx.op} on ${where} (HTTP ${status ?? '5xx'})`),
      true,
    );
  }
  const net = status === undefined ? networkCode(err) : undefined;
  if (net) {
    return make(
      'STORE_UNAVAILABLE',
      `cannot reach Secrets Manager for ${ctx.op} on ${where} (${net})`,
      true,
      'check the network path / endpoint to Secrets Manager',
    );
  }
  if (name === 'ResourceExistsException') {
    return make(
      'STORE_CONFLICT',
      withDetail(
        `${ctx.op} on ${where}: version ${ctx.versionId ?? '(unknown)'} already exists with different content (a ClientRequestToken derived from this rotation id was reused with another value)`,
      ),
      false,
      'the rotation id was reused for a different value; start a new rotation',
    );
  }
  if (name === 'LimitExceededException') {
    return make(
      'STORE_CONFLICT',
      withDetail(`${ctx.op} on ${where} would exceed a Secrets Manager quota (versions or staging labels)`),
      false,
      'remove stale staging labels from old versions of the secret',
    );
  }
  if (name === 'InvalidRequestException') {
    return make(
      'STORE_CONFLICT',
      withDetail(`Secrets Manager refused ${ctx.op} on ${where} in its current state (e.g. scheduled for deletion)`),
      false,
    );
  }
  if (name === 'InvalidParameterException' || name === 'ValidationException') {
    return make(
      'STORE_CONFLICT',
      withDetail(
        `Secrets Manager rejected ${ctx.op} on ${where} (staging labels changed underneath, or a bad parameter)`,
      ),
      false,
    );
  }
  return make(
    'STORE_UNAVAILABLE',
    withDetail(`unexpected error from ${ctx.op} on ${where}${status ? ` (HTTP ${status})` : ''}`),
    false,
  );
}
