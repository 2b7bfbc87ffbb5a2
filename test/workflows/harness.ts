/**
 * Drives the real rotation machine with the real stage implementations over in-memory fakes, wired
 * the way production wires it (`createRotationActor`).
 */
import type { SnapshotFrom } from 'xstate';
import { issuedKeyName, newRotationId } from '../../src/core/ids.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import type { HealthGate } from '../../src/core/ports.ts';
import { silentLogger } from '../../src/app/log.ts';
import { systemClock, type Clock } from '../../src/core/clock.ts';
import {
  type FinalState,
  type RotationContext,
  type RotationInput,
  type RotationMachine,
} from '../../workflows/rotation/rotation.machine.ts';
import { createRotationActor, SecretVault, type RotationDeps } from '../../workflows/rotation/stages/index.ts';
import { MemoryIssuer, MemoryStore } from '../fakes/memory.ts';
import { Secret } from '../../src/core/secret.ts';

export type Setup = 'rotate' | 'bootstrap' | 'unidentified';

export class ScriptGate implements HealthGate {
  readonly type = 'script';
  readonly timeoutMs = 60_000;
  readonly intervalMs = 10;
  pass = true;
  readonly name: string;
  constructor(name = 'script') {
    this.name = name;
  }
  async check() {
    return this.pass
      ? { pass: true, observation: 'ok' }
      : { pass: false, observation: 'consumer rejected the key', final: true };
  }
}

export interface World {
  issuer: MemoryIssuer;
  stores: MemoryStore[];
  gates: ScriptGate[];
  oldKey: { id: string; value: string } | null;
  input: RotationInput;
}

export function makeWorld(
  opts: { stores?: number; gates?: number; leaked?: boolean; revokeFirst?: boolean; setup?: Setup } = {},
): World {
  const issuer = new MemoryIssuer();
  const stores = Array.from({ length: opts.stores ?? 2 }, (_, i) => new MemoryStore(`memory:${i}`));
  const gates = Array.from({ length: opts.gates ?? 1 }, (_, i) => new ScriptGate(`gate${i}`));
  const setup = opts.setup ?? 'rotate';
  let oldKey: World['oldKey'] = null;
  if (setup !== 'bootstrap') {
    oldKey = issuer.plant('keyrotor.app.rot-20260101t000000z-0000aaaa');
    if (setup === 'unidentified') issuer.keys = issuer.keys.filter((k) => k.id !== oldKey!.id); // value unknown to the issuer
    const rotationId = 'rot-20260101t000000z-0000aaaa';
    for (const s of stores) {
      // an earlier rotation (or a hand-made key) left this as current
      void s.stage({
        rotationId,
        secret: Secret.of(oldKey.value),
        meta: setup === 'rotate' ? { rotationId, issuerKeyId: oldKey.id, fingerprint: fingerprint(oldKey.value) } : {},
      });
      void s.promote(rotationId);
    }
  }
  const rotationId = newRotationId();
  const input: RotationInput = {
    rotationId,
    keyName: 'app',
    newKeyName: issuedKeyName('app', rotationId),
    leaked: opts.leaked ?? false,
    ...(opts.revokeFirst ? { revokeFirst: true } : {}),
    storeLabels: stores.map((s) => s.label),
    gateNames: gates.map((g) => g.name),
    timing: {
      verifyTimeoutMs: 5_000,
      gateTimeoutsMs: gates.map((g) => g.timeoutMs),
      revokeAttempts: 3,
      revokeBackoffMs: 1,
      verifyRevokedTimeoutMs: 5_000,
    },
    expiresInSeconds: 3600,
    startedAt: Date.now(),
  };
  return { issuer, stores, gates, oldKey, input };
}

export interface RunOptions {
  /** wrap the actors (e.g. scripted faults) */
  wrap?: (deps: RotationDeps) => RotationDeps;
  /** crash right after the n-th persisted snapshot: returns that snapshot instead of a final state */
  crashAt?: number;
  /**
   * crash right after a store call completed: its effect is applied, its answer is never seen and no
   * snapshot is written after it (kill -9 between a provider call and the next persist). Called with
   * `store:<index>.<method>` and how many store calls came before; returns the last persisted snapshot.
   */
  crashAfterStoreCall?: (label: string, n: number) => boolean;
  snapshot?: unknown;
}

export interface RunResult {
  final: FinalState | null;
  context: RotationContext;
  states: string[];
  snapshots: unknown[];
}

/**
 * The real clock, with every wait 50× shorter: the in-memory world needs no time to settle, so the
 * stages' retry backoffs (up to seconds) and poll intervals only cost wall time. Deadlines stay on the
 * real clock.
 */
const quickClock: Clock = { now: () => systemClock.now(), sleep: (ms, signal) => systemClock.sleep(ms / 50, signal) };

