import { KeyrotorError } from '../../../src/core/errors.ts';
import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { FileStoreConfig } from './file.schema.ts';

// placeholder until the file store lands
export async function createFileStore(_cfg: FileStoreConfig, _ctx: ProviderContext): Promise<SecretStore> {
  throw new KeyrotorError('CONFIG_INVALID', 'store type "file" is not available yet');
}
