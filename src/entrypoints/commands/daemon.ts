import { Option } from 'commander';
import { parseDuration } from '../../core/duration.ts';
import { KeyrotorError } from '../../core/errors.ts';
import { DEFAULT_JITTER_MS, DEFAULT_TICK, startDaemon, validateTick } from '../daemon.ts';
import type { RegisterCommand } from './context.ts';
import { renderResults } from './rotate.ts';

const HELP = `
Every tick resumes unfinished rotations, then rotates each key whose schedule.every has passed (the
same rule as \`keyrotor rotate\`), after a random jitter. Runs never overlap: a tick during a run is
skipped. One run starts right away unless --no-run-at-start.

SIGTERM / SIGINT: no new run starts; running rotations stop at the next safe point and stay
in_progress in the state store; the next start resumes them. Exits 0.

Environment (flags win):
  KEYROTOR_DAEMON_TICK      cron pattern of the tick (default "${DEFAULT_TICK}")
  KEYROTOR_DAEMON_JITTER    jitter before each run (default ${DEFAULT_JITTER_MS / 1000}s)
  KEYROTOR_DAEMON_TIMEZONE  time zone of the pattern (default the host's)
`;

export const registerDaemon: RegisterCommand = (ctx) => {
  const env = ctx.io.env;
  ctx.program
    .command('daemon')
    .description('run as a scheduler: rotate due keys on a cron tick with jitter, never overlapping; SIGTERM pauses safely')
    .option('--tick <cron>', 'cron pattern of the tick', env.KEYROTOR_DAEMON_TICK ?? DEFAULT_TICK)
    .option('--jitter <duration>', 'random delay before each run (0 = none)', env.KEYROTOR_DAEMON_JITTER ?? `${DEFAULT_JITTER_MS / 1000}s`)
    .option('--timezone <tz>', 'IANA time zone of the tick pattern', env.KEYROTOR_DAEMON_TIMEZONE)
    .option('--no-run-at-start', 'wait for the first tick instead of running at once')
    .addOption(new Option('--concurrency <n>', 'keys rotated at the same time').argParser((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 256) throw new KeyrotorError('USAGE', `--concurrency must be an integer from 1 to 256 (got ${JSON.stringify(v)})`);
      return n;
    }))
    .option('--json', 'print each run as one JSON line on stdout: { "results": [...] }')
    .addHelpText('after', HELP)
    .action(async (opts: { tick: string; jitter: string; timezone?: string; runAtStart: boolean; concurrency?: number; json?: boolean }) => {
      ctx.setJson(opts.json === true);
      const jitterMs = opts.jitter === '0' ? 0 : parseDuration(opts.jitter);
      if (jitterMs === undefined) throw new KeyrotorError('USAGE', `--jitter must be a duration like 30s (got ${JSON.stringify(opts.jitter)})`);
      validateTick(opts.tick, opts.timezone);
      const cfg = await ctx.config();
      const logger = await ctx.logger();
      const daemon = startDaemon({
        config: cfg,
        stateStore: ctx.stateStore(cfg),
        logger,
        env: ctx.io.env,
        tick: opts.tick,
        jitterMs,
        runAtStart: opts.runAtStart,
        ...(opts.timezone ? { timezone: opts.timezone } : {}),
        ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
        onRun: (run) => {
          if (opts.json) ctx.io.stdout(JSON.stringify({ startedAt: run.startedAt, results: run.results, ...(run.error ? { error: run.error } : {}) }) + '\n');
          else if (run.results.some((r) => r.outcome !== 'skipped')) ctx.io.stdout(renderResults(run.results.filter((r) => r.outcome !== 'skipped')));
        },
      });
      const onSignal = (s: string) => () => void daemon.stop(s);
      const term = onSignal('SIGTERM');
      const int = onSignal('SIGINT');
      process.once('SIGTERM', term);
      process.once('SIGINT', int);
      try {
        await daemon.done;
      } finally {
        process.off('SIGTERM', term);
        process.off('SIGINT', int);
      }
    });
};
