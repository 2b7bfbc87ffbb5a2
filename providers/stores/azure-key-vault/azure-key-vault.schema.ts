import { z } from 'zod';
import { httpUrl } from '../../../src/core/config-fields.ts';

export const azureKeyVaultStoreSchema = z
  .object({
    type: z.literal('azure-key-vault'),
    /** https://<vault>.vault.azure.net */
    vaultUrl: httpUrl,
    /** secret name consumers read */
    name: z.string().regex(/^[0-9a-zA-Z-]{1,127}$/, 'Key Vault secret names are 1-127 of 0-9 a-z A-Z -'),
  })
  .strict();
export type AzureKeyVaultStoreConfig = z.output<typeof azureKeyVaultStoreSchema>;
