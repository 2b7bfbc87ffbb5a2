import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import type { IssuerSmokeTestGateConfig } from './issuer-smoke-test.schema.ts';

/**
 * Passes when the new key (read back from the first store) is accepted by the issuer, and, with
 * `model`, when that model can be retrieved with it. An unknown or revoked key is retried (new keys
 * take a moment to work); missing scopes, or a model the key cannot use, end the wait at once.
 */
export async function createIssuerSmokeTestGate(
  cfg: IssuerSmokeTestGateConfig,
  ctx: ProviderContext,
  deps: GateDeps,
): Promise<HealthGate> {
  const name = cfg.name ?? cfg.type;
  const issuer = deps.issuer;
  const model = cfg.model;
  if (model !== undefined && !issuer.probe) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `issuer-smoke-test gate "${name}" of ${ctx.keyName}: the ${issuer.type} issuer cannot check a model (model: ${model})`,
      {
        hint: 'remove `model` from the gate, or use an issuer that supports it (openai)',
      },
    );
  }
  return {
    type: cfg.type,
    name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx) {
      const secret = await ctx.readNewSecret();
      const what = model !== undefined ? `model ${model} with ${ctx.newFingerprint}` : ctx.newFingerprint;
      const r =
        model !== undefined && issuer.probe ? await issuer.probe(secret, { model }) : await issuer.verify(secret);
      if (r.ok) return { pass: true, observation: `issuer accepts ${what}` };
      const final = r.reason === 'missing_scopes' || (model !== undefined && r.reason === 'error' && !r.retryable);
      return {
        pass: false,
        observation: `issuer rejects ${what}: ${r.reason} (${r.detail})`,
        ...(final ? { final: true } : {}),
      };
    },
  };
}