export async function runWorld(w: World, o: RunOptions = {}): Promise<RunResult> {
  let crashed = false;
  const snapshots: unknown[] = [];
  let deps: RotationDeps = {
    issuer: w.issuer,
    stores: w.stores,
    gates: w.gates,
    clock: quickClock,
    logger: silentLogger(),
    vault: new SecretVault(), // a fresh vault: memory does not survive a crash
    adopted: () => undefined,
    verifyIntervalMs: 1,
    verifyRevokedIntervalMs: 1,
    retryAttempts: 2,
    persisted: async () => {
      await new Promise<void>((r) => setImmediate(r));
      if (crashed) await new Promise<never>(() => {}); // the process is gone: no side effect happens
    },
  };
  if (o.wrap) deps = o.wrap(deps);
  let crashNow: (() => void) | undefined;
  if (o.crashAfterStoreCall) {
    const when = o.crashAfterStoreCall;
    let n = 0;
    deps = {
      ...deps,
      stores: deps.stores.map(
        (store, i) =>
          new Proxy(store, {
            get: (t, prop) => {
              const v = Reflect.get(t, prop, t) as unknown;
              if (typeof v !== 'function') return v;
              return async (...args: unknown[]) => {
                if (crashed) return new Promise<never>(() => {});
                const label = `store:${i}.${String(prop)}`;
                const at = n++;
                const out: unknown = await (v as (...a: unknown[]) => unknown).apply(t, args);
                if (!crashed && when(label, at)) {
                  crashNow?.();
                  return new Promise<never>(() => {}); // the answer is never seen
                }
                return out;
              };
            },
          }),
      ),
    };
  }
  // the production wiring (src/app/run): one shared machine, this rotation's deps by actor system
  const actor = createRotationActor(
    deps,
    o.snapshot ? { snapshot: o.snapshot as SnapshotFrom<RotationMachine> } : { input: w.input },
  );
  const states: string[] = [];
  const result = await new Promise<RunResult>((resolve, reject) => {
    let last: { context: RotationContext; states: string[] } | undefined;
    crashNow = () => {
      crashed = true;
      actor.stop();
      resolve({ final: null, context: last!.context, states, snapshots });
    };
    actor.subscribe({
      next: (s) => {
        const v = String(s.value);
        if (states[states.length - 1] !== v || s.hasTag('perStore')) states.push(v);
        last = { context: s.context, states };
        const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
        snapshots.push(persisted);
        if (s.status === 'done') resolve({ final: s.value as FinalState, context: s.context, states, snapshots });
        else if (o.crashAt !== undefined && snapshots.length > o.crashAt && !crashed) {
          crashed = true;
          actor.stop();
          resolve({ final: null, context: s.context, states, snapshots });
        }
      },
      error: reject,
    });
    actor.start();
  });
  return result;
}

/** Checks the rotation invariant against the fakes' own state. Returns violations (empty = ok). */
export function invariantViolations(w: World, ctx: RotationContext, final: FinalState): string[] {
  const v: string[] = [];
  const currents = w.stores.map((s) => s.currentValue());
  // every consumer-facing slot holds a key that works at the issuer (or nothing, for a bootstrap that rolled back)
  for (const [i, c] of currents.entries()) {
    if (c === null) {
      if (w.oldKey && !(ctx.leaked && final !== 'rotated')) v.push(`store ${i} serves nothing`);
      continue;
    }
    if (!w.issuer.keys.some((k) => k.value === c) && final !== 'needsAttention' && final !== 'rollbackFailed') {
      v.push(`store ${i} serves a key that does not work at the issuer`);
    }
  }
  // every key keyrotor created is current somewhere or deleted
  for (const k of w.issuer.keys) {
    if (k.name !== ctx.newKeyName) continue;
    const reported =
      (final === 'needsAttention' || final === 'rollbackFailed') &&
      ctx.leftovers.some((l) => l.includes(k.id) || l.includes(k.name));
    if (!currents.includes(k.value) && !reported) v.push(`orphan key ${k.id} at the issuer`);
  }
  // a store that was switched to the new key never serves the leaked key again
  if (ctx.leaked && w.oldKey && currents.slice(0, ctx.promoted).includes(w.oldKey.value))
    v.push('the leaked key is current again');
  if (final === 'rotated') {
    if (!currents.every((c) => c !== null && c === currents[0])) v.push('stores disagree after rotation');
    if (w.oldKey && w.issuer.alive(w.oldKey.id)) v.push('old key still alive after rotation');
  }
  if (final === 'rolledBack' && w.oldKey) {
    if (!currents.every((c) => c === w.oldKey!.value)) v.push('old key not current after rollback');
  }
  return v;
}
