import { z } from 'zod';
import { duration } from '../../../src/core/config-fields.ts';

/** The new key works at the issuer (polled: propagation is not instant). */
export const issuerSmokeTestGateSchema = z
  .object({
    type: z.literal('issuer-smoke-test'),
    name: z.string().min(1).optional(),
    timeout: duration.default(120_000),
    interval: duration.default(2_000),
    /** also retrieve this model with the new key (OpenAI `GET /v1/models/{model}`), so a key whose
     *  scopes or project access do not cover the model the application uses is caught before the old
     *  key is revoked */
    model: z.string().min(1).optional(),
  })
  .strict();
export type IssuerSmokeTestGateConfig = z.output<typeof issuerSmokeTestGateSchema>;
