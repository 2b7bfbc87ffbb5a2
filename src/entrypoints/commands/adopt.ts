import { hostname } from 'node:os';
import { KeyrotorError } from '../../core/errors.ts';
import { fingerprint } from '../../core/fingerprint.ts';
import { isLease } from '../../core/ports.ts';
import type { LoadedConfig } from '../../app/config/load.ts';
import type { CommandContext } from './context.ts';

/**
 * `keyrotor adopt <key> --key-id <id>`: the store's current value is this issuer key (made by hand).
 * `keyrotor adopt <key> --placeholder`: the store's current value is no key at all (a dummy such as
 * CHANGE_ME written by infrastructure code); the next rotation bootstraps over it and revokes nothing
 * for it (see workflows/rotation/stages/placeholder.ts). Both are recorded in the key's state record
 * and in the audit trail.
 */
export async function runAdopt(
  ctx: CommandContext,
  name: string,
  opts: { keyId?: string; placeholder?: boolean; reason?: string },
): Promise<void> {
  if ((opts.keyId === undefined) === (opts.placeholder !== true))
    throw new KeyrotorError(
      'USAGE',
      'adopt needs exactly one of --key-id <id> (a real key made by hand) or --placeholder (a dummy value that is no key)',
    );
  const cfg = await ctx.config();
  const key = ctx.pickKeys(cfg, [name])[0]!;
  const stateStore = await ctx.stateStore(cfg);
  const record = await stateStore.read(key.name);
  if (opts.placeholder && record?.active)
    throw new KeyrotorError(
      'USAGE',
      `${key.name} has an unfinished rotation (${record.active.rotationId}): finish it first (\`keyrotor resume ${key.name}\`)`,
    );
  const { closeProviders, composeKey } = await import('../../app/compose.ts');
  const p = await composeKey({ config: cfg, key, stateStore, record, logger: await ctx.logger(), env: ctx.io.env });
  try {
    const lease = await stateStore.acquire(key.name, `adopt:${process.pid}`, 60_000);
    if (!isLease(lease)) throw new KeyrotorError('LOCKED', `${key.name} is being rotated by ${lease.owner}`);
    try {
      if (opts.keyId !== undefined) {
        const current = await p.stores[0]!.readCurrent();
        if (!current)
          throw new KeyrotorError('USAGE', `${p.stores[0]!.label} holds no value for ${key.name}: nothing to adopt`);
        const known = await p.issuer.list();
        if (!known.some((k) => k.keyId === opts.keyId)) {
          throw new KeyrotorError('USAGE', `the issuer has no key with id ${opts.keyId} (${known.length} keys listed)`);
        }
        const fp = fingerprint(current.secret);
        await stateStore.setProviderState(key.name, `adopted.${fp}`, opts.keyId, lease);
        await audit(ctx, cfg, { key: key.name, oldFingerprint: fp, oldKeyId: opts.keyId, reason: opts.reason });
        ctx.io.stdout(`${key.name}: the current value (${fp}) is now known as issuer key ${opts.keyId}\n`);
        return;
      }
      // --placeholder: every store's current value (a store may also be empty)
      const currents = await Promise.all(p.stores.map((s) => s.readCurrent()));
      const values = currents.filter((c) => c !== null);
      if (values.length === 0)
        throw new KeyrotorError(
          'USAGE',
          `every store of ${key.name} is empty: nothing to declare (the first rotation bootstraps it anyway)`,
        );
      const fps = [...new Set(values.map((c) => fingerprint(c.secret)))];
      for (const c of values) {
        if (c.meta.issuerKeyId)
          throw new KeyrotorError(
            'USAGE',
            `the current value of ${key.name} (${fingerprint(c.secret)}) was stored by keyrotor as issuer key ${c.meta.issuerKeyId}: it is a key, not a placeholder`,
          );
        const adoptedId = record?.providerState[`adopted.${fingerprint(c.secret)}`];
        if (adoptedId)
          throw new KeyrotorError(
            'USAGE',
            `the current value of ${key.name} (${fingerprint(c.secret)}) was adopted as issuer key ${adoptedId}: it is a key, not a placeholder`,
          );
        // a live key must never be mistaken for a dummy: it would stay alive unnoticed
        const id = await p.issuer.identify(c.secret);
        if (id.kind !== 'not_found')
          throw new KeyrotorError(
            'USAGE',
            `the current value of ${key.name} (${fingerprint(c.secret)}) matches issuer key ${id.kind === 'found' ? id.keyId : id.candidates.join(' or ')}: it is a key, not a placeholder (use --key-id)`,
          );
      }
      const at = new Date().toISOString();
      for (const fp of fps) await stateStore.setProviderState(key.name, `placeholder.${fp}`, at, lease);
      for (const fp of fps)
        await audit(ctx, cfg, { key: key.name, oldFingerprint: fp, placeholder: true, reason: opts.reason });
      ctx.io.stdout(
        `${key.name}: the current value (${fps.join(', ')}) is declared a placeholder, not a key: the next rotation bootstraps over it and revokes nothing for it\n`,
      );
    } finally {
      await lease.release();
    }
  } finally {
    await closeProviders(p);
  }
}

/** One `adopt` record in the audit trail (when the audit trail is on). */
async function audit(
  ctx: CommandContext,
  cfg: LoadedConfig,
  e: { key: string; oldFingerprint: string; oldKeyId?: string; placeholder?: boolean; reason?: string | undefined },
): Promise<void> {
  const { auditSettings } = await import('../../app/audit/index.ts');
  const { osUser } = await import('../../app/audit/observer.ts');
  if (!auditSettings(cfg).enabled) return;
  await (
    await ctx.auditLog(cfg)
  ).append({
    type: 'adopt',
    time: new Date().toISOString(),
    key: e.key,
    actor: 'cli',
    user: osUser(),
    host: hostname(),
    oldFingerprint: e.oldFingerprint,
    ...(e.oldKeyId ? { oldKeyId: e.oldKeyId } : {}),
    ...(e.placeholder ? { placeholder: true } : {}),
    ...(e.reason ? { reason: e.reason } : {}),
  });
}
