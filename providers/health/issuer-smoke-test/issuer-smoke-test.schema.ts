import { z } from 'zod';
import { duration } from '../../../src/config/fields.ts';

/** The new key works at the issuer (polled: propagation is not instant). */
export const issuerSmokeTestGateSchema = z
  .object({
    type: z.literal('issuer-smoke-test'),
    name: z.string().min(1).optional(),
    timeout: duration.default(120_000),
    interval: duration.default(2_000),
  })
  .strict();
export type IssuerSmokeTestGateConfig = z.output<typeof issuerSmokeTestGateSchema>;
