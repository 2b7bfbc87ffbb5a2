import type { InventoryKey, InventoryReport } from '../../app/inventory.ts';
import { table, type CommandContext } from './context.ts';

/** `keyrotor inventory [<key>...] [--json] [--unused-days N]`: every key of the configured OpenAI projects. */
export async function runInventory(
  ctx: CommandContext,
  names: string[],
  opts: { json?: boolean; unusedDays?: number },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const keys = ctx.pickKeys(cfg, names);
  const [{ runInventory }, { colorEnabled }] = await Promise.all([
    import('../../app/inventory.ts'),
    import('../../app/preflight.ts'),
  ]);
  const report = await runInventory({
    config: cfg,
    keys,
    stateStore: await ctx.stateStore(cfg),
    logger: await ctx.logger(),
    env: ctx.io.env,
    ...(opts.unusedDays ? { unusedDays: opts.unusedDays } : {}),
  });
  for (const p of report.projects) {
    if (p.error) {
      ctx.io.stderr(
        `keyrotor: ${p.error.code}: cannot list ${p.project}: ${p.error.message}${p.error.hint ? ` (${p.error.hint})` : ''}\n`,
      );
      ctx.exit(Math.max(1, errorExit(p.error.code)));
    }
  }
  if (report.flagged > 0) ctx.exit(1);
  ctx.io.stdout(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderInventory(report, colorEnabled(ctx.io.env)));
}

function errorExit(code: string): number {
  return code.startsWith('CONFIG_') || code === 'USAGE' ? 2 : 1;
}

function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const d = (now - Date.parse(iso)) / 86_400_000;
  if (d < 0) return `in ${human(-d)}`;
  return `${human(d)} ago`;
}
function human(days: number): string {
  if (days >= 2) return `${Math.floor(days)}d`;
  const h = days * 24;
  if (h >= 1) return `${Math.floor(h)}h`;
  return `${Math.max(0, Math.floor(h * 60))}m`;
}

function owner(k: InventoryKey): string {
  if (!k.owner) return '?';
  const who = k.owner.name ?? k.owner.id;
  return k.owner.type === 'service_account'
    ? `sa:${who}`
    : k.owner.type === 'user'
      ? `user:${who}`
      : `${k.owner.type}:${who}`;
}

export function renderInventory(r: InventoryReport, color = false): string {
  const now = Date.parse(r.generatedAt);
  const red = (s: string) => (color ? `\u001b[31m${s}\u001b[0m` : s);
  if (r.projects.length === 0) return 'no key of this config uses the openai issuer: nothing to inventory\n';
  const rows = r.keys.map((k) => [
    k.project,
    k.keyId,
    k.name ?? '-',
    owner(k),
    k.ageDays === null ? '?' : `${k.ageDays}d`,
    ago(k.lastUsedAt, now),
    k.expiresAt
      ? Date.parse(k.expiresAt) > now
        ? `in ${human((Date.parse(k.expiresAt) - now) / 86_400_000)}`
        : 'expired'
      : 'never',
    k.managedBy ? `${k.managedBy}${k.role ? ` (${k.role})` : ''}` : '-',
    k.flags.length ? red(k.flags.map((f) => f.flag).join(',')) : '-',
  ]);
  let out = table(['PROJECT', 'KEY ID', 'NAME', 'OWNER', 'AGE', 'LAST USED', 'EXPIRES', 'MANAGED BY', 'FLAGS'], rows);
  const notes = r.keys.flatMap((k) => k.flags.map((f) => `! ${k.keyId} ${f.flag}: ${f.reason}`));
  if (notes.length) out += '\n' + notes.join('\n') + '\n';
  out += `\n${r.keys.length} key(s) in ${r.projects.length} project(s); ${r.flagged ? red(`${r.flagged} flagged`) : 'none flagged'} (stale = unused for ${r.unusedDays} days)\n`;
  return out;
}
