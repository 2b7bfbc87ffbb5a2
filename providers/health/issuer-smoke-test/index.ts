import type { HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import type { GateDeps } from '../../index.ts';
import type { IssuerSmokeTestGateConfig } from './issuer-smoke-test.schema.ts';

/** Passes when the new key (read back from the first store) is accepted by the issuer. */
export async function createIssuerSmokeTestGate(cfg: IssuerSmokeTestGateConfig, _ctx: ProviderContext, deps: GateDeps): Promise<HealthGate> {
  return {
    type: cfg.type,
    name: cfg.name ?? cfg.type,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx) {
      const secret = await ctx.readNewSecret();
      const r = await deps.issuer.verify(secret);
      if (r.ok) return { pass: true, observation: `issuer accepts ${ctx.newFingerprint}` };
      return { pass: false, observation: `issuer rejects ${ctx.newFingerprint}: ${r.reason} (${r.detail})`, final: r.reason === 'missing_scopes' };
    },
  };
}
