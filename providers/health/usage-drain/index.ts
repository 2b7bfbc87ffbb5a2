import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { createUsageDrainGateImpl } from './usage-drain.gate.ts';
import type { UsageDrainGateConfig } from './usage-drain.schema.ts';

/** Drain evidence from the issuer's key list; refuses issuers that do not report key usage. */
export async function createUsageDrainGate(
  cfg: UsageDrainGateConfig,
  ctx: ProviderContext,
  deps: GateDeps,
): Promise<HealthGate> {
  const name = cfg.name ?? cfg.type;
  if (deps.issuer.reportsUsage !== true) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `usage-drain gate "${name}" of ${ctx.keyName}: the ${deps.issuer.type} issuer does not report when keys were last used`,
      {
        hint: 'use usage-drain with the openai issuer, or confirm consumers with an http, command or manual gate',
      },
    );
  }
  return createUsageDrainGateImpl(cfg, name, deps.issuer, ctx.clock);
}
