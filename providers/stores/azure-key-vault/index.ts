import { KeyrotorError } from '../../../src/core/errors.ts';
import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { AzureKeyVaultStoreConfig } from './azure-key-vault.schema.ts';

// Not built yet (issue 3). Fails with a clear configuration error instead of doing anything.
export async function createAzureKeyVaultStore(_cfg: AzureKeyVaultStoreConfig, _ctx: ProviderContext): Promise<SecretStore> {
  throw new KeyrotorError('CONFIG_INVALID', 'store type "azure-key-vault" is not available in this version of keyrotor yet');
}
