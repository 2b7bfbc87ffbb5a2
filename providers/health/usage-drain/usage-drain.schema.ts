import { z } from 'zod';
import { duration } from '../../../src/core/config-fields.ts';

/**
 * Drain evidence from the issuer's key list (OpenAI `last_used_at`): the new key has been used since
 * it was promoted, and the old key has not been used for `quiet`.
 */
export const usageDrainGateSchema = z
  .object({
    type: z.literal('usage-drain'),
    name: z.string().min(1).optional(),
    /** the old key must show no use for this long (choose it well above the issuer's reporting lag) */
    quiet: duration.default(15 * 60_000),
    /** also require that the new key was used after promotion (some consumer really switched) */
    requireNewKeyUse: z.boolean().default(true),
    timeout: duration.default(2 * 3_600_000),
    interval: duration.default(60_000),
  })
  .strict()
  .refine((g) => g.timeout > g.quiet, {
    message: 'timeout must be longer than quiet (the old key must stay quiet for `quiet` before the deadline)',
    path: ['timeout'],
  });
export type UsageDrainGateConfig = z.output<typeof usageDrainGateSchema>;
