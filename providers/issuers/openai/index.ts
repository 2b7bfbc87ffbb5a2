import { KeyrotorError } from '../../../src/core/errors.ts';
import type { Issuer, ProviderContext } from '../../../src/core/ports.ts';
import type { OpenAIIssuerConfig } from './openai.schema.ts';

// placeholder until the OpenAI issuer lands
export async function createOpenAIIssuer(_cfg: OpenAIIssuerConfig, _ctx: ProviderContext): Promise<Issuer> {
  throw new KeyrotorError('CONFIG_INVALID', 'issuer type "openai" is not available yet');
}
