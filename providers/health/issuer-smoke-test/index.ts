import { KeyrotorError } from '../../../src/core/errors.ts';
import type { HealthGate, Issuer, ProviderContext, VerifyResult } from '../../../src/core/ports.ts';
import type { Secret } from '../../../src/core/secret.ts';
import type { GateDeps } from '../../index.ts';
import type { IssuerSmokeTestGateConfig } from './issuer-smoke-test.schema.ts';

/**
 * A declared cheap call made with a key (optional issuer capability; proposed for src/core/ports.ts
 * as `Issuer.probe?`). `model`: retrieve that model.
 */
export interface IssuerProbe {
  model: string;
}
type ProbeCapable = Issuer & { probe(secret: Secret, call: IssuerProbe): Promise<VerifyResult> };

export function canProbe(issuer: Issuer): issuer is ProbeCapable {
  return typeof (issuer as { probe?: unknown }).probe === 'function';
}

/**
 * Passes when the new key (read back from the first store) is accepted by the issuer, and, with
 * `model`, when that model can be retrieved with it. An unknown or revoked key is retried (new keys
 * take a moment to work); missing scopes, or a model the key cannot use, end the wait at once.
 */
export async function createIssuerSmokeTestGate(cfg: IssuerSmokeTestGateConfig, ctx: ProviderContext, deps: GateDeps): Promise<HealthGate> {
  const name = cfg.name ?? cfg.type;
  const issuer = deps.issuer;
  const model = cfg.model;
  if (model !== undefined && !canProbe(issuer)) {
    throw new KeyrotorError('CONFIG_INVALID', `issuer-smoke-test gate "${name}" of ${ctx.keyName}: the ${issuer.type} issuer cannot check a model (model: ${model})`, {
      hint: 'remove `model` from the gate, or use an issuer that supports it (openai)',
    });
  }
  return {
    type: cfg.type,
    name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx) {
      const secret = await ctx.readNewSecret();
      const what = model !== undefined ? `model ${model} with ${ctx.newFingerprint}` : ctx.newFingerprint;
      const r = model !== undefined && canProbe(issuer) ? await issuer.probe(secret, { model }) : await issuer.verify(secret);
      if (r.ok) return { pass: true, observation: `issuer accepts ${what}` };
      const final = r.reason === 'missing_scopes' || (model !== undefined && r.reason === 'error' && !r.retryable);
      return { pass: false, observation: `issuer rejects ${what}: ${r.reason} (${r.detail})`, ...(final ? { final: true } : {}) };
    },
  };
}
