import { KeyrotorError } from '../../../src/core/errors.ts';
import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { GcpSecretManagerStoreConfig } from './gcp-secret-manager.schema.ts';

// Not built yet (issue 3). Fails with a clear configuration error instead of doing anything.
export async function createGcpSecretManagerStore(_cfg: GcpSecretManagerStoreConfig, _ctx: ProviderContext): Promise<SecretStore> {
  throw new KeyrotorError('CONFIG_INVALID', 'store type "gcp-secret-manager" is not available in this version of keyrotor yet');
}
