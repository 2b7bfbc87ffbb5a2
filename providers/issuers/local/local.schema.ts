import { z } from 'zod';

/** The embedded default issuer: random secrets generated locally, registry kept in the state dir. */
export const localIssuerSchema = z
  .object({
    type: z.literal('local'),
    /** prefix of generated values */
    prefix: z
      .string()
      .regex(/^[a-z0-9-]{0,16}$/)
      .default('kr-local-'),
    /** random bytes per value (base64url encoded) */
    bytes: z.number().int().min(16).max(128).default(32),
  })
  .strict();
export type LocalIssuerConfig = z.output<typeof localIssuerSchema>;
