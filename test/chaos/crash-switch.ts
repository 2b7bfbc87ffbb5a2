/**
 * Simulated crashes of an in-process rotation (src/run.ts rotateKey with the real providers).
 *
 * A CrashSwitch wraps every port object a run uses — the issuer, each store and the state store —
 * and counts their calls ("events": every issuer/store call and every state-store write). At the
 * planned event the process "dies":
 *   - before: that call never happens;
 *   - after:  that call completes (its effect is applied) but its result is never seen;
 *   - wire:   at the n-th HTTP request the run sends to the OpenAI fake, the fake applies it and loses
 *             the answer (or resets it unapplied) — a kill in the middle of a provider call that makes
 *             several requests.
 * From then on every call of the dead run hangs forever and no state write happens, so exactly what
 * was persisted survives, as after kill -9. Each run talks to the OpenAI fake with its own admin key,
 * which the fake forgets when the run dies: requests the dead run's SDK would still send (retries)
 * are refused unapplied, as if they never left the dead process. Calls already in flight are allowed
 * to settle, then the dead run's connections are closed and its lease is left to expire.
 */
import type { Issuer, Lease, LeaseHolder, SecretStore, StateStore } from '../../src/core/ports.ts';
import type { OpenAIFake } from '../fakes/openai-admin.ts';

export type CrashPlan =
  { kind: 'event'; at: number; mode: 'before' | 'after' } | { kind: 'wire'; at: number; applied: boolean };

const never = <T>(): Promise<T> => new Promise<T>(() => {});

/** per configured key: the switch its next providers are wrapped with (set before each run) */
const active = new Map<string, CrashSwitch>();
export function currentSwitch(keyName: string): CrashSwitch {
  const sw = active.get(keyName);
  if (!sw) throw new Error(`chaos: no CrashSwitch installed for key ${keyName}`);
  return sw;
}

export class CrashSwitch {
  readonly plan: CrashPlan | null;
  /** issuer/store calls and state writes seen so far */
  events = 0;
  /** requests sent to the OpenAI fake so far (wire plans) */
  wire = 0;
  crashed = false;
  /** where it died, for reports */
  where = '';
  /** store and state-store calls on the wire (the issuer's are neutralised by revoking the admin key) */
  readonly inflight = new Set<Promise<unknown>>();
  readonly closers: (() => Promise<void>)[] = [];
  readonly #openai: OpenAIFake | undefined;
  #unlisten: (() => void) | undefined;
  #crashResolve!: () => void;
  /** resolves when the run dies */
  readonly died: Promise<void>;

  readonly #adminKey: string | undefined;
  /** called with the label of every issuer/store/state call as it starts (to arm a fault there) */
  onCall: ((label: string) => void) | undefined;

  /** `adminKey`: this run's own admin key at the OpenAI fake, forgotten when the run dies */
  readonly keyName: string;

  constructor(keyName: string, plan: CrashPlan | null, openai?: OpenAIFake, adminKey?: string) {
    this.keyName = keyName;
    this.plan = plan;
    this.#openai = openai;
    this.#adminKey = adminKey;
    this.died = new Promise<void>((r) => (this.#crashResolve = r));
    active.set(keyName, this);
    if (openai) {
      this.#unlisten = openai.onRequest((entry) => {
        if (this.crashed) return;
        const n = this.wire++;
        if (plan?.kind !== 'wire' || n !== plan.at) return;
        // this request is the one in flight when the process dies (queued faults are dropped so that
        // this one decides whether it is applied)
        openai.resetFaults();
        if (plan.applied) openai.loseResponse('*', 1);
        else openai.resetConnection('*', 1);
        this.crash(
          `wire request ${n} (${entry.method} ${entry.route}, ${plan.applied ? 'applied, answer lost' : 'not applied'})`,
        );
      });
    }
  }

