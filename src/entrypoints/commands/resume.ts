import { OUTCOME_EXIT } from '../../core/stages.ts';
import { defaultObservers } from '../../observers.ts';
import { rotateKeys, type KeyResult } from '../../run.ts';
import { renderResults } from './rotate.ts';
import type { RegisterCommand } from './context.ts';

/**
 * `keyrotor resume [<key>...]`: finish or compensate unfinished rotations (after a crash, a timeout,
 * a lost machine) and start no new one. The same code path `rotate` takes first; exit codes as rotate.
 */
export const registerResume: RegisterCommand = (ctx) => {
  ctx.program
    .command('resume')
    .description('finish or roll back unfinished rotations (after a crash); never starts a new one')
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--json', 'print exactly one JSON document on stdout: { "results": [...] } (outcome "skipped" = nothing to resume)')
    .addHelpText(
      'after',
      `
An unfinished rotation is one whose snapshot is still in the state store (the process died, was
killed, or paused). resume picks it up at the stage it was in: every stage is idempotent, so the
stage that was in flight is simply run again. A crash between creating the new key and storing it
loses the value: that rotation rolls back and deletes the key. A lock held by a dead process is
taken over once its lease expires (defaults.lease.ttl); until then resume exits 3.`,
    )
    .action(async (names: string[], opts: { json?: boolean }) => {
      ctx.setJson(opts.json === true);
      const cfg = await ctx.config();
      const keys = ctx.pickKeys(cfg, names);
      const logger = await ctx.logger();
      const results = await rotateKeys(keys, {
        config: cfg,
        stateStore: ctx.stateStore(cfg),
        logger,
        observers: defaultObservers({ config: cfg, logger, actor: 'cli' }),
        env: ctx.io.env,
        actor: 'cli',
        resumeOnly: true,
      });
      ctx.exit(Math.max(0, ...results.map((r) => OUTCOME_EXIT[r.outcome])));
      ctx.io.stdout(opts.json ? JSON.stringify({ results }, null, 2) + '\n' : renderResume(results));
    });
};

function renderResume(results: KeyResult[]): string {
  const resumed = results.filter((r) => r.outcome !== 'skipped');
  const idle = results.filter((r) => r.outcome === 'skipped').map((r) => `${r.key}  nothing to resume\n`);
  return (resumed.length ? renderResults(resumed) : '') + idle.join('');
}
