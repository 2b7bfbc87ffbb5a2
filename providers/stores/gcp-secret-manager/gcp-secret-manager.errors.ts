/**
 * GCP Secret Manager errors -> KeyrotorError, in one place. The client (google-gax over gRPC)
 * rejects with an Error carrying the numeric gRPC status in `code` and the server's text in
 * `details`; we branch on `code` only. Messages are ours, name the resource (and the IAM
 * permission when access is denied), and carry the server's text only after scrubbing.
 */
import { KeyrotorError } from '../../../src/core/errors.ts';
import { scrubText } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';

/** gRPC status codes (google.rpc.Code), as numbers so this file needs no SDK import. */
export const GRPC = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const CODE_NAMES = Object.fromEntries(Object.entries(GRPC).map(([k, v]) => [v, k])) as Record<number, string>;

export type GcpOperation =
  | 'getSecret'
  | 'createSecret'
  | 'updateSecret'
  | 'addSecretVersion'
  | 'accessSecretVersion'
  | 'getSecretVersion'
  | 'listSecretVersions'
  | 'disableSecretVersion'
  | 'destroySecretVersion';

/** The IAM permission each call needs (named in STORE_ACCESS_DENIED). */
export const PERMISSION: Record<GcpOperation, string> = {
  getSecret: 'secretmanager.secrets.get',
  createSecret: 'secretmanager.secrets.create',
  updateSecret: 'secretmanager.secrets.update',
  addSecretVersion: 'secretmanager.versions.add',
  accessSecretVersion: 'secretmanager.versions.access',
  getSecretVersion: 'secretmanager.versions.get',
  listSecretVersions: 'secretmanager.versions.list',
  disableSecretVersion: 'secretmanager.versions.disable',
  destroySecretVersion: 'secretmanager.versions.destroy',
};

export interface GcpErrorContext {
  op: GcpOperation;
  /** `projects/<p>/secrets/<s>` */
  secretName: string;
  /** version number or alias, for version calls */
  version?: string | undefined;
  stage?: Stage | undefined;
}

