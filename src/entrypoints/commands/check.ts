import { colorEnabled, renderPreflight, runPreflight } from '../../preflight.ts';
import type { RegisterCommand } from './context.ts';

/** `keyrotor check [<key>...] [--json]`: preflight per key, one line per check, the fix when it fails. */
export const registerCheck: RegisterCommand = (ctx) => {
  ctx.program
    .command('check')
    .description('preflight: the issuer can list (and create), the service account exists, every store is reachable and writable, the gates answer')
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--json', 'print { "ok", "checks": [ { "key", "check", "status", "detail", "fix"? } ] } on stdout')
    .addHelpText(
      'after',
      `
One line per check: ok | warn | FAIL | skip, the key, the check, what was seen, and "→ fix: ..." when
it fails. Read-only: nothing is created, written or locked.
Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 usage/config.`,
    )
    .action(async (names: string[], opts: { json?: boolean }) => {
      ctx.setJson(opts.json === true);
      const cfg = await ctx.config();
      const keys = ctx.pickKeys(cfg, names);
      const report = await runPreflight({ config: cfg, keys, stateStore: ctx.stateStore(cfg), logger: await ctx.logger(), env: ctx.io.env });
      ctx.exit(report.ok ? 0 : 1);
      ctx.io.stdout(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderPreflight(report, { color: colorEnabled(ctx.io.env) }));
    });
};
