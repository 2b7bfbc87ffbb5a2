/**
 * The observers every entry point attaches to a rotation (audit trail, metrics, notifications).
 * One place, so the CLI, Lambda, Cloud Run and the daemon record the same things.
 *
 *   const observers = defaultObservers({ config, logger, actor: 'cli', env });
 *   const results = await rotateKeys(keys, { ..., observers });
 *   await flushObservers(observers, 10_000);   // before the process exits: pending webhooks
 *
 * A missing env var named by a webhook is CONFIG_ENV_MISSING (exit 2) here, before anything rotates.
 * The only I/O it starts is in the background: with webhooks configured, the notifier delivers what
 * earlier runs left in the state backend's outbox (see notify/notifier.ts); `flushObservers` waits
 * for that too.
 *
 * Connections: the audit trail of a database backend opens its own pool (and, without `stateStore`,
 * so does the state store made here), and the process-wide metrics keep reading the state store at
 * scrape time. A caller that ends before the process does (the CLI's `main()`, called in-process by
 * an embedder) passes `own`: it gets one function that releases all of that (after waiting, bounded,
 * for webhook deliveries), and calls it when done. Without `own` they live as long as the process.
 */
import {
  auditObserver,
  auditSettings,
  logAuditSink,
  teeAuditSink,
  type AuditLog,
  type AuditSink,
} from './audit/index.ts';
import type { LoadedConfig } from './config/load.ts';
import type { Logger, StateStore } from '../core/ports.ts';
import { processMetrics, type Metrics } from './metrics.ts';
import { createNotifier, notificationSettings, type DeliveryReport, type Notifier } from './notify/index.ts';
import type { RotationObserver } from './run.ts';
import { createStateAuditLog, createStateStore } from './state/index.ts';

export interface ObserverOptions {
  config: LoadedConfig;
  logger: Logger;
  /** cli | lambda | cloud-run | daemon */
  actor: string;
  /** where webhook URLs / headers named by env come from (default process.env) */
  env?: NodeJS.ProcessEnv;
  /** for the key-age gauges and the webhook outbox (default: the config's state backend) */
  stateStore?: StateStore;
  /** default: the process-wide `processMetrics()` */
  metrics?: Metrics;
  /** keep webhook deliveries in the state backend's outbox and deliver what it holds (default true) */
  outbox?: boolean;
  /** replace the audit sink (default: the JSONL log from the config); false = no audit */
  audit?: AuditSink | false;
  /**
   * The caller owns what this opens: called once with `release` (wait for webhook deliveries, at
   * most 10 s; stop the metrics reading the state store; close the audit trail's connections and a
   * state store made here). Not the caller's own `stateStore`. Default: nothing is released.
   */
  own?: (release: () => Promise<void>) => void;
}

export function defaultObservers(o: ObserverOptions): RotationObserver[] {
  const observers: RotationObserver[] = [];

  const settings = auditSettings(o.config);
  let log: AuditLog | undefined;
  let shared: AuditLog | undefined;
  if (o.audit !== false && (o.audit || settings.enabled)) {
    // the state backend's own trail: a rotation's records are written with its snapshots (one write)
    // (a database backend's trail comes from the caller's store when it has one: its connections, not
    // a pool per run — a daemon, serve or a warm Lambda builds observers for every run or request)
    shared = o.config.raw.state.type !== 'file' ? storeAuditLog(o.stateStore) : undefined;
    log = o.audit ? undefined : (shared ?? createStateAuditLog(o.config, o.env ?? process.env));
    const base: AuditSink = o.audit || log!;
    const mirror = settings.mirrorToLog ? logAuditSink(o.logger.child({ component: 'audit' })) : undefined;
    const sink = mirror ? teeAuditSink([base, mirror]) : base;
    observers.push(auditObserver({ sink, actor: o.actor, trail: log?.trail, mirror }));
  }

  const metrics = o.metrics ?? processMetrics();
  const stateStore = o.stateStore ?? createStateStore(o.config, o.env ?? process.env);
  const untrack = metrics.trackKeys(o.config, stateStore);
  observers.push(metrics.observer());

  const webhooks = notificationSettings(o.config);
  if (webhooks.length)
    observers.push(
      createNotifier({
        webhooks,
        logger: o.logger,
        actor: o.actor,
        ...(o.outbox !== false ? { outbox: stateStore } : {}),
        ...(o.env ? { env: o.env } : {}),
      }),
    );

  if (o.own) {
    const made = o.stateStore ? undefined : stateStore;
    let released: Promise<void> | undefined;
    o.own(
      () =>
        (released ??= (async () => {
          await flushObservers(observers, 10_000); // the notifier writes its outbox through the store
          untrack();
          // a trail taken from the caller's store is the caller's to close with it
          await Promise.allSettled([log === shared ? undefined : log?.close?.(), made?.close?.()]);
        })()),
    );
  }
  return observers;
}

/** the audit trail of a database state store (its own connections), if it is one */
function storeAuditLog(store: StateStore | undefined): AuditLog | undefined {
  const s: (StateStore & { auditLog?: () => AuditLog }) | undefined = store;
  return typeof s?.auditLog === 'function' ? s.auditLog() : undefined;
}

function isNotifier(x: RotationObserver): x is Notifier {
  return typeof (x as Partial<Notifier>).drain === 'function';
}

/**
 * Wait (at most `timeoutMs`) for work the observers queued, e.g. webhook deliveries still retrying.
 * Call it before the process exits; it never throws.
 */
export async function flushObservers(observers: RotationObserver[], timeoutMs = 10_000): Promise<DeliveryReport> {
  const total: DeliveryReport = { delivered: 0, failed: 0, abandoned: 0 };
  const reports = await Promise.all(
    observers
      .filter(isNotifier)
      .map((n) => n.drain(timeoutMs).catch(() => ({ delivered: 0, failed: 0, abandoned: n.pending }))),
  );
  for (const r of reports) {
    total.delivered += r.delivered;
    total.failed += r.failed;
    total.abandoned += r.abandoned;
  }
  return total;
}
