import { z } from 'zod';

export const gcpSecretManagerStoreSchema = z
  .object({
    type: z.literal('gcp-secret-manager'),
    project: z.string().min(1),
    /** secret id (short name); consumers read the `current` alias */
    secret: z.string().min(1),
    /** custom endpoint (tests: loopback gRPC fake) */
    apiEndpoint: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    /** plaintext gRPC; only for a loopback test endpoint */
    insecure: z.boolean().default(false),
  })
  .strict();
export type GcpSecretManagerStoreConfig = z.output<typeof gcpSecretManagerStoreSchema>;
