/** What every backend shares for the webhook outbox (OutboxEntry in core/ports.ts). */
import { KeyrotorError } from '../../core/errors.ts';
import { OUTBOX_ID_RE, type OutboxEntry } from '../../core/ports.ts';

export const OUTBOX_FORMAT = 'keyrotor-outbox/1';

export function checkOutboxId(id: string): void {
  if (!OUTBOX_ID_RE.test(id) || id.includes('..'))
    throw new KeyrotorError('INTERNAL', `invalid outbox entry id ${JSON.stringify(id.slice(0, 40))}`);
}

/** refuse to store what could not be read back */
export function checkOutboxEntry(e: OutboxEntry): void {
  checkOutboxId(e.id);
  if (!Number.isSafeInteger(e.webhook) || e.webhook < 0)
    throw new KeyrotorError('INTERNAL', `outbox entry ${e.id}: webhook must be an index`);
  if (!Number.isSafeInteger(e.attempts) || e.attempts < 0)
    throw new KeyrotorError('INTERNAL', `outbox entry ${e.id}: attempts must be a count`);
  if (Number.isNaN(Date.parse(e.createdAt)))
    throw new KeyrotorError('INTERNAL', `outbox entry ${e.id}: createdAt must be an ISO time`);
  if (typeof e.body !== 'string' || typeof e.webhookName !== 'string')
    throw new KeyrotorError('INTERNAL', `outbox entry ${e.id}: body and webhookName must be strings`);
}

/** a stored entry, or undefined when it is damaged (the caller skips it; it is never deleted silently) */
export function parseOutboxEntry(x: unknown): OutboxEntry | undefined {
  const o = x as Partial<OutboxEntry> | null;
  if (!o || typeof o !== 'object') return undefined;
  const e: OutboxEntry = {
    id: String(o.id),
    webhook: Number(o.webhook),
    webhookName: String(o.webhookName ?? ''),
    body: String(o.body ?? ''),
    createdAt: String(o.createdAt),
    attempts: Number(o.attempts),
  };
  try {
    checkOutboxEntry(e);
    return typeof o.body === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

export const byAge = (a: OutboxEntry, b: OutboxEntry) =>
  a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
