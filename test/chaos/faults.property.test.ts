/**
 * Fault property (issue 5), at the port level: fast-check draws a fault for any provider call of a
 * rotation (issuer create/verify/revoke/list/identify/check, every store call) — the error the
 * providers map 5xx, 429 + retry-after, timeouts, connection resets and malformed answers to
 * (retryable or not), applied-then-lost responses included — and runs the real machine with the real
 * stage implementations over the in-memory fakes. Every run ends rotated, rolled back or
 * needs_attention with a reason, and the rotation invariant holds against the fakes' own state.
 * (Wire-level faults against the real SDKs are in crash.test.ts / kill.test.ts and the provider suites.)
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { ErrorCode } from '../../src/core/errors.ts';
import { invariantViolations, makeWorld, runWorld, type Setup } from '../workflows/harness.ts';
import { CANARY } from '../canary.ts';

const ISSUER_METHODS = ['check', 'create', 'verify', 'revoke', 'list', 'identify'] as const;
const STORE_METHODS = [
  'check',
  'readCurrent',
  'readPrevious',
  'readPending',
  'stage',
  'promote',
  'demote',
  'unstage',
] as const;
// what the providers map wire trouble to: 5xx/timeouts/resets -> *_UNAVAILABLE (retryable),
// 429 -> ISSUER_RATE_LIMITED (retryable), malformed answers -> *_BAD_RESPONSE / STORE_CORRUPT, lost create -> CREATE_AMBIGUOUS
const CODES: ErrorCode[] = [
  'ISSUER_UNAVAILABLE',
  'ISSUER_RATE_LIMITED',
  'ISSUER_BAD_RESPONSE',
  'CREATE_AMBIGUOUS',
  'STORE_UNAVAILABLE',
  'STORE_CORRUPT',
  'STORE_CONFLICT',
];

const fault = fc.record({
  target: fc.oneof(
    fc.record({ kind: fc.constant('issuer' as const), method: fc.constantFrom(...ISSUER_METHODS) }),
    fc.record({
      kind: fc.constant('store' as const),
      index: fc.integer({ min: 0, max: 1 }),
      method: fc.constantFrom(...STORE_METHODS),
    }),
  ),
  code: fc.constantFrom(...CODES),
  retryable: fc.boolean(),
  times: fc.integer({ min: 1, max: 4 }),
  after: fc.boolean(), // applied, then the answer is lost
});

describe('fault property: any provider call may fail in any way', () => {
  it('every run ends rotated, rolled back or needs_attention with a reason; the invariant holds (1,000 runs)', async () => {
    const endings = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Setup>('rotate', 'rotate', 'bootstrap'),
        fc.boolean(),
        fc.array(fault, { minLength: 1, maxLength: 3 }),
        async (setup, leaked, faults) => {
          const w = makeWorld({ stores: 2, gates: 1, setup, leaked: leaked && setup === 'rotate' });
          for (const f of faults) {
            const target = f.target.kind === 'issuer' ? w.issuer.faults : w.stores[f.target.index]!.faults;
            target.set(f.target.method, { code: f.code, retryable: f.retryable, times: f.times, after: f.after });
          }
          const r = await runWorld(w);
          const final = r.final!;
          endings.set(final, (endings.get(final) ?? 0) + 1);
          expect(['rotated', 'rolledBack', 'failed', 'needsAttention', 'rollbackFailed']).toContain(final);
          if (final !== 'rotated') {
            // a reason: the error that stopped it, and for a human the leftovers (unless nothing changed)
            expect(r.context.error ?? r.context.compensationError).not.toBeNull();
            if (final === 'rollbackFailed') expect(r.context.leftovers.length).toBeGreaterThan(0);
          }
          expect(invariantViolations(w, r.context, final)).toEqual([]);
          expect(JSON.stringify(r.snapshots)).not.toContain(CANARY);
        },
      ),
      { numRuns: 1000, seed: Number(process.env.KEYROTOR_CHAOS_SEED ?? Date.now() % 2 ** 31) },
    );
    console.log(`fault property: 1000 runs, endings ${JSON.stringify(Object.fromEntries(endings))}`);
    expect(endings.get('rotated') ?? 0).toBeGreaterThan(0);
    expect((endings.get('rolledBack') ?? 0) + (endings.get('failed') ?? 0)).toBeGreaterThan(0);
  }, 120_000);
});
