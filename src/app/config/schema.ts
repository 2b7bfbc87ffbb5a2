import { z } from 'zod';
import { duration } from '../../core/config-fields.ts';
import { healthConfigSchema, issuerConfigSchema, storeConfigSchema } from '../../../providers/index.ts';
import { auditConfigSchema } from '../audit/schema.ts';
import { notificationsConfigSchema } from '../notify/schema.ts';
import { stateConfigSchema } from '../state/config.ts';

const schedule = z
  .object({
    /** rotate when the current key is this old */
    every: duration,
  })
  .strict();

const defaults = z
  .object({
    schedule: schedule.default({ every: 30 * 86_400_000 }),
    /** extra lifetime past the schedule (expiry safety net = every + grace) */
    grace: duration.default(15 * 60_000),
    verify: z
      .object({ timeout: duration.default(120_000), interval: duration.default(2_000) })
      .strict()
      .default({ timeout: 120_000, interval: 2_000 }),
    revoke: z
      .object({ attempts: z.number().int().min(1).max(20).default(5), backoff: duration.default(2_000) })
      .strict()
      .default({ attempts: 5, backoff: 2_000 }),
    verifyRevoked: z
      .object({ timeout: duration.default(120_000), interval: duration.default(5_000) })
      .strict()
      .default({ timeout: 120_000, interval: 5_000 }),
    /**
     * how long a step that fails retryably keeps trying with backoff before the rotation gives up:
     * preflight's reads and the key create (after its reconciliation) in every rotation, and stage,
     * verify's store reads and promote in leak mode (at least 3 attempts in any case)
     */
    retry: z
      .object({ budget: duration.default(120_000) })
      .strict()
      .default({ budget: 120_000 }),
    /** per-key lease: how long a crashed run blocks others */
    lease: z
      .object({ ttl: duration.default(15 * 60_000) })
      .strict()
      .default({ ttl: 15 * 60_000 }),
    /**
     * Durable waits (docs/operations.md#durable-waits): where a worker parks (daemon, serve, Lambda,
     * `rotate --park`), a rotation whose next check of a wait (a health gate, verify, a revoke
     * backoff) is at least `after` away is saved with its wake time and released; any worker continues
     * it then. `off` (or 0) never parks. Default 30s. Parsed to ms, or null for off.
     */
    park: z
      .object({
        after: z
          .union([z.literal('off'), duration])
          .transform((v) => (v === 'off' || v === 0 ? null : v))
          .default(30_000),
      })
      .strict()
      .default({ after: 30_000 }),
  })
  .strict();

export const keyNamePattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;

const keySchema = z
  .object({
    name: z.string().regex(keyNamePattern, 'key names are 1-63 of a-z 0-9 _ - (starting with a letter or digit)'),
    description: z.string().optional(),
    issuer: issuerConfigSchema,
    stores: z.array(storeConfigSchema).min(1, 'at least one store is required'),
    health: z.array(healthConfigSchema).default([]),
    /** `all` (default): every health gate must pass; `any`: the first gate that passes confirms */
    require: z.enum(['all', 'any']).default('all'),
    schedule: schedule.optional(),
    grace: duration.optional(),
  })
  .strict();

export const configSchema = z
  .object({
    version: z.literal(1),
    /** where state, locks and the file store live; relative to the config file */
    stateDir: z.string().min(1).default('.keyrotor'),
    /** where key records, leases and rotation snapshots live (default: files in stateDir); docs/state-backends.md */
    state: stateConfigSchema.default({ type: 'file' }),
    defaults: defaults.default(defaults.parse({})),
    keys: z.array(keySchema).min(1, 'at least one key is required'),
    /** audit trail of every transition and result (default: on, `<stateDir>/audit/audit.jsonl`) */
    audit: auditConfigSchema.default(auditConfigSchema.parse({})),
    /** webhooks told about rotation results (rolled_back, needs_attention, leaked; optionally rotated) */
    notifications: notificationsConfigSchema.default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Map<string, number>();
    cfg.keys.forEach((k, i) => {
      if (seen.has(k.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['keys', i, 'name'],
          message: `duplicate key name "${k.name}" (also keys[${seen.get(k.name)}])`,
        });
      } else seen.set(k.name, i);
      const names = new Set<string>();
      k.health.forEach((g, j) => {
        const n = g.name ?? g.type;
        if (names.has(n))
          ctx.addIssue({
            code: 'custom',
            path: ['keys', i, 'health', j, 'name'],
            message: `duplicate gate name "${n}"; set a distinct name`,
          });
        names.add(n);
      });
    });
    cfg.notifications.forEach((w, i) => {
      (w.keys ?? []).forEach((k, j) => {
        if (!seen.has(k))
          ctx.addIssue({ code: 'custom', path: ['notifications', i, 'keys', j], message: `unknown key "${k}"` });
      });
    });
  });

export type RawConfig = z.output<typeof configSchema>;
export type KeyConfig = RawConfig['keys'][number];
export type Defaults = RawConfig['defaults'];

/** A key with defaults applied: what compose.ts works from. */
export interface ResolvedKey extends KeyConfig {
  schedule: { every: number };
  grace: number;
  defaults: Defaults;
}

export function configJsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' });
}