  crash(where: string): void {
    if (this.crashed) return;
    this.crashed = true;
    this.where = where;
    if (this.#adminKey) this.#openai?.state.adminKeys.delete(this.#adminKey);
    this.#crashResolve();
  }

  /** Run `fn` as event number `this.events`, honouring the plan; hangs forever once dead. */
  #event<T>(label: string, fn: () => Promise<T>, awaitOnCrash = true): Promise<T> {
    if (this.crashed) return never();
    const n = this.events++;
    this.onCall?.(label);
    const p = this.plan;
    if (p?.kind === 'event' && p.at === n && p.mode === 'before') {
      this.crash(`before event ${n} (${label})`);
      return never();
    }
    const call = fn();
    if (awaitOnCrash) {
      this.inflight.add(call);
      const done = () => this.inflight.delete(call);
      call.then(done, done);
    }
    if (p?.kind === 'event' && p.at === n && p.mode === 'after') {
      return call.then(
        () => (this.crash(`after event ${n} (${label})`), never<T>()),
        () => (this.crash(`after event ${n} (${label}, which failed)`), never<T>()),
      );
    }
    return call.then(
      (v) => (this.crashed ? never<T>() : v),
      (e: unknown) => (this.crashed ? never<T>() : Promise.reject(e)),
    );
  }

  /** calls that are not events (reads of the state store) still stop when the process is dead */
  #quiet<T>(fn: () => Promise<T>): Promise<T> {
    if (this.crashed) return never();
    const call = fn();
    this.inflight.add(call);
    const done = () => this.inflight.delete(call);
    call.then(done, done);
    return call.then(
      (v) => (this.crashed ? never<T>() : v),
      (e: unknown) => (this.crashed ? never<T>() : Promise.reject(e)),
    );
  }

  /** Wrap an issuer or a store: every async method is an event. */
  wrapPort<T extends Issuer | SecretStore>(target: T, label: string): T {
    const close = (target as { close?: () => Promise<void> }).close;
    if (close) this.closers.push(() => close.call(target));
    return new Proxy(target, {
      get: (t, prop, recv) => {
        const v = Reflect.get(t, prop, recv) as unknown;
        if (typeof v !== 'function') return v;
        if (prop === 'close') return () => (this.crashed ? Promise.resolve() : (v as () => Promise<void>).call(t));
        // a dead run's issuer calls need not be waited for: its admin key is revoked at the crash, so
        // whatever its SDK still sends (retries after backoff) is refused unapplied
        const isIssuer = label === 'issuer';
        return (...args: unknown[]) =>
          this.#event(
            `${label}.${String(prop)}`,
            () => Promise.resolve((v as (...a: unknown[]) => Promise<unknown>).apply(t, args)),
            !isIssuer || !this.#adminKey,
          );
      },
    });
  }

  /** Wrap the state store: writes are events, reads just stop when dead; the lease dies with the run. */
  wrapStateStore(s: StateStore): StateStore {
    return {
      label: s.label,
      ...(s.auditTrail ? { auditTrail: s.auditTrail } : {}),
      read: (k) => this.#quiet(() => s.read(k)),
      keys: () => this.#quiet(() => s.keys()),
      // a snapshot and its audit records are one write: one event
      saveActive: (k, r, f, audit) => this.#event('state.saveActive', () => s.saveActive(k, r, f, audit)),
      finish: (k, r, c, a, f, audit) => this.#event('state.finish', () => s.finish(k, r, c, a, f, audit)),
      setProviderState: (k, a, b, f) => this.#event('state.setProviderState', () => s.setProviderState(k, a, b, f)),
      put: (r, f) => this.#event('state.put', () => s.put(r, f)),
      acquire: async (k, owner, ttl): Promise<Lease | LeaseHolder> => {
        const got = await this.#quiet(() => s.acquire(k, owner, ttl));
        if (!('release' in got)) return got;
        const lease = got;
        return {
          owner: lease.owner,
          get expiresAt() {
            return lease.expiresAt;
          },
          token: lease.token,
          renew: () => this.#quiet(() => lease.renew()),
          release: () => this.#quiet(() => lease.release()),
        };
      },
    };
  }

  /**
   * After the crash: let calls that were on the wire finish (bounded), revive the fakes, close the dead
   * run's connections. Returns false if something was still in flight after `ms`.
   */
  async settle(ms = 10_000): Promise<boolean> {
    this.#unlisten?.();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    const ok = await Promise.race([Promise.allSettled([...this.inflight]).then(() => true as const), timedOut]);
    clearTimeout(timer);
    await Promise.allSettled(this.closers.map((c) => c()));
    if (active.get(this.keyName) === this) active.delete(this.keyName);
    return ok;
  }

  /** A run that ended normally: release the wiring. */
  finish(): void {
    this.#unlisten?.();
    if (this.#adminKey) this.#openai?.state.adminKeys.delete(this.#adminKey);
    if (active.get(this.keyName) === this) active.delete(this.keyName);
  }
}
