/** Webhook notifications about rotation results (see notifier.ts). */
import type { LoadedConfig } from '../config/load.ts';
import { notificationsConfigSchema, type WebhookConfig } from './schema.ts';

export {
  createNotifier,
  resolveTargets,
  type Notifier,
  type NotifierOptions,
  type DeliveryReport,
  type WebhookTarget,
} from './notifier.ts';
export { genericPayload, slackPayload, summary, eventsOf, type GenericPayload } from './payload.ts';
export {
  webhookConfigSchema,
  notificationsConfigSchema,
  NOTIFY_EVENTS,
  DEFAULT_NOTIFY_ON,
  type NotifyEvent,
  type WebhookConfig,
} from './schema.ts';

/** The `notifications` of a loaded config ([] when the config has none). */
export function notificationSettings(cfg: LoadedConfig): WebhookConfig[] {
  return notificationsConfigSchema.parse((cfg.raw as { notifications?: unknown }).notifications ?? []);
}
