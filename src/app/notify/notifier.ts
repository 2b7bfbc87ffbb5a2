/**
 * Webhook notifications about rotation results. `onResult` only queues a delivery and returns, so a
 * slow or failing receiver never delays or fails a rotation. Each delivery is retried with doubling
 * backoff and jitter (honouring `Retry-After`) on connection errors, timeouts, 408, 425, 429 and 5xx.
 * A process that is about to exit calls `drain(timeoutMs)`: it waits for pending deliveries up to
 * that bound, then abandons the rest (logged).
 *
 * Logs name a webhook by its `name` or its host only: webhook URLs often carry a token.
 *
 * Durable outbox (`outbox`: the state store): `onResult` first writes each delivery to the store's
 * outbox (the rendered body and the webhook's index and name, never its URL), then delivers it; a 2xx
 * or a permanent rejection (4xx other than 408/429) removes the entry. A delivery that ran out of
 * attempts, was abandoned by `drain`, or whose process crashed stays pending, and the next notifier
 * built over the same store (the next run of any entry point) delivers pending entries first, until
 * the entry is older than `outboxMaxAgeMs` or has had `outboxMaxAttempts` attempts (then it is
 * dropped with a warning). At least once: every request carries the entry id as `Idempotency-Key`
 * (and, in the generic body, as `idempotencyKey`).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { KeyrotorError } from '../../core/errors.ts';
import type { Logger, OutboxEntry, StateStore } from '../../core/ports.ts';
import type { RotationObserver } from '../run.ts';
import { eventsOf, genericPayload, slackPayload } from './payload.ts';
import type { NotifyEvent, WebhookConfig } from './schema.ts';

const MAX_BACKOFF_MS = 60_000;
/** an outbox entry older than this is dropped (with a warning) instead of delivered */
export const DEFAULT_OUTBOX_MAX_AGE_MS = 24 * 3600_000;
/** an outbox entry that had this many attempts, over all runs, is dropped (with a warning) */
export const DEFAULT_OUTBOX_MAX_ATTEMPTS = 25;

/** outbox entries being delivered by some notifier of this process (a replay skips them) */
const claimed = new Set<string>();

export interface WebhookTarget {
  name: string;
  url: string;
  format: 'generic' | 'slack';
  on: Set<NotifyEvent>;
  keys: Set<string> | null;
  headers: Record<string, string>;
  timeoutMs: number;
  attempts: number;
  backoffMs: number;
}

export interface NotifierOptions {
  webhooks: WebhookConfig[];
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /** cli | lambda | cloud-run | daemon (in the payload) */
  actor?: string;
  host?: string;
  fetch?: typeof fetch;
  /** 0..1, for jitter (tests) */
  random?: () => number;
  /** the state store whose outbox makes deliveries durable (absent, or without outbox methods: memory only) */
  outbox?: StateStore;
  outboxMaxAgeMs?: number;
  outboxMaxAttempts?: number;
  /** for entry times and ages (default Date.now) */
  now?: () => number;
}

export interface DeliveryReport {
  /** deliveries that got a 2xx */
  delivered: number;
  /** deliveries given up (attempts exhausted or a non-retryable answer) */
  failed: number;
  /** deliveries still running when `drain` returned (they were abandoned) */
  abandoned: number;
}

type Outbox = Required<Pick<StateStore, 'outboxAdd' | 'outboxPending' | 'outboxDone' | 'outboxAttempted'>>;
function outboxOf(s: StateStore | undefined): Outbox | undefined {
  return s?.outboxAdd && s.outboxPending && s.outboxDone && s.outboxAttempted ? (s as Outbox) : undefined;
}

type Ending = 'delivered' | 'rejected' | 'exhausted' | 'aborted';

export interface Notifier extends RotationObserver {
  /** deliveries queued or in flight */
  readonly pending: number;
  /** wait for pending deliveries, at most `timeoutMs`; abandons (aborts) whatever is left */
  drain(timeoutMs: number): Promise<DeliveryReport>;
  stats(): DeliveryReport;
}

export function resolveTargets(webhooks: WebhookConfig[], env: NodeJS.ProcessEnv): WebhookTarget[] {
  return webhooks.map((w, i) => {
    const where = `notifications[${i}]`;
    const url = w.url ?? env[w.urlEnv ?? ''];
    if (!url) {
      throw new KeyrotorError(
        'CONFIG_ENV_MISSING',
        `${where}: environment variable ${w.urlEnv} (webhook URL) is not set`,
        { hint: `export ${w.urlEnv}=https://...` },
      );
    }
    let host: string;
    try {
      const u = new URL(url);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('protocol');
      host = u.host;
    } catch {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `${where}: the webhook URL${w.urlEnv ? ` in ${w.urlEnv}` : ''} is not an http(s) URL`,
      );
    }
    const headers: Record<string, string> = {};
    for (const [h, envName] of Object.entries(w.headersFromEnv ?? {})) {
      const v = env[envName];
      if (!v)
        throw new KeyrotorError(
          'CONFIG_ENV_MISSING',
          `${where}: environment variable ${envName} (header ${h}) is not set`,
          { hint: `export ${envName}=...` },
        );
      headers[h] = v;
    }
    return {
      name: w.name ?? host,
      url,
      format: w.format,
      on: new Set(w.on),
      keys: w.keys ? new Set(w.keys) : null,
      headers,
      timeoutMs: w.timeout,
      attempts: w.attempts,
      backoffMs: w.backoff,
    };
  });
}

