import { configJsonSchema } from '../../config/schema.ts';
import type { RegisterCommand } from './context.ts';

export const registerValidate: RegisterCommand = (ctx) => {
  ctx.program
    .command('validate')
    .description('check the config file; exit 0 when valid, 2 otherwise')
    .action(async () => {
      const cfg = await ctx.config();
      ctx.io.stdout(`${cfg.file}: valid (${cfg.keys.length} key${cfg.keys.length === 1 ? '' : 's'}: ${cfg.keys.map((k) => k.name).join(', ')})\n`);
    });

  ctx.program
    .command('schema')
    .description('print the JSON Schema of rotation.config.yaml (for editor completion)')
    .action(() => {
      ctx.io.stdout(JSON.stringify(configJsonSchema(), null, 2) + '\n');
    });
};
