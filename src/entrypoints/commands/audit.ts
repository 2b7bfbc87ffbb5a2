import type { RotationHistory, VerifyReport } from '../../app/audit/index.ts';
import { displayPath } from '../../core/fs.ts';
import type { CommandContext } from './context.ts';

/**
 * `keyrotor audit verify [--json]`: check the audit log's hash chain, name the first broken record.
 * `keyrotor history [<key>] [--json] [--limit N]`: past rotations from the audit log.
 */
/** `keyrotor audit verify` (declared in index.ts) */
export async function runAuditVerify(ctx: CommandContext, opts: { json?: boolean }): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const report = await (await ctx.auditLog(cfg)).verify();
  ctx.exit(report.ok ? 0 : 1);
  ctx.io.stdout(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderVerify(report));
}

/** `keyrotor history` (declared in index.ts) */
export async function runHistory(
  ctx: CommandContext,
  key: string | undefined,
  opts: { json?: boolean; limit?: number },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  if (key !== undefined) ctx.pickKeys(cfg, [key]); // unknown names are a usage error
  const [{ buildHistory }, { colorEnabled }] = await Promise.all([
    import('../../app/audit/index.ts'),
    import('../../app/preflight.ts'),
  ]);
  const log = await ctx.auditLog(cfg);
  const { records, warnings } = await log.read();
  for (const w of warnings) ctx.io.stderr(`keyrotor: warning: audit log ${displayPath(log.file)}: ${w}\n`);
  const rotations = buildHistory(records, { key, limit: opts.limit });
  ctx.io.stdout(
    opts.json ? JSON.stringify({ rotations }, null, 2) + '\n' : renderHistory(rotations, colorEnabled(ctx.io.env)),
  );
}

export function renderVerify(r: VerifyReport): string {
  const where = displayPath(r.file);
  const lines: string[] = [];
  if (r.ok) {
    lines.push(
      r.records === 0
        ? `audit log ${where}: empty (no rotation recorded yet)`
        : `audit log ${where}: ${r.records} record(s), chain intact (head #${r.headSeq} sha256:${r.headHash})`,
    );
  } else {
    const b = r.broken!;
    const ctxt = [
      `line ${b.line}`,
      b.key ? `key ${b.key}` : '',
      b.rotationId ? `rotation ${b.rotationId}` : '',
      b.state ? `state ${b.state}` : '',
    ]
      .filter(Boolean)
      .join(', ');
    lines.push(`audit log ${where}: BROKEN at record #${b.seq ?? '?'} (${ctxt}): ${b.reason}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n') + '\n';
}

const OUTCOME_COLOR: Record<string, string> = {
  rotated: '32',
  rolled_back: '33',
  needs_attention: '31',
  locked: '33',
  in_progress: '36',
  waiting: '36',
};

export function renderHistory(rs: RotationHistory[], color = false): string {
  if (rs.length === 0) return 'no rotation recorded in the audit log yet\n';
  const paint = (o: string, s: string) => (color && OUTCOME_COLOR[o] ? `\u001b[${OUTCOME_COLOR[o]}m${s}\u001b[0m` : s);
  const out: string[] = [];
  for (const r of rs) {
    const outcome = r.outcome ?? 'unfinished';
    const who = [r.actor, r.user && r.host ? `${r.user}@${r.host}` : (r.user ?? r.host)].filter(Boolean).join(' ');
    out.push(
      `${r.startedAt}  ${r.key}  ${paint(outcome, outcome.toUpperCase())}${r.leaked ? ' (LEAKED)' : ''}  ${r.rotationId ?? '(no rotation started)'}${who ? `  by ${who}` : ''}`,
    );
    if (r.oldKeyId || r.newKeyId) out.push(`    keys: ${r.oldKeyId ?? '(none)'} → ${r.newKeyId ?? '(none)'}`);
    if (r.stages.length)
      out.push(
        `    stages: ${r.stages.map((s) => `${s.state}${s.error ? ` ✗ ${s.error.code}` : ''}${s.resumed ? ' (resumed)' : ''}`).join(' → ')}`,
      );
    if (r.error) out.push(`    error: ${r.error.code}: ${r.error.message}`);
    for (const l of r.leftovers ?? []) out.push(`    ! ${l}`);
  }
  return out.join('\n') + '\n';
}
