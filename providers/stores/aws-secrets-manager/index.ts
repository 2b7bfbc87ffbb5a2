import { KeyrotorError } from '../../../src/core/errors.ts';
import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { AwsSecretsManagerStoreConfig } from './aws-secrets-manager.schema.ts';

// Not built yet (issue 3). Fails with a clear configuration error instead of doing anything.
export async function createAwsSecretsManagerStore(_cfg: AwsSecretsManagerStoreConfig, _ctx: ProviderContext): Promise<SecretStore> {
  throw new KeyrotorError('CONFIG_INVALID', 'store type "aws-secrets-manager" is not available in this version of keyrotor yet');
}
