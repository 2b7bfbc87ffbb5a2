/**
 * The `usage-drain` gate: evidence from the issuer that consumers moved.
 *
 * Passes when, in the issuer's key list,
 *   - the new key's `lastUsedAt` is after `promotedAt` (unless `requireNewKeyUse: false`), and
 *   - the old key shows no use for `quiet`: its `lastUsedAt` is at least `quiet` old, and, if this
 *     process saw that timestamp move, at least `quiet` has passed (on our clock) since it moved.
 *     The second rule keeps the gate honest when the issuer's clock and ours disagree. An old key
 *     that is gone from the list, or never used, is quiet.
 *
 * `lastUsedAt` granularity is undocumented for OpenAI (seconds on the wire): a use in the same second
 * as the promotion is not counted as use of the new key, which only ever makes the gate stricter.
 * keyrotor's own `issuer-smoke-test` gate calls the API with the new key after promotion, so with
 * both gates configured the "new key used" half is satisfied by keyrotor itself; the old-key half is
 * the real drain evidence.
 */
import type { Clock } from '../../../src/core/clock.ts';
import { formatDuration } from '../../../src/core/duration.ts';
import type { GateContext, GateObservation, HealthGate, Issuer, IssuerKeyInfo } from '../../../src/core/ports.ts';
import type { UsageDrainGateConfig } from './usage-drain.schema.ts';

const ms = (iso: string | null | undefined): number | null => {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
};

const ago = (now: number, t: number) => `${formatDuration(Math.max(0, now - t))} ago`;

/** What the gate remembers per rotation: the old key's last seen lastUsedAt, and when (our clock) it moved. */
export interface DrainWatch {
  oldLast: number | null;
  movedAt: number | null;
}

/**
 * Where the gate keeps its watch between checks made by different processes (a parked rotation is
 * continued by any worker: docs/operations.md#durable-waits). Without it the watch lives in memory
 * only, and a new process starts watching afresh (which would forget a move it did not see).
 */
export interface DrainMemory {
  load(rotationId: string): Promise<DrainWatch | undefined>;
  save(rotationId: string, w: DrainWatch): Promise<void>;
}

export function createUsageDrainGateImpl(
  cfg: UsageDrainGateConfig,
  name: string,
  issuer: Issuer,
  clock: Clock,
  memory?: DrainMemory,
): HealthGate {
  /** per rotation: the old key's last seen lastUsedAt, and when (our clock) we saw it move */
  const watch = new Map<string, DrainWatch>();

  return {
    type: 'usage-drain',
    name,
    timeoutMs: cfg.timeout,
    intervalMs: cfg.interval,
    async check(ctx: GateContext): Promise<GateObservation> {
      const keys = await issuer.list();
      const now = clock.now();
      const byId = new Map<string, IssuerKeyInfo>(keys.map((k) => [k.keyId, k]));
      const parts: string[] = [];

      // the new key: used since promotion?
      const neu = byId.get(ctx.newKeyId);
      let newOk: boolean;
      if (!neu) {
        newOk = false;
        parts.push(`the new key ${ctx.newKeyId} is not in the issuer's list yet`);
      } else if (neu.lastUsedAt === undefined) {
        return {
          pass: false,
          final: true,
          observation: `the ${issuer.type} issuer does not report when keys were last used`,
        };
      } else {
        const used = ms(neu.lastUsedAt);
        const promoted = ms(ctx.promotedAt) ?? now;
        newOk = !cfg.requireNewKeyUse || (used !== null && used > promoted);
        if (!cfg.requireNewKeyUse) parts.push('new key use not required');
        else
          parts.push(
            used === null
              ? 'the new key was never used'
              : used > promoted
                ? `the new key was used ${ago(now, used)}`
                : 'the new key was not used since promotion',
          );
      }

      // the old key: quiet for `quiet`?
      let oldOk: boolean;
      if (!ctx.oldKeyId) {
        oldOk = true;
        parts.push('no old key');
      } else {
        const old = byId.get(ctx.oldKeyId);
        if (!old) {
          oldOk = true;
          parts.push(`the old key ${ctx.oldKeyId} is no longer listed`);
          watch.delete(ctx.rotationId);
        } else {
          const last = ms(old.lastUsedAt);
          // first check in this process: what an earlier process of this rotation saw (a durable wait)
          const w = watch.get(ctx.rotationId) ?? (await memory?.load(ctx.rotationId));
          let movedAt = w?.movedAt ?? null;
          if (w && w.oldLast !== last) movedAt = now;
          const next: DrainWatch = { oldLast: last, movedAt };
          watch.set(ctx.rotationId, next);
          if (memory && (w?.oldLast !== next.oldLast || w?.movedAt !== next.movedAt))
            await memory.save(ctx.rotationId, next);
          // last_used_at arrives in whole seconds: a use stamped S may have happened up to S+999 ms,
          // so the quiet window starts at the end of that second (stricter, never looser)
          const quietSince = Math.max(
            last === null || last === undefined ? Number.NEGATIVE_INFINITY : last + 1000,
            movedAt ?? Number.NEGATIVE_INFINITY,
          );
          if (quietSince === Number.NEGATIVE_INFINITY) {
            oldOk = true;
            parts.push('the old key was never used');
          } else {
            const quietFor = now - quietSince;
            oldOk = quietFor >= cfg.quiet;
            parts.push(
              last === null
                ? `the old key's last use was cleared ${ago(now, quietSince)}`
                : oldOk
                  ? `the old key was last used ${ago(now, last)} (quiet ${formatDuration(cfg.quiet)} reached)`
                  : `the old key was used ${ago(now, Math.max(last, movedAt ?? last))}: needs ${formatDuration(cfg.quiet)} quiet, ${formatDuration(Math.max(0, cfg.quiet - quietFor))} to go`,
            );
          }
        }
      }
      return { pass: newOk && oldOk, observation: parts.join('; ') };
    },
  };
}
