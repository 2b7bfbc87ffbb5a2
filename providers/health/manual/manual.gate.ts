import type { GateContext, GateObservation, HealthGate } from '../../../src/core/ports.ts';
import { decisionStateKey, parseDecision, readDecision, type ReadDecision } from './manual.decision.ts';
import type { ManualGateConfig } from './manual.schema.ts';

/**
 * The `manual` gate: passes when `keyrotor confirm <key|rotationId>` recorded a confirmation for this
 * rotation; a `--reject` ends the wait at once (final) and the rotation rolls back.
 */
export function createManualGateImpl(
  cfg: ManualGateConfig,
  name: string,
  stateDir: string,
  /** the key's remembered facts, read fresh (database state backends keep decisions there) */
  fresh?: (key: string) => Promise<string | undefined>,
): HealthGate {
  async function decisionOf(keyName: string, rotationId: string): Promise<ReadDecision> {
    const file = await readDecision(stateDir, keyName, rotationId);
    if (file.kind !== 'none' || !fresh) return file;
    let text: string | undefined;
    try {
      text = await fresh(decisionStateKey(rotationId));
    } catch (e) {
      return {
        kind: 'unreadable',
        detail: `cannot read the state store (${e instanceof Error ? e.message : String(e)})`,
      };
    }
    return text === undefined
      ? { kind: 'none' }
      : parseDecision(text, `the decision for ${rotationId} in the state store`, keyName, rotationId);
  }
  return {
    type: 'manual',
    name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx: GateContext): Promise<GateObservation> {
      const r = await decisionOf(ctx.keyName, ctx.rotationId);
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
