import { KeyrotorError } from '../../../src/core/errors.ts';
import type { Issuer, ProviderContext } from '../../../src/core/ports.ts';
import type { OpenAIIssuerConfig } from './openai.schema.ts';
import { createOpenAIIssuerImpl } from './openai.issuer.ts';

/**
 * OpenAI project keys through the Admin API. Nothing is sent at construction, but a missing admin key
 * is a configuration error reported here (exit 2, before any state is written). The admin client is
 * built on the first Admin API call and the service account is resolved (configured, remembered,
 * found by name or created) on first need.
 */
export async function createOpenAIIssuer(cfg: OpenAIIssuerConfig, ctx: ProviderContext): Promise<Issuer> {
  if (!ctx.env[cfg.adminKeyEnv]?.trim()) {
    throw new KeyrotorError(
      'CONFIG_ENV_MISSING',
      `openai issuer of ${ctx.keyName}: environment variable ${cfg.adminKeyEnv} (admin key) is not set`,
      {
        hint: `export ${cfg.adminKeyEnv}=<an OpenAI admin key> (or point adminKeyEnv at the variable that holds it)`,
      },
    );
  }
  return createOpenAIIssuerImpl(cfg, ctx);
}
