/**
 * Azure SDK errors -> KeyrotorError, in one place. Branches on `RestError.statusCode` and the Key Vault
 * error `code` / `innererror.code` (from `err.details`), never on message text. Messages name the
 * operation, the secret and the missing permission; they never carry a value, and the SDK error (whose
 * non-enumerable `request` holds the request body) is not chained: `cause` is a small plain summary.
 */
import { KeyrotorError } from '../../../src/core/errors.ts';
import { scrubText } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';

/** The four data-plane operations the store uses. */
export type AzureOp = 'getSecret' | 'setSecret' | 'listVersions' | 'updateProperties';

/** RBAC data action each operation needs (built-in role "Key Vault Secrets Officer" has all four). */
export const DATA_ACTIONS: Record<AzureOp, string> = {
  getSecret: 'Microsoft.KeyVault/vaults/secrets/getSecret/action',
  setSecret: 'Microsoft.KeyVault/vaults/secrets/setSecret/action',
  listVersions: 'Microsoft.KeyVault/vaults/secrets/readMetadata/action',
  updateProperties: 'Microsoft.KeyVault/vaults/secrets/update/action',
};

/** The same, for vaults that use access policies instead of RBAC. */
const ACCESS_POLICY_PERMISSION: Record<AzureOp, string> = {
  getSecret: 'get',
  setSecret: 'set',
  listVersions: 'list',
  updateProperties: 'set',
};

const VERB: Record<AzureOp, string> = {
  getSecret: 'reading',
  setSecret: 'writing a new version of',
  listVersions: 'listing the versions of',
  updateProperties: 'updating a version of',
};

export const SECRETS_ROLE = 'Key Vault Secrets Officer';

export interface AzureErrorFacts {
  name: string | undefined;
  statusCode: number | undefined;
  code: string | undefined;
  innerCode: string | undefined;
}

/** The few fields we branch on, read defensively from whatever was thrown. */
export function azureErrorFacts(e: unknown): AzureErrorFacts {
  const o = (typeof e === 'object' && e !== null ? e : {}) as {
    name?: unknown;
    statusCode?: unknown;
    code?: unknown;
    details?: { error?: { code?: unknown; innerError?: { code?: unknown } } };
  };
  const inner = o.details?.error?.innerError?.code;
  return {
    name: typeof o.name === 'string' ? o.name : undefined,
    statusCode: typeof o.statusCode === 'number' ? o.statusCode : undefined,
    code: typeof o.code === 'string' ? o.code : undefined,
    innerCode: typeof inner === 'string' ? inner : undefined,
  };
}

export function isNotFound(e: unknown): boolean {
  const f = azureErrorFacts(e);
  return f.statusCode === 404;
}

/** 403 because the version is disabled (not a permission problem). */
export function isDisabled(e: unknown): boolean {
  const f = azureErrorFacts(e);
  return f.statusCode === 403 && f.innerCode === 'SecretDisabled';
}

/**
 * A 200 the SDK could not use: JSON that does not parse (`PARSE_ERROR` with a 2xx status), or a body
 * without the fields the SDK needs (its deserializers then throw a plain TypeError, its pager a
 * RestError with neither status nor code). A proxy's error page, a cut-off body, a half-written answer.
 */
export function isMalformed(e: unknown): boolean {
  const f = azureErrorFacts(e);
  if (f.statusCode !== undefined && f.statusCode >= 200 && f.statusCode < 300) return true;
  if (f.name === 'TypeError' || f.name === 'SyntaxError') return true;
  return f.name === 'RestError' && f.statusCode === undefined && f.code === undefined;
}

/**
 * The one error for an answer that cannot be trusted: retryable, because the store's calls are
 * idempotent and re-read before they write, so a retry converges whether or not the call took effect.
 */
export function malformedAnswer(ctx: AzureErrorContext, what: string): KeyrotorError {
  const writes = ctx.op === 'setSecret' || ctx.op === 'updateProperties';
  return new KeyrotorError(
    'STORE_UNAVAILABLE',
    `the vault sent a malformed answer while ${VERB[ctx.op]} ${ctx.target} (${what})${writes ? '; the change may or may not have taken effect' : ''}`,
    {
      stage: ctx.stage,
      retryable: true,
      hint: 'usually a proxy or gateway between keyrotor and the vault garbling answers; retry the rotation (it re-reads the vault first)',
    },
  );
}

export interface AzureErrorContext {
  op: AzureOp;
  /** e.g. `azure-key-vault:https://x.vault.azure.net/secrets/openai-key--pending` */
  target: string;
  stage?: Stage | undefined;
}

