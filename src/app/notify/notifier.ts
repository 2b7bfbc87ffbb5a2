/**
 * Webhook notifications about rotation results. `onResult` only queues a delivery and returns, so a
 * slow or failing receiver never delays or fails a rotation. Each delivery is retried with doubling
 * backoff and jitter (honouring `Retry-After`) on connection errors, timeouts, 408, 425, 429 and 5xx.
 * A process that is about to exit calls `drain(timeoutMs)`: it waits for pending deliveries up to
 * that bound, then abandons the rest (logged).
 *
 * Logs name a webhook by its `name` or its host only: webhook URLs often carry a token.
 */
import { hostname } from 'node:os';
import { KeyrotorError } from '../../core/errors.ts';
import type { Logger } from '../../core/ports.ts';
import type { KeyResult, RotationObserver } from '../run.ts';
import { eventsOf, genericPayload, slackPayload } from './payload.ts';
import type { NotifyEvent, WebhookConfig } from './schema.ts';

const MAX_BACKOFF_MS = 60_000;

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
}

export interface DeliveryReport {
  /** deliveries that got a 2xx */
  delivered: number;
  /** deliveries given up (attempts exhausted or a non-retryable answer) */
  failed: number;
  /** deliveries still running when `drain` returned (they were abandoned) */
  abandoned: number;
}

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
  const meta = { host: o.host ?? hostname(), actor: o.actor ?? null };
  const inflight = new Map<Promise<void>, AbortController>();
  const stats: DeliveryReport = { delivered: 0, failed: 0, abandoned: 0 };

  async function deliver(t: WebhookTarget, r: KeyResult, ctl: AbortController): Promise<void> {
    const body = JSON.stringify(t.format === 'slack' ? slackPayload(r, meta) : genericPayload(r, meta));
    const fields = { webhook: t.name, key: r.key, rotationId: r.rotationId, outcome: r.outcome };
    for (let attempt = 1; ; attempt++) {
      let why: string;
      let wait: number | undefined;
      try {
        const res = await doFetch(t.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'keyrotor', ...t.headers },
          body,
          redirect: 'manual',
          signal: AbortSignal.any([ctl.signal, AbortSignal.timeout(t.timeoutMs)]),
        });
        await res.body?.cancel().catch(() => undefined);
        if (res.status >= 200 && res.status < 300) {
          stats.delivered += 1;
          log.info({ ...fields, attempt }, 'notification delivered');
          return;
        }
        why = `answered ${res.status}`;
        if (!retryableStatus(res.status)) {
          stats.failed += 1;
          log.warn(
            { ...fields, attempt, status: res.status },
            `notification not delivered: the webhook ${why}${res.status >= 300 && res.status < 400 ? ' (redirects are not followed)' : ''}; not retried`,
          );
          return;
        }
        wait = retryAfterMs(res.headers.get('retry-after'));
      } catch (e) {
        if (ctl.signal.aborted) return;
        why =
          e instanceof Error && e.name === 'TimeoutError'
            ? `timed out after ${t.timeoutMs} ms`
            : 'could not be reached';
      }
      if (attempt >= t.attempts) {
        stats.failed += 1;
        log.warn({ ...fields, attempt }, `notification not delivered after ${attempt} attempt(s): the webhook ${why}`);
        return;
      }
      const base = Math.min(MAX_BACKOFF_MS, wait ?? t.backoffMs * 2 ** (attempt - 1));
      const delay = wait !== undefined ? base : Math.round(base / 2 + (random() * base) / 2);
      log.debug({ ...fields, attempt, retryInMs: delay }, `notification attempt failed (${why}); retrying`);
      try {
        await sleep(delay, ctl.signal);
      } catch {
        return;
      }
    }
  }

  function enqueue(t: WebhookTarget, r: KeyResult): void {
    const ctl = new AbortController();
    const p: Promise<void> = deliver(t, r, ctl)
      .catch((e: unknown) => {
        stats.failed += 1;
        log.warn({ webhook: t.name, err: e instanceof Error ? e.name : 'error' }, 'notification failed');
      })
      .finally(() => inflight.delete(p));
    inflight.set(p, ctl);
  }

  return {
    get pending() {
      return inflight.size;
    },

    onResult(r) {
      if (r.dryRun || r.outcome === 'skipped') return;
      const events = eventsOf(r);
      for (const t of targets) {
        if (t.keys && !t.keys.has(r.key)) continue;
        if (events.some((e) => t.on.has(e))) enqueue(t, r);
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
            `${left.length} notification(s) not delivered within ${timeoutMs} ms; giving up on them`,
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
