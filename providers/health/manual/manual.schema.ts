import { z } from 'zod';
import { duration } from '../../../src/core/config-fields.ts';

/** Wait for a person: `keyrotor confirm <key>` passes the gate, `keyrotor confirm <key> --reject` rolls back. */
export const manualGateSchema = z
  .object({
    type: z.literal('manual'),
    name: z.string().min(1).optional(),
    /** how long to wait for the decision before rolling back */
    timeout: duration.default(24 * 3_600_000),
    /** how often the decision file is read */
    interval: duration.default(5_000),
  })
  .strict();
export type ManualGateConfig = z.output<typeof manualGateSchema>;
