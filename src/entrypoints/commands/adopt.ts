import { closeProviders, composeKey } from '../../compose.ts';
import { KeyrotorError } from '../../core/errors.ts';
import { fingerprint } from '../../core/fingerprint.ts';
import { isLease } from '../../core/ports.ts';
import type { RegisterCommand } from './context.ts';

export const registerAdopt: RegisterCommand = (ctx) => {
  ctx.program
    .command('adopt')
    .description('tell keyrotor which issuer key the value in the store is (for keys a person created by hand)')
    .argument('<key>', 'key name from the config')
    .requiredOption('--key-id <id>', 'issuer key id of the value that is current in the store')
    .action(async (name: string, opts: { keyId: string }) => {
      const cfg = await ctx.config();
      const key = ctx.pickKeys(cfg, [name])[0]!;
      const stateStore = ctx.stateStore(cfg);
      const record = await stateStore.read(key.name);
      const p = await composeKey({ config: cfg, key, stateStore, record, logger: await ctx.logger(), env: ctx.io.env });
      try {
        const lease = await stateStore.acquire(key.name, `adopt:${process.pid}`, 60_000);
        if (!isLease(lease)) throw new KeyrotorError('LOCKED', `${key.name} is being rotated by ${lease.owner}`);
        try {
          const current = await p.stores[0]!.readCurrent();
          if (!current) throw new KeyrotorError('USAGE', `${p.stores[0]!.label} holds no value for ${key.name}: nothing to adopt`);
          const known = await p.issuer.list();
          if (!known.some((k) => k.keyId === opts.keyId)) {
            throw new KeyrotorError('USAGE', `the issuer has no key with id ${opts.keyId} (${known.length} keys listed)`);
          }
          const fp = fingerprint(current.secret);
          await stateStore.setProviderState(key.name, `adopted.${fp}`, opts.keyId);
          ctx.io.stdout(`${key.name}: the current value (${fp}) is now known as issuer key ${opts.keyId}\n`);
        } finally {
          await lease.release();
        }
      } finally {
        await closeProviders(p);
      }
    });
};
