import type { Issuer, ProviderContext } from '../../../src/core/ports.ts';
import type { OpenAIIssuerConfig } from './openai.schema.ts';
import { createOpenAIIssuerImpl } from './openai.issuer.ts';

/**
 * OpenAI project keys through the Admin API. Nothing is sent at construction: the admin key is read
 * from `cfg.adminKeyEnv` on the first Admin API call (a missing one is CONFIG_ENV_MISSING), and the
 * service account is resolved (configured, remembered, found by name or created) on first need.
 */
export async function createOpenAIIssuer(cfg: OpenAIIssuerConfig, ctx: ProviderContext): Promise<Issuer> {
  return createOpenAIIssuerImpl(cfg, ctx);
}
