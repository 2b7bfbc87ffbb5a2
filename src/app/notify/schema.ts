import { z } from 'zod';
import { duration, envName, httpUrl } from '../../core/config-fields.ts';

/** What a webhook can be told about: a result's outcome, or `leaked` for any leak-mode rotation. */
export const NOTIFY_EVENTS = [
  'rotated',
  'rolled_back',
  'needs_attention',
  'leaked',
  'locked',
  'in_progress',
  'waiting',
] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];
export const DEFAULT_NOTIFY_ON: NotifyEvent[] = ['rolled_back', 'needs_attention', 'leaked'];

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name');

/**
 * One entry of the top-level `notifications:` list in rotation.config.yaml. Joined into the config
 * schema by the lead (`notifications: z.array(webhookConfigSchema).default([])`); parsing an already
 * parsed value gives the same value.
 */
export const webhookConfigSchema = z
  .object({
    /** shown in logs instead of the URL (webhook URLs often carry a token) */
    name: z.string().min(1).optional(),
    /** the endpoint; may use ${ENV} interpolation. Exactly one of url / urlEnv */
    url: httpUrl.optional(),
    /** env var holding the endpoint (e.g. a Slack incoming-webhook URL, which is a secret) */
    urlEnv: envName.optional(),
    /** which results to send (default rolled_back, needs_attention, leaked; add `rotated` for success) */
    on: z.array(z.enum(NOTIFY_EVENTS)).min(1).default(DEFAULT_NOTIFY_ON),
    /** `generic` JSON (default) or a Slack-compatible `{ text, blocks }` body */
    format: z.enum(['generic', 'slack']).default('generic'),
    /** extra headers whose values come from env vars: `{ Authorization: WEBHOOK_AUTH }` */
    headersFromEnv: z.record(headerName, envName).default({}),
    /** only these keys (default: every key) */
    keys: z.array(z.string().min(1)).min(1).optional(),
    /** per attempt */
    timeout: duration.default(10_000),
    /** tries in all (the first one included) */
    attempts: z.number().int().min(1).max(20).default(5),
    /** first backoff, doubled after each failed try (with jitter), capped at 60 s; Retry-After wins */
    backoff: duration.default(1_000),
  })
  .strict()
  .superRefine((w, ctx) => {
    if ((w.url === undefined) === (w.urlEnv === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'set exactly one of url or urlEnv' });
    }
  });

export const notificationsConfigSchema = z.array(webhookConfigSchema);

export type WebhookConfig = z.output<typeof webhookConfigSchema>;
