/**
 * Secrets Manager's own (native) rotation, SDK-free part: how the Lambda entry point tells this store
 * which version id AWS chose for a rotation, and how a rotation event's SecretId is matched to a store.
 *
 * With native rotation AWS picks the new version's id (the event's `ClientRequestToken`) and, on real
 * AWS, has already created that version (no value, label AWSPENDING) before calling the Lambda. keyrotor
 * normally derives its ClientRequestToken from the rotation id; here it must write the new value into
 * AWS's version instead. The handler records the token in the key's provider state before the rotation
 * starts (`{ token }`); the store's `stage` uses it and binds it to its rotation (`{ token, rotationId }`),
 * so the token is used by exactly one rotation and never reused with another value.
 */

/** provider-state key holding the native rotation token of one secret */
export function nativeTokenKey(secretId: string): string {
  return `aws-secrets-manager.rotationToken:${secretId}`;
}

export interface NativeToken {
  /** the event's ClientRequestToken = the VersionId of the new version */
  token: string;
  /** the keyrotor rotation that staged into it (set by the store at stage) */
  rotationId?: string | undefined;
}

/** AWS accepts 32-64 characters; keep to what a UUID-like token can hold */
export const TOKEN_RE = /^[A-Za-z0-9-]{32,64}$/;

export function parseNativeToken(raw: string | undefined): NativeToken | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as unknown;
    if (!v || typeof v !== 'object') return undefined;
    const { token, rotationId } = v as { token?: unknown; rotationId?: unknown };
    if (typeof token !== 'string' || !TOKEN_RE.test(token)) return undefined;
    return { token, ...(typeof rotationId === 'string' && rotationId ? { rotationId } : {}) };
  } catch {
    return undefined;
  }
}

export function formatNativeToken(t: NativeToken): string {
  return JSON.stringify({ token: t.token, ...(t.rotationId ? { rotationId: t.rotationId } : {}) });
}

/**
 * Does a rotation event's SecretId (AWS sends the full ARN: `arn:aws:secretsmanager:<region>:<account>:
 * secret:<name>-<6 random chars>`) name the secret a store is configured with (a name or an ARN)?
 */
export function secretIdMatches(configured: string, fromEvent: string): boolean {
  if (configured === fromEvent) return true;
  const a = parseArn(configured);
  const b = parseArn(fromEvent);
  if (a && b) {
    // a partial ARN (without the random suffix) matches the full one
    return a.region === b.region && a.account === b.account && (a.name === b.name || stripSuffix(b.name) === a.name);
  }
  if (!a && b) return stripSuffix(b.name) === configured || b.name === configured;
  if (a && !b) return stripSuffix(a.name) === fromEvent || a.name === fromEvent;
  return false;
}

interface Arn {
  region: string;
  account: string;
  name: string;
}

function parseArn(s: string): Arn | undefined {
  // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
  const m = /^arn:[^:]+:secretsmanager:([^:]*):([^:]*):secret:(.+)$/.exec(s);
  return m ? { region: m[1]!, account: m[2]!, name: m[3]! } : undefined;
}

function stripSuffix(name: string): string {
  return name.replace(/-[A-Za-z0-9]{6}$/, '');
}
