/**
 * Prometheus metrics (prom-client, one registry per `createMetrics()`; the process-wide one is
 * `processMetrics()`). Fed by a rotation observer; `text()` is the body of `GET /metrics`
 * (`contentType` for its header) and `snapshot()` a compact JSON form for Lambda results. Nothing
 * here loads prom-client at import time.
 *
 *   keyrotor_rotations_total{key,outcome,leaked}              counter
 *   keyrotor_rotation_duration_seconds{key,outcome}           histogram
 *   keyrotor_stage_duration_seconds{key,stage,result}         histogram (result ok | error)
 *   keyrotor_stage_failures_total{key,stage,code}             counter
 *   keyrotor_gate_wait_seconds{key,result}                    histogram (the confirm stage: gates)
 *   keyrotor_last_success_timestamp_seconds{key}              gauge
 *   keyrotor_key_age_seconds{key}                             gauge (now - last rotation, from state)
 *   keyrotor_key_schedule_seconds{key}                        gauge (alert on age > schedule)
 */
import type { Registry } from 'prom-client';
import type { LoadedConfig } from './config/load.ts';
import type { StateStore } from '../core/ports.ts';
import type { RotationObserver } from './run.ts';

export interface MetricsSnapshot {
  [metric: string]: Array<{ labels: Record<string, string | number>; value?: number; count?: number; sum?: number }>;
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface Metrics {
  /** `text/plain; version=0.0.4; charset=utf-8` */
  readonly contentType: string;
  observer(): RotationObserver;
  /**
   * key age / schedule gauges for these keys, read from the state store at scrape time (the last
   * call wins). Returns `untrack`: stop reading that store (a no-op once another call replaced it);
   * call it before closing the store.
   */
  trackKeys(config: LoadedConfig, stateStore: StateStore): () => void;
  /** Prometheus text exposition format */
  text(): Promise<string>;
  snapshot(): Promise<MetricsSnapshot>;
  /** the prom-client registry (to add your own metrics or merge registries) */
  registry(): Promise<Registry>;
}

export interface MetricsOptions {
  /** also collect prom-client's default process metrics (CPU, memory, event loop); default false */
  processMetrics?: boolean;
  now?: () => number;
}

type PromClient = typeof import('prom-client');

/**
 * prom-client is loaded lazily (its import costs more than the rest of the CLI's startup), starting
 * when metrics are created; observations made before it is ready are applied in order once it is.
 */
export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const now = opts.now ?? Date.now;
  let tracked: { config: LoadedConfig; stateStore: StateStore } | null = null;
  let inst: ReturnType<typeof instruments> | undefined;
  // a CommonJS module: bundled as ESM its exports may sit on `default` only
  const ready = import('prom-client').then(
    (p) => (inst = instruments((p as PromClient).Registry ? p : (p as unknown as { default: PromClient }).default)),
  );
  ready.catch(() => undefined); // surfaced by text() / snapshot()
  const later = (fn: (i: ReturnType<typeof instruments>) => void) => {
    if (inst) fn(inst);
    else void ready.then(fn, () => undefined);
  };

