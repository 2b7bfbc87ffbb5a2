import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { AwsSecretsManagerStoreConfig } from './aws-secrets-manager.schema.ts';
import { createAwsSecretsManagerStore as create } from './aws-secrets-manager.store.ts';

/** AWS Secrets Manager store (staging labels AWSPENDING -> AWSCURRENT -> AWSPREVIOUS). */
export function createAwsSecretsManagerStore(
  cfg: AwsSecretsManagerStoreConfig,
  ctx: ProviderContext,
): Promise<SecretStore> {
  return create(cfg, ctx);
}