export function mapAzureError(e: unknown, ctx: AzureErrorContext): KeyrotorError {
  if (e instanceof KeyrotorError) return e;
  const f = azureErrorFacts(e);
  const cause = { ...f };
  const base = { stage: ctx.stage, cause };
  const what = `${VERB[ctx.op]} ${ctx.target}`;
  const status = f.statusCode;
  const codes = [f.code, f.innerCode].filter(Boolean).join('/');
  const tag = `${status ?? 'no response'}${codes ? ` ${codes}` : ''}`;

  // @azure/identity: no usable credential / token request refused
  if (f.name === 'CredentialUnavailableError' || f.name === 'AggregateAuthenticationError') {
    return new KeyrotorError('STORE_ACCESS_DENIED', `no Azure credential is available for ${what}`, {
      ...base,
      retryable: false,
      hint: 'sign in with `az login`, or configure a managed identity / workload identity / AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET',
    });
  }
  if (f.name === 'AuthenticationError') {
    const transient = status === undefined || status === 429 || status >= 500;
    return new KeyrotorError(
      transient ? 'STORE_UNAVAILABLE' : 'STORE_ACCESS_DENIED',
      `Microsoft Entra ID refused a token for ${what} (${tag})`,
      {
        ...base,
        retryable: transient,
        ...(transient
          ? {}
          : { hint: 'check the tenant, client id and secret/certificate of the identity keyrotor runs as' }),
      },
    );
  }
  if (f.name === 'AbortError') {
    return new KeyrotorError('STORE_UNAVAILABLE', `${what} was aborted`, { ...base, retryable: true });
  }

  if (isMalformed(e)) {
    return malformedAnswer(ctx, f.code === 'PARSE_ERROR' ? 'not JSON' : 'not the expected shape');
  }

  if (status === undefined) {
    // RestError REQUEST_SEND_ERROR / PARSE_ERROR, socket errors: the vault was not reached or answered garbage
    const looksNetwork =
      f.name === 'RestError' ||
      (f.code !== undefined && /^(E[A-Z]+|REQUEST_SEND_ERROR|PARSE_ERROR|UND_ERR\w*)$/.test(f.code));
    if (looksNetwork) {
      return new KeyrotorError(
        'STORE_UNAVAILABLE',
        `the vault could not be reached while ${what} (${f.code ?? 'network error'})`,
        { ...base, retryable: true },
      );
    }
    const message = e instanceof Error ? e.message : String(e);
    return new KeyrotorError('INTERNAL', `unexpected error while ${what}: ${scrubText(message)}`, {
      ...base,
      retryable: false,
    });
  }

  if (status === 401) {
    return new KeyrotorError('STORE_ACCESS_DENIED', `the vault rejected the credential while ${what} (${tag})`, {
      ...base,
      retryable: false,
      hint: 'the token is for the wrong tenant or resource, or expired: check the identity keyrotor runs as',
    });
  }
  if (status === 403 && f.innerCode === 'SecretDisabled') {
    return new KeyrotorError('STORE_CONFLICT', `${what} failed: the version is disabled (${tag})`, {
      ...base,
      retryable: false,
      hint: 'a disabled latest version means consumers cannot read the secret: enable the right version or run the rotation again',
    });
  }
  if (status === 403) {
    return new KeyrotorError(
      'STORE_ACCESS_DENIED',
      `access denied ${what}: the caller lacks the data action ${DATA_ACTIONS[ctx.op]} (${tag})`,
      {
        ...base,
        retryable: false,
        hint: `assign the built-in role "${SECRETS_ROLE}" on the vault to the identity keyrotor runs as (or, with access policies, grant secret permissions get, list, set; this call needs "${ACCESS_POLICY_PERMISSION[ctx.op]}"); also check the vault firewall`,
      },
    );
  }
  if (status === 404) {
    return new KeyrotorError('STORE_NOT_FOUND', `${what} failed: not found (${tag})`, {
      ...base,
      retryable: false,
      hint: 'check vaultUrl and the secret name in rotation.config.yaml',
    });
  }
  if (status === 409) {
    return new KeyrotorError('STORE_CONFLICT', `${what} failed: conflict (${tag})`, {
      ...base,
      retryable: false,
      hint: 'the secret name may be deleted but recoverable (soft delete): recover it (`az keyvault secret recover`) or purge it first',
    });
  }
  if (status === 408 || status === 429 || status >= 500) {
    return new KeyrotorError('STORE_UNAVAILABLE', `the vault is unavailable or throttling while ${what} (${tag})`, {
      ...base,
      retryable: true,
    });
  }
  return new KeyrotorError('STORE_CONFLICT', `the vault refused ${what} (${tag})`, { ...base, retryable: false });
}
