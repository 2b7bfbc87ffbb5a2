import { KeyrotorError } from '../../core/errors.ts';
import type { CommandContext } from './context.ts';

/**
 * `keyrotor validate` (declared in index.ts): every problem on its own line (stderr), then the usual
 * one-line error (exit 2); or one line saying the config is valid.
 */
export async function runValidate(ctx: CommandContext): Promise<void> {
  const { ConfigError, problemLine, validateConfig } = await import('../../app/config/load.ts');
  let cfg;
  try {
    cfg = await validateConfig(ctx.program.opts<{ config: string }>().config, ctx.io.env);
  } catch (e) {
    if (e instanceof ConfigError && e.problems.length > 1) {
      for (const p of e.problems) ctx.io.stderr(`${problemLine(p)}\n`);
      throw new KeyrotorError(e.code, `${e.problems.length} problems in the config (listed above)`);
    }
    throw e;
  }
  ctx.io.stdout(
    `${cfg.file}: valid (${cfg.keys.length} key${cfg.keys.length === 1 ? '' : 's'}: ${cfg.keys.map((k) => k.name).join(', ')})\n`,
  );
}

/** `keyrotor schema` (declared in index.ts) */
export async function runSchema(ctx: CommandContext): Promise<void> {
  const { configJsonSchema } = await import('../../app/config/schema.ts');
  ctx.io.stdout(JSON.stringify(configJsonSchema(), null, 2) + '\n');
}
