import type { CommandContext } from './context.ts';

/** `keyrotor validate` (declared in index.ts) */
export async function runValidate(ctx: CommandContext): Promise<void> {
  const cfg = await ctx.config();
  ctx.io.stdout(
    `${cfg.file}: valid (${cfg.keys.length} key${cfg.keys.length === 1 ? '' : 's'}: ${cfg.keys.map((k) => k.name).join(', ')})\n`,
  );
}

/** `keyrotor schema` (declared in index.ts) */
export async function runSchema(ctx: CommandContext): Promise<void> {
  const { configJsonSchema } = await import('../../app/config/schema.ts');
  ctx.io.stdout(JSON.stringify(configJsonSchema(), null, 2) + '\n');
}
