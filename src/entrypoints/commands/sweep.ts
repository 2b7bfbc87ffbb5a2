import type { SweepKeyResult } from '../../app/sweep.ts';
import { table, type CommandContext } from './context.ts';

/**
 * `keyrotor sweep [<key>...] [--dry-run]`: delete issuer keys that carry keyrotor's marker
 * (`keyrotor.<key>.<rotationId>`) but that no rotation owns and no configured store serves.
 */
export async function runSweep(
  ctx: CommandContext,
  names: string[],
  opts: { dryRun?: boolean; json?: boolean },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const keys = ctx.pickKeys(cfg, names);
  const logger = await ctx.logger();
  const [{ sweepExitCode, sweepKeys }, { defaultObservers }] = await Promise.all([
    import('../../app/sweep.ts'),
    import('../../app/observers.ts'),
  ]);
  const stateStore = await ctx.stateStore(cfg);
  const results = await sweepKeys(keys, {
    config: cfg,
    stateStore,
    logger,
    dryRun: opts.dryRun === true,
    env: ctx.io.env,
    actor: 'cli',
    observers: defaultObservers({ config: cfg, logger, actor: 'cli', env: ctx.io.env, stateStore, own: ctx.own }),
  });
  ctx.exit(Math.max(0, ...results.map(sweepExitCode)));
  ctx.io.stdout(opts.json ? JSON.stringify({ keys: results }, null, 2) + '\n' : renderSweep(results));
}

function renderSweep(results: SweepKeyResult[]): string {
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const r of results) {
    if (r.wouldResume)
      notes.push(`${r.key}: would first resume unfinished rotation ${r.wouldResume} (its keys are kept)`);
    if (r.resumed)
      notes.push(
        `${r.key}: resumed unfinished rotation ${r.resumed.rotationId}: ${r.resumed.outcome}${r.resumed.error ? ` (${r.resumed.error.code}: ${r.resumed.error.message})` : ''}`,
      );
    for (const l of r.resumed?.leftovers ?? []) notes.push(`    ! ${l}`);
    if (r.error) notes.push(`${r.key}: ${r.outcome.toUpperCase()}: ${r.error.code}: ${r.error.message}`);
    for (const e of r.entries)
      rows.push([
        r.key,
        e.keyId,
        e.action.toUpperCase().replace('_', ' '),
        e.name,
        e.reason + (e.error ? ` (${e.error.code}: ${e.error.message})` : ''),
      ]);
    if (r.entries.length === 0 && !r.error)
      rows.push([
        r.key,
        '-',
        r.outcome.toUpperCase(),
        '-',
        `no key named keyrotor.${r.key}.* at the issuer (${r.unmarked} other keys not considered)`,
      ]);
  }
  return table(['KEY', 'KEY ID', 'ACTION', 'NAME', 'REASON'], rows) + notes.map((n) => n + '\n').join('');
}
