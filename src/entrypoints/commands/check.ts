import type { CommandContext } from './context.ts';

/** `keyrotor check [<key>...] [--json]`: preflight per key, one line per check, the fix when it fails. */
export async function runCheck(ctx: CommandContext, names: string[], opts: { json?: boolean }): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const keys = ctx.pickKeys(cfg, names);
  const { colorEnabled, renderPreflight, runPreflight } = await import('../../app/preflight.ts');
  const report = await runPreflight({
    config: cfg,
    keys,
    stateStore: await ctx.stateStore(cfg),
    logger: await ctx.logger(),
    env: ctx.io.env,
  });
  ctx.exit(report.ok ? 0 : 1);
  ctx.io.stdout(
    opts.json ? JSON.stringify(report, null, 2) + '\n' : renderPreflight(report, { color: colorEnabled(ctx.io.env) }),
  );
}
