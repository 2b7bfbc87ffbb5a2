import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { createManualGateImpl } from './manual.gate.ts';
import type { ManualGateConfig } from './manual.schema.ts';

/** Waits for `keyrotor confirm` (decision files in `<stateDir>/confirm/`, or in a database state backend). */
export async function createManualGate(
  cfg: ManualGateConfig,
  ctx: ProviderContext,
  _deps: GateDeps,
): Promise<HealthGate> {
  return createManualGateImpl(cfg, cfg.name ?? cfg.type, ctx.stateDir, ctx.providerState.fresh);
}
