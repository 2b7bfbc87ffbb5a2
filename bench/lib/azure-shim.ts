/**
 * Stand-in for providers/stores/azure-key-vault/index.ts inside the benchmark process (swapped in by a
 * module resolve hook in bench/run.ts): the same store, built with a stub credential and the Azure
 * fake's CA, because DefaultAzureCredential cannot reach Entra ID here. The SDK still talks HTTPS to
 * the fake (the same substitution test/entrypoints/fanout.test.ts makes with vi.mock).
 */
import type { ProviderContext, SecretStore } from '../../src/core/ports.ts';
import type { AzureKeyVaultStoreConfig } from '../../providers/stores/azure-key-vault/azure-key-vault.schema.ts';
import {
  createAzureKeyVaultStore as createReal,
  type AzureKeyVaultStoreDeps,
} from '../../providers/stores/azure-key-vault/azure-key-vault.store.ts';

export interface BenchAzure {
  credential: NonNullable<AzureKeyVaultStoreDeps['credential']>;
  clientOptions: NonNullable<AzureKeyVaultStoreDeps['clientOptions']>;
}

export function setBenchAzure(b: BenchAzure): void {
  (globalThis as { __keyrotorBenchAzure?: BenchAzure }).__keyrotorBenchAzure = b;
}

export async function createAzureKeyVaultStore(
  cfg: AzureKeyVaultStoreConfig,
  ctx: ProviderContext,
): Promise<SecretStore> {
  const b = (globalThis as { __keyrotorBenchAzure?: BenchAzure }).__keyrotorBenchAzure;
  if (!b) throw new Error('bench: the Azure fake is not set up');
  return createReal(cfg, ctx, { credential: b.credential, clientOptions: b.clientOptions });
}
