/**
 * `keyrotor state init`: create (or migrate) the configured state backend's schema/table.
 * `keyrotor state export [--out file]`: every key record, the audit trail and the pending webhook
 *   outbox as JSON lines.
 * `keyrotor state import <file> [--overwrite]`: write an export into the configured backend.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../core/errors.ts';
import { errnoOf, displayPath } from '../../core/fs.ts';
import type { StateStore } from '../../core/ports.ts';
import type { CommandContext } from './context.ts';

async function withStore<T>(
  ctx: CommandContext,
  fn: (s: StateStore, cfg: Awaited<ReturnType<CommandContext['config']>>) => Promise<T>,
): Promise<T> {
  const cfg = await ctx.config();
  return fn(await ctx.stateStore(cfg), cfg); // main() closes the store
}

/** `keyrotor state init` (declared in index.ts) */
export async function runStateInit(ctx: CommandContext, opts: { json?: boolean }): Promise<void> {
  ctx.setJson(opts.json === true);
  await withStore(ctx, async (store) => {
    const r = store.init ? await store.init() : { changed: false, steps: ['file backend: nothing to set up'] };
    ctx.io.stdout(
      opts.json
        ? JSON.stringify({ backend: store.label, ...r }, null, 2) + '\n'
        : r.steps.map((s) => `${store.label}: ${s}\n`).join(''),
    );
  });
}

/** `keyrotor state export` (declared in index.ts) */
export async function runStateExport(ctx: CommandContext, opts: { out?: string }): Promise<void> {
  const { exportState } = await import('../../app/state/transfer.ts');
  await withStore(ctx, async (store, cfg) => {
    const { lines, keys, audit, outbox, warnings } = await exportState(store, new Date(), await ctx.auditLog(cfg));
    for (const w of warnings) ctx.io.stderr(`keyrotor: warning: audit trail: ${w}\n`);
    const text = lines.join('\n') + '\n';
    if (!opts.out) return ctx.io.stdout(text);
    const file = path.resolve(opts.out);
    try {
      await writeFile(file, text, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      const code = errnoOf(e);
      throw new KeyrotorError(
        'USAGE',
        code === 'EEXIST'
          ? `--out ${displayPath(file)} already exists; choose a new file`
          : `cannot write --out ${displayPath(file)} (${code ?? 'unknown error'})`,
      );
    }
    ctx.io.stderr(
      `exported ${keys} key(s), ${audit} audit record(s) and ${outbox} pending notification(s) from ${store.label} to ${displayPath(file)}\n`,
    );
  });
}

/** `keyrotor state import <file>` (declared in index.ts) */
export async function runStateImport(
  ctx: CommandContext,
  file: string,
  opts: { overwrite?: boolean; json?: boolean },
): Promise<void> {
  ctx.setJson(opts.json === true);
  const { importState, parseExportFull } = await import('../../app/state/transfer.ts');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new KeyrotorError(
      'USAGE',
      `cannot read ${displayPath(path.resolve(file))} (${errnoOf(e) ?? 'unknown error'})`,
    );
  }
  const { records, audit, outbox } = parseExportFull(text, displayPath(path.resolve(file)));
  await withStore(ctx, async (store, cfg) => {
    const r = await importState(store, records, {
      overwrite: opts.overwrite === true,
      audit: { log: await ctx.auditLog(cfg), records: audit },
      outbox,
    });
    if (opts.json)
      return ctx.io.stdout(JSON.stringify({ backend: store.label, ...r, audit: audit.length }, null, 2) + '\n');
    ctx.io.stdout(
      `imported ${r.imported.length} key(s) and ${audit.length} audit record(s) into ${store.label}: ${r.imported.join(', ') || '(none)'}\n`,
    );
    if (r.outbox)
      ctx.io.stdout(
        `pending webhook notifications: ${r.outbox} in the outbox (the next run against this backend delivers them)` +
          (r.outboxAlreadyPending
            ? `; ${r.outboxAlreadyPending} of them were already there (same id, one entry)`
            : '') +
          '\n',
      );
    if (r.active.length)
      ctx.io.stdout(`unfinished rotations (run \`keyrotor resume\` against this backend): ${r.active.join(', ')}\n`);
  });
}
