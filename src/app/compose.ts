/**
 * The single composition root: config -> providers -> rotation dependencies.
 * Providers come through the lazy registry, so only the SDKs a config uses are ever loaded.
 */
import type { LoadedConfig } from './config/load.ts';
import type { ResolvedKey } from './config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import type {
  Fence,
  HealthGate,
  Issuer,
  KeyRecord,
  Logger,
  ProviderContext,
  SecretStore,
  StateStore,
} from '../core/ports.ts';
import { createGate, createIssuer, createStore } from '../../providers/index.ts';
import type { RotationTiming } from '../../workflows/rotation/rotation.machine.ts';

export interface KeyProviders {
  issuer: Issuer;
  stores: SecretStore[];
  gates: HealthGate[];
  ctx: ProviderContext;
}

export interface ComposeOptions {
  config: LoadedConfig;
  key: ResolvedKey;
  stateStore: StateStore;
  /** the lease held when a provider remembers a fact (its writes are fenced by the token), if any */
  fence?: () => Fence | undefined;
  record: KeyRecord | null;
  logger: Logger;
  clock?: Clock;
  env?: NodeJS.ProcessEnv;
}

export async function composeKey(o: ComposeOptions): Promise<KeyProviders> {
  const providerState = { ...(o.record?.providerState ?? {}) };
  const ctx: ProviderContext = {
    keyName: o.key.name,
    stateDir: o.config.stateDir,
    configDir: o.config.dir,
    logger: o.logger,
    clock: o.clock ?? systemClock,
    env: o.env ?? process.env,
    providerState: {
      get: (k) => providerState[k],
      set: async (k, v) => {
        providerState[k] = v;
        await o.stateStore.setProviderState(o.key.name, k, v, o.fence?.());
      },
      fresh: async (k) => (await o.stateStore.read(o.key.name))?.providerState[k],
    },
  };
  const issuer = await createIssuer(o.key.issuer, ctx);
  const stores = await Promise.all(o.key.stores.map((s) => createStore(s, ctx)));
  const gates = await Promise.all(o.key.health.map((g, index) => createGate(g, ctx, { issuer, index })));
  return { issuer, stores, gates, ctx };
}

export function timingFor(key: ResolvedKey, gates: HealthGate[]): RotationTiming {
  const d = key.defaults;
  return {
    verifyTimeoutMs: d.verify.timeout,
    gateTimeoutsMs: gates.map((g) => g.timeoutMs),
    revokeAttempts: d.revoke.attempts,
    revokeBackoffMs: d.revoke.backoff,
    verifyRevokedTimeoutMs: d.verifyRevoked.timeout,
    retryBudgetMs: d.retry.budget,
  };
}

/** The expiry safety net for new keys, in seconds, or null when off / not supported. */
export function expiresInSecondsFor(key: ResolvedKey): number | null {
  const issuer = key.issuer;
  if (!('expiresAfter' in issuer)) return null;
  if (issuer.expiresAfter === 'off') return null;
  const ms = issuer.expiresAfter === 'auto' ? key.schedule.every + key.grace : issuer.expiresAfter;
  return Math.ceil(ms / 1000);
}

/** Close every provider that holds connections; never throws (the rotation result matters more). */
export async function closeProviders(p: KeyProviders): Promise<void> {
  await Promise.allSettled([p.issuer.close?.(), ...p.stores.map((s) => s.close?.())]);
}
