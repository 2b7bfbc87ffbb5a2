/** Azure Key Vault store (side secret `<name>--pending`, see azure-key-vault.store.ts). */
export { createAzureKeyVaultStore } from './azure-key-vault.store.ts';
export type { AzureKeyVaultStoreDeps } from './azure-key-vault.store.ts';
export type { TokenCredential } from './azure-key-vault.store.ts';
