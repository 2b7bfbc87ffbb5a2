import type { ProviderContext, SecretStore } from '../../../src/core/ports.ts';
import type { AzureKeyVaultStoreConfig } from './azure-key-vault.schema.ts';
import { createAzureKeyVaultStoreWith } from './azure-key-vault.store.ts';

export { createAzureKeyVaultStoreWith } from './azure-key-vault.store.ts';
export type { AzureKeyVaultStoreDeps } from './azure-key-vault.store.ts';

/**
 * The registry's factory: authenticates with DefaultAzureCredential (environment, workload identity,
 * managed identity, Azure CLI, ...). `@azure/identity` is loaded only here, when the store is built.
 * Tests and embedders that bring their own credential or pipeline options use
 * `createAzureKeyVaultStoreWith(cfg, ctx, { credential, clientOptions })`.
 */
export async function createAzureKeyVaultStore(
  cfg: AzureKeyVaultStoreConfig,
  ctx: ProviderContext,
): Promise<SecretStore> {
  const { DefaultAzureCredential } = await import('@azure/identity');
  return createAzureKeyVaultStoreWith(cfg, ctx, { credential: new DefaultAzureCredential() });
}
