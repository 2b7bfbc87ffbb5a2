import { defaultObservers } from '../../observers.ts';
import { sweepExitCode, sweepKeys, type SweepKeyResult } from '../../sweep.ts';
import { table, type RegisterCommand } from './context.ts';

/**
 * `keyrotor sweep [<key>...] [--dry-run]`: delete issuer keys that carry keyrotor's marker
 * (`keyrotor.<key>.<rotationId>`) but that no rotation owns and no configured store serves.
 */
export const registerSweep: RegisterCommand = (ctx) => {
  ctx.program
    .command('sweep')
    .description("delete orphan keys: issuer keys named keyrotor.<key>.<rotationId> that no rotation owns and no store serves")
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--dry-run', 'list what would be deleted; change nothing (an unfinished rotation is not resumed either)')
    .option('--json', 'print exactly one JSON document on stdout: { "keys": [ { "key", "outcome", "entries": [...] } ] }')
    .addHelpText(
      'after',
      `
Never deleted: a key whose name lacks keyrotor's marker for a configured key; a key that is current
or pending in any configured store (or current in the state record, or adopted); a key of an
unfinished rotation (that rotation is resumed first, which finishes it or discards its new key);
anything at all for a key whose stores cannot all be read. The key's lock is held while sweeping.

outcome per key: clean (no orphans) | swept (orphans deleted, or listed with --dry-run)
                 | incomplete (a delete or a read failed; nothing unsafe was done) | locked
Exit codes: 0 clean/swept, 1 incomplete (or a resumed rotation rolled back), 2 usage/config,
3 locked, 4 a resumed rotation needs attention.
`,
    )
    .action(async (names: string[], opts: { dryRun?: boolean; json?: boolean }) => {
      ctx.setJson(opts.json === true);
      const cfg = await ctx.config();
      const keys = ctx.pickKeys(cfg, names);
      const logger = await ctx.logger();
      const results = await sweepKeys(keys, {
        config: cfg,
        stateStore: ctx.stateStore(cfg),
        logger,
        dryRun: opts.dryRun === true,
        env: ctx.io.env,
        actor: 'cli',
        observers: defaultObservers({ config: cfg, logger, actor: 'cli' }),
      });
      ctx.exit(Math.max(0, ...results.map(sweepExitCode)));
      ctx.io.stdout(opts.json ? JSON.stringify({ keys: results }, null, 2) + '\n' : renderSweep(results));
    });
};

function renderSweep(results: SweepKeyResult[]): string {
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const r of results) {
    if (r.wouldResume) notes.push(`${r.key}: would first resume unfinished rotation ${r.wouldResume} (its keys are kept)`);
    if (r.resumed) notes.push(`${r.key}: resumed unfinished rotation ${r.resumed.rotationId}: ${r.resumed.outcome}${r.resumed.error ? ` (${r.resumed.error.code}: ${r.resumed.error.message})` : ''}`);
    for (const l of r.resumed?.leftovers ?? []) notes.push(`    ! ${l}`);
    if (r.error) notes.push(`${r.key}: ${r.outcome.toUpperCase()}: ${r.error.code}: ${r.error.message}`);
    for (const e of r.entries) rows.push([r.key, e.keyId, e.action.toUpperCase().replace('_', ' '), e.name, e.reason + (e.error ? ` (${e.error.code}: ${e.error.message})` : '')]);
    if (r.entries.length === 0 && !r.error) rows.push([r.key, '-', r.outcome.toUpperCase(), '-', `no key named keyrotor.${r.key}.* at the issuer (${r.unmarked} other keys not considered)`]);
  }
  return table(['KEY', 'KEY ID', 'ACTION', 'NAME', 'REASON'], rows) + notes.map((n) => n + '\n').join('');
}