  function instruments(p: PromClient) {
    const registry = new p.Registry();
    if (opts.processMetrics) p.collectDefaultMetrics({ register: registry, prefix: 'keyrotor_' });
    const registers = [registry];
    const rotations = new p.Counter({
      name: 'keyrotor_rotations_total',
      help: 'Rotation results by key and outcome (rotated, rolled_back, needs_attention, locked, in_progress, waiting = parked at a wait).',
      labelNames: ['key', 'outcome', 'leaked'] as const,
      registers,
    });
    const rotationDuration = new p.Histogram({
      name: 'keyrotor_rotation_duration_seconds',
      help: 'Wall time of a rotation from start to result.',
      labelNames: ['key', 'outcome'] as const,
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
      registers,
    });
    const stageDuration = new p.Histogram({
      name: 'keyrotor_stage_duration_seconds',
      help: 'Duration of each workflow stage (including compensations).',
      labelNames: ['key', 'stage', 'result'] as const,
      // up to hours: `confirm` waits for the health gates. prom-client keeps each series' buckets in an
      // object keyed by bound; with integer bounds topping out below ~1,000 V8 gives that object a
      // ~1,000-slot array (~11 KB per key x stage x result); a bound far above it keeps it a small
      // dictionary (~0.6 KB): 1,000 keys in flight hold ~50 MB less (bench P5)
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600],
      registers,
    });
    const stageFailures = new p.Counter({
      name: 'keyrotor_stage_failures_total',
      help: 'Stage failures by error code.',
      labelNames: ['key', 'stage', 'code'] as const,
      registers,
    });
    const gateWait = new p.Histogram({
      name: 'keyrotor_gate_wait_seconds',
      help: 'Time spent waiting for the health gates (the confirm stage) before revoking the old key.',
      labelNames: ['key', 'result'] as const,
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600],
      registers,
    });
    const lastSuccess = new p.Gauge({
      name: 'keyrotor_last_success_timestamp_seconds',
      help: 'Unix time of the last rotated result per key (seen by this process).',
      labelNames: ['key'] as const,
      registers,
    });
    new p.Gauge({
      name: 'keyrotor_key_age_seconds',
      help: 'Age of the current key: seconds since keyrotor last rotated it.',
      labelNames: ['key'] as const,
      registers,
      async collect() {
        this.reset();
        if (!tracked) return;
        for (const k of tracked.config.keys) {
          const rec = await tracked.stateStore.read(k.name).catch(() => null);
          if (rec?.lastRotatedAt)
            this.set({ key: k.name }, Math.max(0, (now() - Date.parse(rec.lastRotatedAt)) / 1000));
        }
      },
    });
    new p.Gauge({
      name: 'keyrotor_key_schedule_seconds',
      help: 'Configured rotation period per key (alert when keyrotor_key_age_seconds exceeds it).',
      labelNames: ['key'] as const,
      registers,
      collect() {
        this.reset();
        for (const k of tracked?.config.keys ?? []) this.set({ key: k.name }, k.schedule.every / 1000);
      },
    });
    return { registry, rotations, rotationDuration, stageDuration, stageFailures, gateWait, lastSuccess };
  }

  return {
    contentType: PROMETHEUS_CONTENT_TYPE,

    observer(): RotationObserver {
      return {
        onStage(key, _rotationId, e) {
          if (e.phase === 'start' || e.ms === undefined) return;
          const seconds = e.ms / 1000;
          const result = e.phase === 'done' ? 'ok' : 'error';
          const code = e.error?.code ?? 'INTERNAL';
          later((m) => {
            m.stageDuration.observe({ key, stage: e.stage, result }, seconds);
            if (e.stage === 'confirm') m.gateWait.observe({ key, result }, seconds);
            if (e.phase === 'error') m.stageFailures.inc({ key, stage: e.stage, code });
          });
        },
        onResult(r) {
          if (r.dryRun || r.outcome === 'skipped') return;
          later((m) => {
            m.rotations.inc({ key: r.key, outcome: r.outcome, leaked: r.leaked ? 'true' : 'false' });
            if (r.startedAt && r.finishedAt) {
              m.rotationDuration.observe(
                { key: r.key, outcome: r.outcome },
                Math.max(0, (Date.parse(r.finishedAt) - Date.parse(r.startedAt)) / 1000),
              );
            }
            if (r.outcome === 'rotated')
              m.lastSuccess.set(
                { key: r.key },
                Math.floor(Date.parse(r.finishedAt ?? new Date(now()).toISOString()) / 1000),
              );
          });
        },
      };
    },

    trackKeys(config, stateStore) {
      const mine = { config, stateStore };
      tracked = mine;
      return () => {
        if (tracked === mine) tracked = null;
      };
    },

    text: async () => (await ready).registry.metrics(),

    registry: async () => (await ready).registry,

    async snapshot() {
      const out: MetricsSnapshot = {};
      for (const m of await (await ready).registry.getMetricsAsJSON()) {
        if (String(m.type) === 'histogram') {
          const groups = new Map<string, { labels: Record<string, string | number>; count?: number; sum?: number }>();
          for (const v of m.values as Array<{
            value: number;
            labels: Record<string, string | number>;
            metricName?: string;
          }>) {
            if (!v.metricName || v.metricName.endsWith('_bucket')) continue;
            const labels = { ...v.labels };
            const id = JSON.stringify(labels);
            const g = groups.get(id) ?? { labels };
            if (v.metricName.endsWith('_count')) g.count = v.value;
            if (v.metricName.endsWith('_sum')) g.sum = v.value;
            groups.set(id, g);
          }
          if (groups.size) out[m.name] = [...groups.values()];
        } else if (m.values.length) {
          out[m.name] = m.values.map((v) => ({
            labels: { ...(v.labels as Record<string, string | number>) },
            value: v.value,
          }));
        }
      }
      return out;
    },
  };
}

let processWide: Metrics | undefined;
let processCollecting: Promise<void> | undefined;

/** The process-wide metrics (what `defaultObservers` feeds and `GET /metrics` should serve). */
export function processMetrics(): Metrics {
  processWide ??= createMetrics();
  return processWide;
}

/**
 * Add prom-client's default process metrics (CPU, resident memory, heap, event-loop lag, GC, open
 * file descriptors: `keyrotor_process_*`, `keyrotor_nodejs_*`) to `processMetrics()`. For long-running processes
 * (`keyrotor serve`, `keyrotor daemon`); a CLI run or a Lambda invocation does not need them. Safe to
 * call more than once.
 */
export function enableProcessMetrics(): Promise<void> {
  processCollecting ??= (async () => {
    const registry = await processMetrics().registry();
    const mod = await import('prom-client');
    const p = (mod as PromClient).collectDefaultMetrics
      ? (mod as PromClient)
      : (mod as unknown as { default: PromClient }).default;
    p.collectDefaultMetrics({ register: registry, prefix: 'keyrotor_' });
  })();
  return processCollecting;
}
