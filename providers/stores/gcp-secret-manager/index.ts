import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { GcpSecretManagerStoreConfig } from './gcp-secret-manager.schema.ts';
import { createGcpClient, GcpSecretManagerStore, type GcpStoreOptions } from './gcp-secret-manager.store.ts';

export { GcpSecretManagerStore } from './gcp-secret-manager.store.ts';
export type { GcpStoreOptions } from './gcp-secret-manager.store.ts';

/**
 * GCP Secret Manager store. Consumers read the `current` alias
 * (`projects/<p>/secrets/<s>/versions/current`); see gcp-secret-manager.store.ts for the layout.
 * The secret must exist (the store never creates it); the client uses Application Default Credentials.
 */
export async function createGcpSecretManagerStore(
  cfg: GcpSecretManagerStoreConfig,
  ctx: ProviderContext,
  opts: GcpStoreOptions = {},
): Promise<SecretStore & { close(): Promise<void> }> {
  return new GcpSecretManagerStore(cfg, ctx, await createGcpClient(cfg), opts);
}
