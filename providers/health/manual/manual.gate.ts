import type { GateContext, GateObservation, HealthGate } from '../../../src/core/ports.ts';
import { readDecision } from './manual.decision.ts';
import type { ManualGateConfig } from './manual.schema.ts';

/**
 * The `manual` gate: passes when `keyrotor confirm <key|rotationId>` recorded a confirmation for this
 * rotation; a `--reject` ends the wait at once (final) and the rotation rolls back.
 */
export function createManualGateImpl(cfg: ManualGateConfig, name: string, stateDir: string): HealthGate {
  return {
    type: 'manual',
    name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx: GateContext): Promise<GateObservation> {
      const r = await readDecision(stateDir, ctx.keyName, ctx.rotationId);
      if (r.kind === 'none') {
        return {
          pass: false,
          observation: `waiting for \`keyrotor confirm ${ctx.keyName}\` (or --reject) for rotation ${ctx.rotationId}`,
        };
      }
      if (r.kind === 'unreadable') return { pass: false, observation: `decision unreadable: ${r.detail}` };
      const d = r.decision;
      const why = d.reason ? `: ${d.reason}` : '';
      if (d.decision === 'confirm') return { pass: true, observation: `confirmed by ${d.by} at ${d.at}${why}` };
      return { pass: false, final: true, observation: `rejected by ${d.by} at ${d.at}${why}` };
    },
  };
}
