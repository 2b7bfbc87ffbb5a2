import { isDue } from '../../run.ts';
import { table, type RegisterCommand } from './context.ts';

export const registerStatus: RegisterCommand = (ctx) => {
  ctx.program
    .command('status')
    .description('show per key: current key id, last rotation, next due, last outcome')
    .option('--json', 'print { "keys": [...] } on stdout')
    .action(async (opts: { json?: boolean }) => {
      ctx.setJson(opts.json === true);
      const cfg = await ctx.config();
      const stateStore = ctx.stateStore(cfg);
      const now = Date.now();
      const keys = [];
      for (const k of cfg.keys) {
        const rec = await stateStore.read(k.name);
        const due = isDue(k, rec, now);
        keys.push({
          name: k.name,
          currentKeyId: rec?.currentKeyId ?? null,
          lastRotatedAt: rec?.lastRotatedAt ?? null,
          nextDueAt: due.nextDueAt,
          due: due.due,
          lastOutcome: rec?.last?.outcome ?? null,
          activeRotation: rec?.active?.rotationId ?? null,
        });
      }
      if (opts.json) ctx.io.stdout(JSON.stringify({ keys }, null, 2) + '\n');
      else
        ctx.io.stdout(
          table(
            ['KEY', 'CURRENT KEY ID', 'LAST ROTATED', 'NEXT DUE', 'LAST OUTCOME'],
            keys.map((k) => [
              k.name,
              k.currentKeyId ?? '-',
              k.lastRotatedAt ?? 'never',
              k.due ? 'now' : (k.nextDueAt ?? '-'),
              (k.lastOutcome ?? '-') + (k.activeRotation ? ` (unfinished ${k.activeRotation})` : ''),
            ]),
          ),
        );
    });
};
