import { z } from 'zod';

/**
 * `audit:` in rotation.config.yaml (top level). Joined into the config schema by the lead
 * (`audit: auditConfigSchema.default({})`); parsing an already parsed value gives the same value.
 */
export const auditConfigSchema = z
  .object({
    /** record every transition and result (default true) */
    enabled: z.boolean().default(true),
    /** the JSONL file, relative to the config file (default `<stateDir>/audit/audit.jsonl`) */
    path: z.string().min(1).optional(),
    /** also write each record to the log (stderr), e.g. where logs are shipped (Lambda, Cloud Run) */
    mirrorToLog: z.boolean().default(false),
  })
  .strict();

export type AuditConfig = z.output<typeof auditConfigSchema>;
