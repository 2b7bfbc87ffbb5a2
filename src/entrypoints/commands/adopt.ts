import { KeyrotorError } from '../../core/errors.ts';
import { fingerprint } from '../../core/fingerprint.ts';
import { isLease } from '../../core/ports.ts';
import type { CommandContext } from './context.ts';

export async function runAdopt(ctx: CommandContext, name: string, opts: { keyId: string }): Promise<void> {
  const cfg = await ctx.config();
  const key = ctx.pickKeys(cfg, [name])[0]!;
  const stateStore = await ctx.stateStore(cfg);
  const record = await stateStore.read(key.name);
  const { closeProviders, composeKey } = await import('../../app/compose.ts');
  const p = await composeKey({ config: cfg, key, stateStore, record, logger: await ctx.logger(), env: ctx.io.env });
  try {
    const lease = await stateStore.acquire(key.name, `adopt:${process.pid}`, 60_000);
    if (!isLease(lease)) throw new KeyrotorError('LOCKED', `${key.name} is being rotated by ${lease.owner}`);
    try {
      const current = await p.stores[0]!.readCurrent();
      if (!current)
        throw new KeyrotorError('USAGE', `${p.stores[0]!.label} holds no value for ${key.name}: nothing to adopt`);
      const known = await p.issuer.list();
      if (!known.some((k) => k.keyId === opts.keyId)) {
        throw new KeyrotorError('USAGE', `the issuer has no key with id ${opts.keyId} (${known.length} keys listed)`);
      }
      const fp = fingerprint(current.secret);
      await stateStore.setProviderState(key.name, `adopted.${fp}`, opts.keyId, lease);
      ctx.io.stdout(`${key.name}: the current value (${fp}) is now known as issuer key ${opts.keyId}\n`);
    } finally {
      await lease.release();
    }
  } finally {
    await closeProviders(p);
  }
}
