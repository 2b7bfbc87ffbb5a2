import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { FileStoreConfig } from './file.schema.ts';
import { createFileStoreImpl } from './file.store.ts';

/** The embedded default store: one AES-256-GCM encrypted file per key (see file.store.ts). */
export async function createFileStore(cfg: FileStoreConfig, ctx: ProviderContext): Promise<SecretStore> {
  return createFileStoreImpl(cfg, ctx);
}
