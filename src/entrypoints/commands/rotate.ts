import { KeyrotorError } from '../../core/errors.ts';
import { OUTCOME_EXIT } from '../../core/stages.ts';
import type { KeyResult } from '../../app/run.ts';
import { cliProgress, type CommandContext } from './context.ts';
import { handleInterrupts } from './interrupt.ts';

export async function runRotate(
  ctx: CommandContext,
  names: string[],
  opts: {
    now?: boolean;
    leaked?: boolean;
    revokeFirst?: boolean;
    dryRun?: boolean;
    json?: boolean;
    full?: boolean;
    concurrency?: number;
    park?: boolean;
  },
): Promise<void> {
  ctx.setJson(opts.json === true);
  if (opts.revokeFirst && (!opts.leaked || !opts.now))
    throw new KeyrotorError(
      'USAGE',
      '--revoke-first needs --now --leaked: it deletes a leaked key before its replacement exists',
    );
  if (opts.leaked && !opts.now)
    throw new KeyrotorError('USAGE', '--leaked needs --now: a leaked key is rotated immediately');
  if (opts.leaked && names.length === 0) throw new KeyrotorError('USAGE', '--leaked needs the key name(s) that leaked');
  const cfg = await ctx.config();
  const keys = ctx.pickKeys(cfg, names);
  const logger = await ctx.logger();
  const [{ rotateKeys }, { defaultObservers, flushObservers }] = await Promise.all([
    import('../../app/run.ts'),
    import('../../app/observers.ts'),
  ]);
  const progress = cliProgress(ctx, logger);
  const stateStore = await ctx.stateStore(cfg);
  const observers = [
    ...defaultObservers({
      config: cfg,
      logger,
      actor: 'cli',
      env: ctx.io.env,
      stateStore,
      outbox: opts.dryRun !== true, // a dry run sends nothing
      own: ctx.own,
    }),
    progress,
  ];
  const base = {
    config: cfg,
    stateStore,
    logger,
    observers,
    env: ctx.io.env,
    actor: 'cli',
    now: opts.now === true,
    leaked: opts.leaked === true,
    ...(opts.revokeFirst ? { revokeFirst: true } : {}),
    dryRun: opts.dryRun === true,
    park: opts.park === true,
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
  };
  // Ctrl-C / SIGTERM: pause at the next safe point (not for --dry-run, which changes nothing)
  const interrupts = opts.dryRun ? null : handleInterrupts({ io: ctx.io, keys: keys.map((k) => k.name) });
  const run = interrupts ? { ...base, signal: interrupts.signal } : base;
  let results: KeyResult[];
  try {
    results = await rotateKeys(keys, run);
    if (opts.full && !opts.dryRun && !interrupts?.received) {
      const again = keys.filter((k) => results.some((r) => r.key === k.name && r.bootstrap && r.outcome === 'rotated'));
      if (again.length) results.push(...(await rotateKeys(again, { ...run, now: true })));
    }
  } finally {
    interrupts?.dispose();
  }
  if (opts.dryRun) {
    // the plan, then the preflight checks (read-only): exit 1 when one fails
    const { colorEnabled, renderPreflight, runPreflight } = await import('../../app/preflight.ts');
    const preflight = await runPreflight({ config: cfg, keys, stateStore: base.stateStore, logger, env: ctx.io.env });
    ctx.exit(preflight.ok ? 0 : 1);
    ctx.io.stdout(
      opts.json
        ? JSON.stringify({ results, preflight }, null, 2) + '\n'
        : renderResults(results) + renderPreflight(preflight, { color: colorEnabled(ctx.io.env) }),
    );
    return;
  }
  ctx.exit(Math.max(0, ...results.map((r) => OUTCOME_EXIT[r.outcome])));
  await flushObservers(observers, 10_000); // pending webhook deliveries, bounded
  ctx.io.stdout(opts.json ? JSON.stringify({ results }, null, 2) + '\n' : renderResults(results));
  const paused = interrupts?.report(results);
  if (paused) {
    ctx.io.stderr(paused.message);
    ctx.exit(paused.exitCode);
  }
}

export function renderResults(results: KeyResult[]): string {
  const rows = results.map((r) => {
    let what: string;
    if (r.dryRun)
      what = `${r.plan?.due ? 'would rotate' : 'not due'}: ${r.plan?.reason}; issuer ${r.plan?.issuer}, stores ${r.plan?.stores.join('+')}, gates ${r.plan?.gates.join('+') || 'none'}${r.plan?.resume ? `; would resume ${r.plan.resume}` : ''}${r.plan?.leaked ? '; LEAK MODE (gates skipped, the old key revoked at once, never restored)' : ''}`;
    else if (r.outcome === 'rotated')
      what = r.placeholder
        ? `bootstrapped over the placeholder: new key ${r.newKeyId} stored; the placeholder was not revoked (it is no key)`
        : r.bootstrap
          ? `bootstrapped: new key ${r.newKeyId} stored, nothing to revoke`
          : `${r.oldKeyId} → ${r.newKeyId}; old key revoked and confirmed dead`;
    else if (r.outcome === 'skipped') what = 'not due';
    else if (r.outcome === 'in_progress') what = `paused at ${r.stage}; the next run continues it`;
    else if (r.outcome === 'waiting')
      what = `${r.untouched ? 'parked' : 'parked now'} at ${r.stage} until ${r.wakeAt}; the next worker run from then continues it (\`keyrotor resume --now ${r.key}\` checks it at once)`;
    else what = r.error ? `${r.error.code}: ${r.error.message}` : r.outcome;
    if (r.leaked && !r.dryRun)
      what += `; the leaked key was last used ${r.oldKeyLastUsedAt ?? (r.revokedFirst ? 'never or unknown (read alongside the delete)' : 'never (as far as the issuer knows)')}`;
    if (r.revokedFirst)
      what += r.consumersStillWithoutKey
        ? `; revoked first: consumers have had NO working key for ${r.consumersWithoutKeyMs} ms and still have none`
        : `; revoked first: consumers had no working key for ${r.consumersWithoutKeyMs} ms`;
    const lines = [`${r.key}  ${r.outcome.toUpperCase()}  ${what}${r.rotationId ? `  [${r.rotationId}]` : ''}`];
    for (const l of r.leftovers ?? []) lines.push(`    ! ${l}`);
    return lines.join('\n');
  });
  return rows.join('\n') + '\n';
}
