import { parseDuration } from '../../core/duration.ts';
import { KeyrotorError } from '../../core/errors.ts';
import type { CommandContext } from './context.ts';
import { intOpt } from './options.ts';
import { renderResults } from './rotate.ts';

/** `keyrotor daemon` (declared in index.ts) */
export async function runDaemon(
  ctx: CommandContext,
  opts: {
    tick: string;
    jitter: string;
    timezone?: string;
    runAtStart: boolean;
    concurrency?: number;
    json?: boolean;
    /** a number once parsed; a string when it came from KEYROTOR_DAEMON_METRICS_PORT */
    metricsPort?: number | string;
    metricsHost?: string;
  },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const jitterMs = opts.jitter === '0' ? 0 : parseDuration(opts.jitter);
  if (jitterMs === undefined)
    throw new KeyrotorError('USAGE', `--jitter must be a duration like 30s (got ${JSON.stringify(opts.jitter)})`);
  const metricsPort =
    typeof opts.metricsPort === 'string'
      ? intOpt('KEYROTOR_DAEMON_METRICS_PORT', 0, 65535)(opts.metricsPort)
      : opts.metricsPort;
  const { startDaemon, validateTick } = await import('../daemon.ts');
  validateTick(opts.tick, opts.timezone);
  const cfg = await ctx.config();
  const logger = await ctx.logger();
  // the metrics endpoint first: a port that is taken fails before anything rotates
  let stopping = false;
  let metricsServer: { url: string; close(): Promise<void> } | undefined;
  if (metricsPort !== undefined) {
    const [{ startMetricsServer }, { enableProcessMetrics }] = await Promise.all([
      import('../metrics-server.ts'),
      import('../../app/metrics.ts'),
    ]);
    await enableProcessMetrics();
    metricsServer = await startMetricsServer({
      port: metricsPort,
      ...(opts.metricsHost ? { host: opts.metricsHost } : {}),
      healthy: () => !stopping,
    });
    logger.info({ url: `${metricsServer.url}/metrics` }, 'metrics endpoint listening');
  }
  const daemon = startDaemon({
    config: cfg,
    stateStore: await ctx.stateStore(cfg),
    logger,
    env: ctx.io.env,
    tick: opts.tick,
    jitterMs,
    runAtStart: opts.runAtStart,
    ...(opts.timezone ? { timezone: opts.timezone } : {}),
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    onRun: (run) => {
      if (opts.json)
        ctx.io.stdout(
          JSON.stringify({
            startedAt: run.startedAt,
            results: run.results,
            ...(run.error ? { error: run.error } : {}),
          }) + '\n',
        );
      else if (run.results.some((r) => r.outcome !== 'skipped'))
        ctx.io.stdout(renderResults(run.results.filter((r) => r.outcome !== 'skipped')));
    },
  });
  const onSignal = (s: string) => () => {
    stopping = true;
    void daemon.stop(s);
  };
  const term = onSignal('SIGTERM');
  const int = onSignal('SIGINT');
  process.once('SIGTERM', term);
  process.once('SIGINT', int);
  try {
    await daemon.done;
  } finally {
    process.off('SIGTERM', term);
    process.off('SIGINT', int);
    await metricsServer?.close();
  }
}
