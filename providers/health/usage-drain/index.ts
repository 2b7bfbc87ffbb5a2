import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { createUsageDrainGateImpl, type DrainMemory, type DrainWatch } from './usage-drain.gate.ts';
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
  return createUsageDrainGateImpl(cfg, name, deps.issuer, ctx.clock, drainMemory(ctx, name));
}

/**
 * The watch kept as one remembered fact of the key (`usage-drain.<gate>`: the rotation id and what
 * was seen), written under the rotation's lease when it changes, read fresh by the first check of a
 * process: a parked rotation continued by another worker keeps the old key's movement it saw.
 */
function drainMemory(ctx: ProviderContext, gateName: string): DrainMemory {
  const fact = `usage-drain.${gateName}`;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    async load(rotationId) {
      const text = ctx.providerState.fresh ? await ctx.providerState.fresh(fact) : ctx.providerState.get(fact);
      if (!text) return undefined;
      try {
        const v = JSON.parse(text) as { rotationId?: unknown; oldLast?: unknown; movedAt?: unknown };
        return v.rotationId === rotationId ? { oldLast: num(v.oldLast), movedAt: num(v.movedAt) } : undefined;
      } catch {
        return undefined; // unreadable: watch afresh (stricter from here on, never looser than memory-only)
      }
    },
    async save(rotationId, w: DrainWatch) {
      try {
        await ctx.providerState.set(fact, JSON.stringify({ rotationId, ...w }));
      } catch (e) {
        ctx.logger.warn(
          { gate: gateName, err: e instanceof Error ? e.message : String(e) },
          'usage-drain: could not remember what this check saw (kept in memory only)',
        );
      }
    },
  };
}
