import { z } from 'zod';

const secretId = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,255}$/, 'a Secret Manager secret id: 1-255 letters, digits, - or _');

export const gcpSecretManagerStoreSchema = z
  .object({
    type: z.literal('gcp-secret-manager'),
    project: z.string().min(1),
    /** secret id (short name) consumers read: `versions/latest` (recommended) or the `current` alias */
    secret: z.string().min(1),
    /**
     * side secret that holds staged, not yet verified values (never read by consumers);
     * default `<secret>-keyrotor-pending`
     */
    pendingSecret: secretId.optional(),
    /**
     * create the side secret on the first stage when it is missing (needs secretmanager.secrets.create on
     * the project); false = it must exist already
     */
    createPendingSecret: z.boolean().default(true),
    /** custom endpoint (tests: loopback gRPC fake) */
    apiEndpoint: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    /** plaintext gRPC; only for a loopback test endpoint */
    insecure: z.boolean().default(false),
  })
  .strict();
export type GcpSecretManagerStoreConfig = z.output<typeof gcpSecretManagerStoreSchema>;