/** The numeric gRPC status of a client error, if it has one. */
export function grpcCode(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The server's text, scrubbed and shortened; safe for a message. */
export function serverDetail(e: unknown): string {
  const raw = (e as { details?: unknown } | null)?.details;
  const text = typeof raw === 'string' && raw ? raw : e instanceof Error ? e.message : String(e);
  const one = scrubText(text).replace(/\s+/g, ' ').trim();
  return one.length > 200 ? `${one.slice(0, 197)}...` : one;
}

/**
 * A secret-free stand-in for the SDK error, kept as `cause`: the raw error can carry server text
 * and metadata we do not control, so only the code and the scrubbed detail travel on.
 */
function safeCause(e: unknown): Error {
  const code = grpcCode(e);
  return Object.assign(new Error(`${code === undefined ? 'error' : (CODE_NAMES[code] ?? code)}: ${serverDetail(e)}`), {
    code,
  });
}

const WRITES: ReadonlySet<GcpOperation> = new Set([
  'createSecret',
  'updateSecret',
  'addSecretVersion',
  'disableSecretVersion',
  'destroySecretVersion',
]);

/**
 * An OK answer without the fields the call answers with (no etag, an empty or foreign name, a version
 * without payload): retryable, because every store step re-reads before it writes (aliases by etag,
 * added versions found again through the pending marker), so a retry converges either way.
 */
export function malformedAnswer(c: GcpErrorContext, what: string): KeyrotorError {
  const target = c.version === undefined ? `secret ${c.secretName}` : `version ${c.version} of secret ${c.secretName}`;
  const maybe = WRITES.has(c.op) ? '; the change may or may not have taken effect' : '';
  return new KeyrotorError(
    'STORE_UNAVAILABLE',
    `Secret Manager sent a malformed answer to ${c.op} on ${target} (${what})${maybe}`,
    {
      stage: c.stage,
      retryable: true,
      hint: 'usually a proxy or gateway between keyrotor and Secret Manager; retry the rotation (it re-reads the secret first)',
    },
  );
}

export function mapGcpError(e: unknown, c: GcpErrorContext): KeyrotorError {
  if (e instanceof KeyrotorError) return e;
  const code = grpcCode(e);
  const codeName = code === undefined ? 'no gRPC status' : (CODE_NAMES[code] ?? String(code));
  const target = c.version === undefined ? `secret ${c.secretName}` : `version ${c.version} of secret ${c.secretName}`;
  const base = { stage: c.stage, cause: safeCause(e) };
  const detail = serverDetail(e);
  const permission = PERMISSION[c.op];

  switch (code) {
    case GRPC.NOT_FOUND:
      if (
        c.version === undefined ||
        c.op === 'getSecret' ||
        c.op === 'updateSecret' ||
        c.op === 'addSecretVersion' ||
        c.op === 'listSecretVersions'
      ) {
        const [, project, secret] = /^projects\/([^/]+)\/secrets\/(.+)$/.exec(c.secretName) ?? [];
        return new KeyrotorError('STORE_NOT_FOUND', `secret ${c.secretName} does not exist; create it first`, {
          ...base,
          retryable: false,
          hint: `gcloud secrets create ${secret ?? '<secret>'} --project ${project ?? '<project>'} --replication-policy automatic`,
        });
      }
      return new KeyrotorError('STORE_NOT_FOUND', `${target} does not exist`, { ...base, retryable: false });
    case GRPC.PERMISSION_DENIED:
      return new KeyrotorError(
        'STORE_ACCESS_DENIED',
        `permission ${permission} denied on secret ${c.secretName} (${c.op})`,
        {
          ...base,
          retryable: false,
          hint:
            c.op === 'createSecret'
              ? `grant ${permission} on the project, or create ${c.secretName} yourself (same replication as the secret consumers read) and set createPendingSecret: false`
              : `grant the identity keyrotor runs as a role with ${permission} on the secret (e.g. roles/secretmanager.admin on that secret only)`,
        },
      );
    case GRPC.UNAUTHENTICATED:
      return new KeyrotorError(
        'STORE_ACCESS_DENIED',
        `GCP rejected the credentials for ${c.op} on secret ${c.secretName}`,
        {
          ...base,
          retryable: false,
          hint: 'check Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, gcloud auth application-default login)',
        },
      );
    case GRPC.UNAVAILABLE:
      // grpc-js reports a failing credentials plugin (no ADC found) as UNAVAILABLE: not transient
      if (/Getting metadata from plugin failed/i.test(detail)) {
        return new KeyrotorError(
          'STORE_ACCESS_DENIED',
          `could not get GCP credentials for ${c.op} on secret ${c.secretName}: ${detail}`,
          {
            ...base,
            retryable: false,
            hint: 'configure Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or workload identity)',
          },
        );
      }
      return new KeyrotorError(
        'STORE_UNAVAILABLE',
        `GCP Secret Manager unavailable for ${c.op} on ${target} (${codeName}): ${detail}`,
        { ...base, retryable: true },
      );
    case GRPC.DEADLINE_EXCEEDED:
    case GRPC.RESOURCE_EXHAUSTED:
    case GRPC.INTERNAL:
    case GRPC.UNKNOWN:
    case GRPC.CANCELLED:
      return new KeyrotorError(
        'STORE_UNAVAILABLE',
        `GCP Secret Manager failed ${c.op} on ${target} (${codeName}): ${detail}`,
        { ...base, retryable: true },
      );
    case GRPC.ABORTED:
      return new KeyrotorError(
        'STORE_CONFLICT',
        `concurrent change to secret ${c.secretName} during ${c.op} (${codeName})`,
        {
          ...base,
          retryable: true,
          hint: 'another writer changed the secret at the same time; retry',
        },
      );
    case GRPC.ALREADY_EXISTS:
      return new KeyrotorError(
        'STORE_CONFLICT',
        `${target}: ${c.op} conflicts with existing state (${codeName}): ${detail}`,
        { ...base, retryable: false },
      );
    case GRPC.FAILED_PRECONDITION:
      return new KeyrotorError('STORE_CORRUPT', `${target} cannot be used for ${c.op} (${codeName}): ${detail}`, {
        ...base,
        retryable: false,
        hint: 'a version an alias points to is disabled or destroyed; point the alias at an enabled version or enable it',
      });
    default:
      // INVALID_ARGUMENT, OUT_OF_RANGE, UNIMPLEMENTED, DATA_LOSS, or no gRPC status at all
      return new KeyrotorError(
        'INTERNAL',
        `GCP Secret Manager rejected ${c.op} on ${target} (${codeName}): ${detail}`,
        { ...base, retryable: false },
      );
  }
}
