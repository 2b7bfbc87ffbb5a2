import { OUTCOME_EXIT } from '../../core/stages.ts';
import type { KeyResult } from '../../app/run.ts';
import { renderResults } from './rotate.ts';
import { cliProgress, type CommandContext } from './context.ts';
import { handleInterrupts } from './interrupt.ts';

/**
 * `keyrotor resume [<key>...]`: finish or compensate unfinished rotations (after a crash, a timeout,
 * a lost machine) and start no new one. The same code path `rotate` takes first; exit codes as rotate.
 * A parked rotation (durable wait) is continued once its wake time has come, or at once with --now.
 */
export async function runResume(
  ctx: CommandContext,
  names: string[],
  opts: { json?: boolean; now?: boolean; park?: boolean },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const keys = ctx.pickKeys(cfg, names);
  const logger = await ctx.logger();
  const [{ rotateKeys }, { defaultObservers, flushObservers }] = await Promise.all([
    import('../../app/run.ts'),
    import('../../app/observers.ts'),
  ]);
  const progress = cliProgress(ctx, logger);
  const stateStore = await ctx.stateStore(cfg);
  // Ctrl-C / SIGTERM: pause again at the next safe point
  const interrupts = handleInterrupts({ io: ctx.io, keys: keys.map((k) => k.name) });
  const observers = [
    ...defaultObservers({ config: cfg, logger, actor: 'cli', env: ctx.io.env, stateStore, own: ctx.own }),
    progress,
  ];
  const results = await rotateKeys(keys, {
    config: cfg,
    stateStore,
    logger,
    observers,
    env: ctx.io.env,
    actor: 'cli',
    resumeOnly: true,
    wake: opts.now === true,
    park: opts.park === true,
    signal: interrupts.signal,
  }).finally(() => interrupts.dispose());
  await flushObservers(observers, 10_000); // pending webhook deliveries (and what the outbox held), bounded
  ctx.exit(Math.max(0, ...results.map((r) => OUTCOME_EXIT[r.outcome])));
  ctx.io.stdout(opts.json ? JSON.stringify({ results }, null, 2) + '\n' : renderResume(results));
  const paused = interrupts.report(results);
  if (paused) {
    ctx.io.stderr(paused.message);
    ctx.exit(paused.exitCode);
  }
}

function renderResume(results: KeyResult[]): string {
  const resumed = results.filter((r) => r.outcome !== 'skipped');
  const idle = results.filter((r) => r.outcome === 'skipped').map((r) => `${r.key}  nothing to resume\n`);
  return (resumed.length ? renderResults(resumed) : '') + idle.join('');
}
