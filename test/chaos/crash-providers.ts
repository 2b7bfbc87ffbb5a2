/**
 * The provider registry of the in-process crash suites (crash.test.ts, crash-backends.test.ts,
 * consumer-eye.test.ts): the
 * real providers, each wrapped by the key's current CrashSwitch (crash-switch.ts). Azure is composed
 * with a stub credential and the fake's CA exactly as test/entrypoints/fanout.test.ts does. A test file
 * installs it with
 *
 *   vi.mock('../../providers/index.ts', async (importOriginal) =>
 *     (await import('./crash-providers.ts')).crashProviders(await importOriginal()));
 */
import { currentSwitch } from './crash-switch.ts';

type Registry = typeof import('../../providers/index.ts');

/** per key: the CA of that world's Azure fake */
export const azureCa = new Map<string, string>();

export function crashProviders(
  mod: Registry,
  opts: {
    /** a store built for this context is the real one, outside any crash switch (e.g. a consumer's reader) */
    unswitched?: (ctx: Parameters<Registry['createStore']>[1]) => boolean;
  } = {},
): Registry {
  return {
    ...mod,
    createIssuer: async (cfg: Parameters<Registry['createIssuer']>[0], ctx: Parameters<Registry['createIssuer']>[1]) =>
      currentSwitch(ctx.keyName).wrapPort(await mod.createIssuer(cfg, ctx), 'issuer'),
    createStore: async (cfg: Parameters<Registry['createStore']>[0], ctx: Parameters<Registry['createStore']>[1]) => {
      if (opts.unswitched?.(ctx)) return mod.createStore(cfg, ctx);
      if (cfg.type === 'azure-key-vault') {
        const az = await import('../../providers/stores/azure-key-vault/index.ts');
        const s = await az.createAzureKeyVaultStore(cfg, ctx, {
          credential: {
            getToken: async () => ({ token: 'loopback-chaos-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
          },
          clientOptions: {
            tlsOptions: { ca: azureCa.get(ctx.keyName) },
            disableChallengeResourceVerification: true,
            retryOptions: { maxRetries: 2, retryDelayInMs: 10, maxRetryDelayInMs: 40 },
          },
        });
        return currentSwitch(ctx.keyName).wrapPort(s, `store:${cfg.type}`);
      }
      return currentSwitch(ctx.keyName).wrapPort(await mod.createStore(cfg, ctx), `store:${cfg.type}`);
    },
  };
}
