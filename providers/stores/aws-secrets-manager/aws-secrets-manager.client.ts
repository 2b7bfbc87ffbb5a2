/**
 * Client setup for the AWS Secrets Manager store, and the read-only inspection the native-rotation
 * Lambda handler makes (labels only, never a value).
 */
import {
  DescribeSecretCommand,
  SecretsManagerClient,
  type DescribeSecretCommandOutput,
} from '@aws-sdk/client-secrets-manager';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { AwsSecretsManagerStoreConfig } from './aws-secrets-manager.schema.ts';
import { mapAwsError } from './aws-secrets-manager.errors.ts';
import { parseMetaLabel } from './aws-secrets-manager.labels.ts';

function regionFromArn(secretId: string): string | undefined {
  // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
  const parts = secretId.split(':');
  return parts[0] === 'arn' && parts[2] === 'secretsmanager' && parts[3] ? parts[3] : undefined;
}

export function buildClient(cfg: AwsSecretsManagerStoreConfig, env: NodeJS.ProcessEnv): SecretsManagerClient {
  const region = cfg.region ?? regionFromArn(cfg.secretId) ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  return new SecretsManagerClient({
    ...(region ? { region } : {}),
    ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
    // credentials from the injected environment when it has them; otherwise the SDK's default chain
    ...(accessKeyId && secretAccessKey
      ? {
          credentials: {
            accessKeyId,
            secretAccessKey,
            ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
          },
        }
      : {}),
  });
}

export async function regionOf(client: SecretsManagerClient, cfg: AwsSecretsManagerStoreConfig): Promise<string> {
  try {
    return await client.config.region();
  } catch {
    throw new KeyrotorError('CONFIG_INVALID', `aws-secrets-manager store ${cfg.secretId}: no AWS region configured`, {
      hint: 'set `region` on the store, use a full secret ARN, or set AWS_REGION',
    });
  }
}

/** What the native-rotation handler needs to know about the secret and the event's version (labels only). */
export interface NativeRotationView {
  /** labels on the version with id = token; null when no such version is listed */
  tokenStages: string[] | null;
  /** the keyrotor rotation that wrote the token's version (from its `kr:` label) */
  tokenRotationId: string | undefined;
  rotationEnabled: boolean;
}

/** Read the secret's labels for the native rotation handler (one DescribeSecret; never a value). */
export async function inspectNativeRotation(
  cfg: AwsSecretsManagerStoreConfig,
  env: NodeJS.ProcessEnv,
  token: string,
): Promise<NativeRotationView> {
  const client = buildClient(cfg, env);
  try {
    const region = await regionOf(client, cfg);
    let out: DescribeSecretCommandOutput;
    try {
      out = await client.send(new DescribeSecretCommand({ SecretId: cfg.secretId }));
    } catch (e) {
      throw mapAwsError(e, { op: 'DescribeSecret', secretId: cfg.secretId, region });
    }
    const raw = out.VersionIdsToStages?.[token];
    const labels = raw && raw.length > 0 ? [...new Set(raw)] : null;
    const meta = labels?.map(parseMetaLabel).find((m) => m !== undefined);
    return { tokenStages: labels, tokenRotationId: meta?.rotationId, rotationEnabled: out.RotationEnabled === true };
  } finally {
    client.destroy();
  }
}