const RETRY_STATUS = new Set([408, 425, 429]);
const retryableStatus = (s: number) => RETRY_STATUS.has(s) || s >= 500;

function retryAfterMs(h: string | null): number | undefined {
  if (!h) return undefined;
  const s = Number(h);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(h);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    t.unref(); // drain() bounds how long a process waits for retries
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export function createNotifier(o: NotifierOptions): Notifier {
  const targets = resolveTargets(o.webhooks, o.env ?? process.env);
  const log = o.logger.child({ component: 'notify' });
  const doFetch = o.fetch ?? fetch;
  const random = o.random ?? Math.random;
  const now = o.now ?? Date.now;
  const meta = { host: o.host ?? hostname(), actor: o.actor ?? null };
  const inflight = new Map<Promise<void>, AbortController>();
  const stats: DeliveryReport = { delivered: 0, failed: 0, abandoned: 0 };
  const outbox = targets.length ? outboxOf(o.outbox) : undefined;
  const maxAgeMs = o.outboxMaxAgeMs ?? DEFAULT_OUTBOX_MAX_AGE_MS;
  const maxAttempts = o.outboxMaxAttempts ?? DEFAULT_OUTBOX_MAX_ATTEMPTS;
  const errName = (e: unknown) => (e instanceof Error ? ((e as { code?: string }).code ?? e.name) : 'error');

  async function deliver(
    t: WebhookTarget,
    body: string,
    id: string,
    fields: Record<string, unknown>,
    ctl: AbortController,
  ): Promise<{ ending: Ending; attempts: number }> {
    for (let attempt = 1; ; attempt++) {
      let why: string;
      let wait: number | undefined;
      try {
        const res = await doFetch(t.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'keyrotor',
            'idempotency-key': id,
            ...t.headers,
          },
          body,
          redirect: 'manual',
          signal: AbortSignal.any([ctl.signal, AbortSignal.timeout(t.timeoutMs)]),
        });
        await res.body?.cancel().catch(() => undefined);
        if (res.status >= 200 && res.status < 300) {
          stats.delivered += 1;
          log.info({ ...fields, attempt }, 'notification delivered');
          return { ending: 'delivered', attempts: attempt };
        }
        why = `answered ${res.status}`;
        if (!retryableStatus(res.status)) {
          stats.failed += 1;
          log.warn(
            { ...fields, attempt, status: res.status },
            `notification not delivered: the webhook ${why}${res.status >= 300 && res.status < 400 ? ' (redirects are not followed)' : ''}; not retried`,
          );
          return { ending: 'rejected', attempts: attempt };
        }
        wait = retryAfterMs(res.headers.get('retry-after'));
      } catch (e) {
        if (ctl.signal.aborted) return { ending: 'aborted', attempts: attempt };
        why =
          e instanceof Error && e.name === 'TimeoutError'
            ? `timed out after ${t.timeoutMs} ms`
            : 'could not be reached';
      }
      if (attempt >= t.attempts) {
        stats.failed += 1;
        log.warn(
          { ...fields, attempt },
          `notification not delivered after ${attempt} attempt(s): the webhook ${why}${outbox ? '; it stays in the outbox for the next run' : ''}`,
        );
        return { ending: 'exhausted', attempts: attempt };
      }
      const base = Math.min(MAX_BACKOFF_MS, wait ?? t.backoffMs * 2 ** (attempt - 1));
      const delay = wait !== undefined ? base : Math.round(base / 2 + (random() * base) / 2);
      log.debug({ ...fields, attempt, retryInMs: delay }, `notification attempt failed (${why}); retrying`);
      try {
        await sleep(delay, ctl.signal);
      } catch {
        return { ending: 'aborted', attempts: attempt };
      }
    }
  }

  /** after a delivery: remove the entry, or count its attempts (and drop it past the limits) */
  async function settle(e: OutboxEntry, ending: Ending, attempts: number, fields: Record<string, unknown>) {
    if (!outbox) return;
    try {
      if (ending === 'delivered' || ending === 'rejected') return await outbox.outboxDone(e.id);
      const total = e.attempts + attempts;
      if (ending === 'exhausted' && total >= maxAttempts) {
        log.warn({ ...fields, attempts: total }, `notification dropped from the outbox after ${total} attempt(s)`);
        return await outbox.outboxDone(e.id);
      }
      await outbox.outboxAttempted(e.id, attempts);
    } catch (err) {
      log.warn({ ...fields, err: errName(err) }, 'could not update the notification outbox');
    }
  }

  function track(p: Promise<void>, ctl: AbortController): void {
    const q: Promise<void> = p.finally(() => inflight.delete(q));
    inflight.set(q, ctl);
  }

  function enqueue(t: WebhookTarget, e: OutboxEntry, fields: Record<string, unknown>): void {
    const ctl = new AbortController();
    claimed.add(e.id);
    track(
      deliver(t, e.body, e.id, fields, ctl)
        .then(({ ending, attempts }) => settle(e, ending, attempts, fields))
        .catch((err: unknown) => {
          stats.failed += 1;
          log.warn({ webhook: t.name, err: errName(err) }, 'notification failed');
        })
        .finally(() => claimed.delete(e.id)),
      ctl,
    );
  }

  /** deliver what earlier runs left in the outbox */
  async function replay(ctl: AbortController): Promise<void> {
    let pending: OutboxEntry[];
    try {
      pending = await outbox!.outboxPending(500);
    } catch (err) {
      log.warn(
        { err: errName(err) },
        'could not read the notification outbox; pending notifications wait for the next run',
      );
      return;
    }
    for (const e of pending) {
      if (ctl.signal.aborted) return;
      if (claimed.has(e.id)) continue;
      const t = targets[e.webhook];
      const fields = { webhook: t?.name ?? e.webhookName, outboxId: e.id };
      const age = now() - Date.parse(e.createdAt);
      const drop =
        !t || t.name !== e.webhookName
          ? 'its webhook is no longer configured'
          : age > maxAgeMs
            ? `it is older than ${Math.round(maxAgeMs / 60_000)} min`
            : e.attempts >= maxAttempts
              ? `it had ${e.attempts} attempt(s)`
              : undefined;
      if (drop || !t) {
        log.warn({ ...fields, attempts: e.attempts }, `notification dropped from the outbox: ${drop}`);
        await outbox!
          .outboxDone(e.id)
          .catch((err: unknown) =>
            log.warn({ ...fields, err: errName(err) }, 'could not update the notification outbox'),
          );
        continue;
      }
      log.info({ ...fields, attempts: e.attempts }, 'delivering a notification left pending by an earlier run');
      enqueue(t, e, fields);
    }
  }

  if (outbox) {
    const ctl = new AbortController();
    track(
      Promise.resolve().then(() => replay(ctl)),
      ctl,
    );
  }

  return {
    get pending() {
      return inflight.size;
    },

    async onResult(r) {
      if (r.dryRun || r.outcome === 'skipped') return;
      const events = eventsOf(r);
      for (const [i, t] of targets.entries()) {
        if (t.keys && !t.keys.has(r.key)) continue;
        if (!events.some((e) => t.on.has(e))) continue;
        const id = `${r.rotationId ?? 'none'}.${r.outcome}.w${i}.${randomBytes(4).toString('hex')}`;
        const body = JSON.stringify(
          t.format === 'slack' ? slackPayload(r, meta) : { ...genericPayload(r, meta), idempotencyKey: id },
        );
        const e: OutboxEntry = {
          id,
          webhook: i,
          webhookName: t.name,
          body,
          createdAt: new Date(now()).toISOString(),
          attempts: 0,
        };
        const fields = { webhook: t.name, key: r.key, rotationId: r.rotationId, outcome: r.outcome };
        if (outbox) {
          claimed.add(e.id); // before it is visible in the outbox: a replay in this process must not take it
          try {
            await outbox.outboxAdd(e);
          } catch (err) {
            log.warn(
              { ...fields, err: errName(err) },
              'could not write the notification outbox; delivering from memory only',
            );
          }
        }
        enqueue(t, e, fields);
      }
    },

    async drain(timeoutMs) {
      if (inflight.size) {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), Math.max(0, timeoutMs));
        });
        // deliveries started while draining are waited for too
        const all = (async () => {
          while (inflight.size) await Promise.allSettled([...inflight.keys()]);
        })();
        const r = await Promise.race([all, timedOut]);
        clearTimeout(timer);
        if (r === 'timeout' && inflight.size) {
          const left = [...inflight.entries()];
          stats.abandoned += left.length;
          log.warn(
            { pending: left.length, timeoutMs },
            `${left.length} notification(s) not delivered within ${timeoutMs} ms; giving up on them${outbox ? ' for now (they stay in the outbox for the next run)' : ''}`,
          );
          for (const [, ctl] of left) ctl.abort(new Error('drain timeout'));
          await Promise.allSettled(left.map(([p]) => p));
        }
      }
      return { ...stats };
    },

    stats: () => ({ ...stats }),
  };
}
