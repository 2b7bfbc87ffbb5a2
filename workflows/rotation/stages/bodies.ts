/**
 * What each stage does, written against the ports only (wrapped into actors by `actors.ts`).
 *
 * Each one is idempotent, because a restored snapshot re-runs the invoke that was in flight:
 *   issue     - the key name carries the rotation id; discard reconciles by that name
 *   stage     - stores key their pending version by rotation id
 *   promote / demote / unstage - stores converge on the end state for that rotation id
 *   revoke / discard - "already gone" is success
 */
import { KeyrotorError, toKeyrotorError } from '../../../src/core/errors.ts';
import { fingerprint } from '../../../src/core/fingerprint.ts';
import type { Issuer, SecretStore, StoredVersion } from '../../../src/core/ports.ts';
import type { Secret } from '../../../src/core/secret.ts';
import type { Logger } from '../../../src/core/ports.ts';
import {
  revokedFirst,
  type IssueOutput,
  type PreflightOutput,
  type RevokeOutput,
  type RotationContext,
  type StepInput,
  type StoresDone,
} from '../rotation.machine.ts';
import type { PreflightReads, RotationDeps } from './deps.ts';
import { ADOPT_WAYS, withoutPlaceholders } from './placeholder.ts';
import { pollUntil, withRetries } from './retry.ts';
import { newRef, newSecret, oldRef } from './vault.ts';

/** one stage's side effect; `signal` aborts when the stage is cancelled (pause, stop) */
export type StageBody<O> = (input: StepInput, signal: AbortSignal) => Promise<O>;

/** every invoked stage of the machine (not `sleep`) and what it returns */
export interface StageOutputs {
  preflight: PreflightOutput;
  issue: IssueOutput;
  stage: StoresDone;
  verify: void;
  promote: StoresDone;
  confirm: void;
  revoke: RevokeOutput;
  verifyRevoked: void;
  demote: void;
  unstage: void;
  discard: void;
}

export type StageBodies = { [S in keyof StageOutputs]: StageBody<StageOutputs[S]> };

/** errors that refuse the sender (bad credentials, no permission): nothing the request asked for was done */
const REFUSED_SENDER: ReadonlySet<string> = new Set(['ISSUER_AUTH', 'ISSUER_PERMISSION', 'CONFIG_ENV_MISSING']);

/**
 * Preflight's reads, all at once: the issuer check (not in leak mode: the create right after is the
 * check, and every request before it keeps the leaked key alive longer) and every store's check, each
 * store's current value right after its own check (the check just read the store and the store
 * remembers that for `readCurrent`, providers/common/step-memo.ts: a read or request less; a store
 * whose check failed is not read). Never rejects. Reads only: the run loop may start them with a new
 * rotation, while its first snapshot is written (`RotationDeps.takePreflightReads`).
 */
export function preflightReads(
  deps: { issuer: Issuer; stores: SecretStore[] },
  leaked: boolean,
): Promise<PreflightReads> {
  // (a provider that throws instead of returning a rejected promise fails in its place all the same)
  const call = <T>(fn: () => Promise<T>) => new Promise<T>((resolve) => resolve(fn()));
  const storeChecks = deps.stores.map((s) => call(() => s.check()));
  const checks: Promise<unknown>[] = [leaked ? Promise.resolve() : call(() => deps.issuer.check()), ...storeChecks];
  const reads = deps.stores.map((s, i) =>
    storeChecks[i]!.then(
      () => s.readCurrent(),
      () => null,
    ),
  );
  return Promise.all([Promise.allSettled(checks), Promise.allSettled(reads)]).then(([c, r]) => ({
    checks: c,
    reads: r,
  }));
}

/** What each stage does, for one rotation's deps (wrapped by `actors.ts`). */
export function stageBodies(deps: RotationDeps): StageBodies {
  const { issuer, stores, clock } = deps;

  const store = (i: number): SecretStore => {
    const s = stores[i];
    if (!s) throw new KeyrotorError('INTERNAL', `no store at index ${i}`);
    return s;
  };
  /**
   * An idempotent step: a retryable failure is tried again, `deps.retryAttempts` times and, for
   * `always` steps (preflight's reads, the create) and in leak mode for every forward step, for as long
   * as the rotation's retry budget lasts. A normal rotation's store steps and the compensations give up
   * after the attempts: rolling back leaves a working key, and the next run tries again.
   */
  const retried = <T>(
    ctx: RotationContext,
    signal: AbortSignal | undefined,
    fn: (attempt: number) => Promise<T>,
    budget: 'always' | 'leak' | 'none' = 'leak',
  ) =>
    withRetries(
      clock,
      deps.retryAttempts,
      fn,
      undefined,
      budget === 'always' || (budget === 'leak' && ctx.leaked) ? (ctx.timing.retryBudgetMs ?? 0) : 0,
      signal,
    );

  /**
   * Leak mode: what the report and `revoke` need to know about the old key, resolved alongside the
   * create instead of before it — its identity when preflight left it open (no metadata, not adopted)
   * and when the issuer last saw it used. Never fails: an unidentified key is reported, an unread last
   * use is null.
   */
  async function oldKeyFacts(
    ctx: RotationContext,
    signal: AbortSignal,
  ): Promise<Pick<IssueOutput, 'oldKeyId' | 'oldKeyUnidentified' | 'oldKeyLastUsedAt'>> {
    const lastUsed = (list: { keyId: string; lastUsedAt?: string | null | undefined }[], id: string | null) =>
      id ? (list.find((k) => k.keyId === id)?.lastUsedAt ?? null) : null;
    const listed = retried(ctx, signal, () => issuer.list()).catch((e: unknown) => {
      deps.logger.warn(
        { stage: 'issue', err: toKeyrotorError(e).toRecord() },
        'could not read when the leaked key was last used',
      );
      return [];
    });
    if (ctx.oldKeyId) return { oldKeyLastUsedAt: lastUsed(await listed, ctx.oldKeyId) };
    let oldKeyId: string | null = null;
    try {
      const old = await oldSecret(ctx);
      const id = old ? await retried(ctx, signal, () => issuer.identify(old)) : ({ kind: 'not_found' } as const);
      if (id.kind === 'found') oldKeyId = id.keyId;
    } catch (e) {
      deps.logger.warn({ stage: 'issue', err: toKeyrotorError(e).toRecord() }, 'could not identify the leaked key');
    }
    return { oldKeyId, oldKeyUnidentified: oldKeyId === null, oldKeyLastUsedAt: lastUsed(await listed, oldKeyId) };
  }

  /** the old value: from memory, else the store slot that holds it (previous once promoted, current before) */
  async function oldSecret(ctx: RotationContext): Promise<Secret | undefined> {
    const inMemory = deps.vault.get(oldRef(ctx));
    if (inMemory) return inMemory;
    for (const s of stores) {
      for (const read of [() => s.readPrevious(), () => s.readCurrent()]) {
        const p = await read();
        if (p && fingerprint(p.secret) === ctx.oldFingerprint) return p.secret;
      }
    }
    return undefined;
  }

  /**
   * The store at `index` — in leak mode every store from `index` on, at once (each leaked second
   * counts; a pending version is invisible to consumers and every store was verified to hold the same
   * value). Waits for every write to settle before it reports the first failure, so the compensation
   * that follows never races a write still in flight.
   */
  async function eachStore(
    ctx: RotationContext,
    index: number,
    write: (s: SecretStore) => Promise<unknown>,
  ): Promise<StoresDone> {
    const targets = ctx.leaked ? stores.slice(index) : [store(index)];
    if (targets.length === 0) store(index); // throws: no store there
    const settled = await Promise.allSettled(targets.map((s) => write(s)));
    const failed = settled.flatMap((r, i) => (r.status === 'rejected' ? [{ s: targets[i]!, e: r.reason }] : []));
    if (failed.length === 1 || (failed.length > 1 && targets.length === 1)) throw failed[0]!.e;
    if (failed.length > 1) {
      const first = toKeyrotorError(failed[0]!.e);
      throw new KeyrotorError(
        first.code,
        `${failed.length} stores failed: ${failed.map((f) => `${f.s.label}: ${toKeyrotorError(f.e).message}`).join('; ')}`,
        { retryable: first.retryable, cause: first, ...(first.stage ? { stage: first.stage } : {}) },
      );
    }
    return { stores: targets.length };
  }

  /** when the issuer last saw this key used (null: never, or not read); never fails */
  async function lastUsedOf(keyId: string, log: Logger): Promise<string | null> {
    try {
      return (await issuer.list()).find((k) => k.keyId === keyId)?.lastUsedAt ?? null;
    } catch (e) {
      log.warn({ err: toKeyrotorError(e).toRecord() }, 'could not read when the leaked key was last used');
      return null;
    }
  }

  /** preflight: read-only, so tried again as a whole on a retryable failure */
  async function preflightOnce({ ctx }: StepInput): Promise<PreflightOutput> {
    // everything here is a read (see preflightReads; the first attempt of a new rotation uses the reads
    // the run loop started with it). The first failure in this order is reported: issuer, store checks,
    // reads.
    const { checks, reads } = await (deps.takePreflightReads?.(ctx.leaked) ?? preflightReads(deps, ctx.leaked));
    const failed = [...checks, ...reads].find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    // What is current now? Every store must agree on one key (or all be empty).
    const read = reads.map((r) => (r as PromiseFulfilledResult<StoredVersion | null>).value);
    // a declared placeholder counts as empty: the rotation bootstraps over it and revokes nothing
    const { currents, placeholder } = withoutPlaceholders(read, deps.placeholder);
    const present = currents.filter((c) => c !== null);
    if (present.length === 0)
      return {
        oldKeyId: null,
        oldFingerprint: placeholder,
        bootstrap: true,
        oldKeyUnidentified: false,
        ...(placeholder ? { placeholder: true } : {}),
      };
    const fps = new Set(present.map((c) => fingerprint(c.secret)));
    if (fps.size > 1 || present.length !== stores.length) {
      throw new KeyrotorError(
        'ADOPT_REQUIRED',
        `the stores of ${ctx.keyName} do not hold the same current key (${stores.map((s, i) => `${s.label}=${read[i] ? fingerprint(read[i].secret) : 'empty'}`).join(', ')})`,
        {
          stage: 'preflight',
          hint: `make every store serve the same key, then rotate again (${ADOPT_WAYS(ctx.keyName)})`,
        },
      );
    }
    const cur = present[0]!;
    const oldFingerprint = fingerprint(cur.secret);
    deps.vault.set(oldRef(ctx), cur.secret);
    let oldKeyId = present.find((c) => c.meta.issuerKeyId)?.meta.issuerKeyId ?? deps.adopted(oldFingerprint) ?? null;
    // leak mode leaves an unknown identity to the issue stage (resolved alongside the create), except
    // for revoke-first, which needs it to revoke at once
    if (!oldKeyId && (!ctx.leaked || ctx.revokeFirst === true)) {
      // a key a person put there by hand: identify it positively at the issuer, or refuse
      const id = await issuer.identify(cur.secret);
      if (id.kind === 'found') oldKeyId = id.keyId;
      else if (!ctx.leaked) {
        throw new KeyrotorError(
          'ADOPT_REQUIRED',
          id.kind === 'ambiguous'
            ? `the current value of ${ctx.keyName} matches several issuer keys (${id.candidates.join(', ')})`
            : `the current value of ${ctx.keyName} (${oldFingerprint}) matches no key at the issuer`,
          {
            stage: 'preflight',
            hint: ADOPT_WAYS(ctx.keyName),
          },
        );
      }
    }
    // (leak mode reads when the compromised key was last used alongside the create, or the revoke-first delete)
    const pending = ctx.leaked && ctx.revokeFirst !== true && oldKeyId === null;
    return { oldKeyId, oldFingerprint, bootstrap: false, oldKeyUnidentified: oldKeyId === null && !pending };
  }

  return {
    preflight: async (input, signal) => retried(input.ctx, signal, () => preflightOnce(input), 'always'),

    issue: async ({ ctx }, signal) => {
      // leak mode: the old key's identity and last use are read alongside the create, not before it
      const facts = ctx.leaked && !ctx.bootstrap && !revokedFirst(ctx) ? oldKeyFacts(ctx, signal) : undefined;
      // Any retryable failure is tried again within the retry budget: a 429 is a clean rejection, and
      // an ambiguous create (CREATE_AMBIGUOUS) was reconciled by the issuer (keys of this name deleted).
      // A retried create() looks up its name first and deletes what an earlier try may have left, so
      // trying again never mints a second key. Only the first try of a rotation not restored at `issue`
      // can skip that lookup. Anything else (or the budget spent) goes to discard (reconcile by name).
      let tries = 0;
      // not the first create of this rotation when restored at `issue`, or issuing again after the value
      // was lost (newKeyId names the earlier key, which the create's name lookup deletes)
      const firstAttempt = deps.resumedIn !== 'issue' && !ctx.newKeyId;
      const key = await retried(
        ctx,
        signal,
        (attempt) => {
          tries = attempt + 1;
          if (attempt > 0)
            deps.onStage?.({ stage: 'issue', phase: 'wait', observation: `create attempt ${attempt + 1}` });
          return issuer.create({
            name: ctx.newKeyName,
            rotationId: ctx.rotationId,
            firstAttempt: attempt === 0 && firstAttempt,
            ...(ctx.expiresInSeconds ? { expiresInSeconds: ctx.expiresInSeconds } : {}),
          });
        },
        'always',
      ).catch((e: unknown) => {
        // the only create of a fresh rotation was refused for who sent it (credentials, permission): an
        // issuer applies no request it refuses to authenticate, so it made nothing, and discard need
        // not look for a key of this name (with an admin key that cannot even list, it could not)
        const err = toKeyrotorError(e, 'issue');
        if (tries === 1 && firstAttempt && REFUSED_SENDER.has(err.code)) Object.assign(err, { nothingCreated: true });
        throw err;
      });
      deps.vault.set(newRef(ctx), key.secret);
      deps.logger.info({ stage: 'issue', keyId: key.keyId, fingerprint: fingerprint(key.secret) }, 'new key issued');
      return { newKeyId: key.keyId, newFingerprint: fingerprint(key.secret), ...(facts ? await facts : {}) };
    },
    stage: async ({ ctx, index }) => {
      // after a restart the value is read back from the stores staged so far, this one included (a
      // process that died between writing this store and saving the snapshot left it there); leak mode
      // writes every remaining store at once, so any of them may hold it
      const secret = await newSecret(deps, ctx, 'stage', ctx.leaked ? undefined : index);
      const meta = {
        rotationId: ctx.rotationId,
        issuerKeyId: ctx.newKeyId ?? undefined,
        fingerprint: ctx.newFingerprint ?? undefined,
        createdAt: new Date(clock.now()).toISOString(),
      };
      return eachStore(ctx, index, (s) =>
        retried(ctx, undefined, () => s.stage({ rotationId: ctx.rotationId, secret, meta })),
      );
    },

    verify: async ({ ctx }, signal) => {
      // every store holds exactly the value that was issued (read at once, each retried)
      await Promise.all(
        stores.map(async (s) => {
          const p = await retried(ctx, signal, () => s.readPending(ctx.rotationId));
          if (!p || fingerprint(p.secret) !== ctx.newFingerprint) {
            throw new KeyrotorError(
              'STORE_CORRUPT',
              `${s.label} does not hold the staged key ${ctx.newFingerprint} for ${ctx.rotationId}`,
              { stage: 'verify' },
            );
          }
        }),
      );
      const secret = await newSecret(deps, ctx, 'verify');
      const deadline = ctx.deadlines.verify ?? clock.now();
      await pollUntil(
        clock,
        deadline,
        deps.verifyIntervalMs,
        signal,
        async () => {
          const r = await issuer.verify(secret);
          if (r.ok) return { done: true, value: undefined };
          const observation = `the new key does not work yet (${r.reason}: ${r.detail})`;
          deps.onStage?.({ stage: 'verify', phase: 'wait', observation, deadline });
          return { done: false, observation: `${r.reason}: ${r.detail}`, final: r.reason === 'missing_scopes' };
        },
        (last) =>
          new KeyrotorError(
            last.startsWith('missing_scopes') ? 'KEY_MISSING_SCOPES' : 'KEY_INVALID',
            `the new key ${ctx.newKeyId} does not work at the issuer (${last})`,
            {
              stage: 'verify',
            },
          ),
      );
    },

    promote: async ({ ctx, index }) =>
      eachStore(ctx, index, (s) => retried(ctx, undefined, () => s.promote(ctx.rotationId))),

    confirm: async ({ ctx }, signal) => {
      const deadlines = ctx.deadlines.confirm ?? [];
      // one signal for every gate: cancelled with the stage, and once the outcome is decided
      const stop = new AbortController();
      const onAbort = () => stop.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      const waits = deps.gates.map(async (gate, i) => {
        const deadline = deadlines[i] ?? clock.now() + gate.timeoutMs;
        let shown = '';
        await pollUntil(
          clock,
          deadline,
          gate.intervalMs,
          stop.signal,
          async () => {
            let o: { pass: boolean; observation: string; final?: boolean };
            try {
              o = await gate.check({
                rotationId: ctx.rotationId,
                keyName: ctx.keyName,
                newKeyId: ctx.newKeyId ?? '',
                oldKeyId: ctx.oldKeyId ?? undefined,
                newFingerprint: ctx.newFingerprint ?? '',
                oldFingerprint: ctx.oldFingerprint ?? undefined,
                promotedAt: ctx.promotedAt ? new Date(ctx.promotedAt).toISOString() : undefined,
                readNewSecret: () => newSecret(deps, ctx, 'confirm'),
                signal: stop.signal,
              });
            } catch (e) {
              o = { pass: false, observation: `error: ${toKeyrotorError(e).message}` };
            }
            if (!o.pass)
              deps.onStage?.({
                stage: 'confirm',
                phase: 'wait',
                gate: gate.name,
                observation: o.observation,
                deadline,
              });
            // what the rotation is waiting for, once per change (not on every poll)
            if (!o.pass && o.observation !== shown) {
              shown = o.observation;
              deps.logger.info(
                {
                  stage: 'confirm',
                  gate: gate.name,
                  deadline: new Date(deadline).toISOString(),
                  observation: o.observation,
                },
                'waiting for health gate',
              );
            }
            return o.pass
              ? { done: true, value: undefined }
              : { done: false, observation: o.observation, ...(o.final ? { final: true } : {}) };
          },
          (last) =>
            new KeyrotorError(
              clock.now() >= deadline ? 'GATE_TIMEOUT' : 'GATE_REJECTED',
              `health gate "${gate.name}" did not pass: ${last}`,
              { stage: 'confirm' },
            ),
        );
        deps.logger.info({ stage: 'confirm', gate: gate.name }, 'health gate passed');
      });
      try {
        if (deps.gateRequire === 'any') {
          await Promise.any(waits).catch((e: unknown) => {
            const errs = (e instanceof AggregateError ? e.errors : [e]).map((x) => toKeyrotorError(x, 'confirm'));
            const code = errs.every((x) => x.code === 'GATE_REJECTED') ? 'GATE_REJECTED' : 'GATE_TIMEOUT';
            throw new KeyrotorError(
              code,
              `no health gate passed (require: any): ${errs.map((x) => x.message).join('; ')}`,
              { stage: 'confirm' },
            );
          });
        } else {
          await Promise.all(waits);
        }
      } finally {
        stop.abort(); // the gates still polling (require: any, or after the first failure) stop now
        signal.removeEventListener('abort', onAbort);
      }
    },

    revoke: async ({ ctx }) => {
      const oldKeyId = ctx.oldKeyId;
      if (!oldKeyId) throw new KeyrotorError('INTERNAL', 'revoke without an identified old key', { stage: 'revoke' });
      // revoke-first: the last use is read alongside the delete (the list goes out first; a key the
      // issuer already deleted is not listed, then its last use stays unknown: null)
      const first = ctx.revokeFirst === true && ctx.newKeyId === null && !revokedFirst(ctx);
      const lastUsed = first ? lastUsedOf(oldKeyId, deps.logger) : undefined;
      const r = await issuer.revoke(oldKeyId);
      deps.logger.info(
        { stage: 'revoke', keyId: oldKeyId, alreadyGone: r.alreadyGone, ...(first ? { revokeFirst: true } : {}) },
        first
          ? 'leaked key revoked first: consumers have no working key until the new one is promoted'
          : 'old key revoked',
      );
      return lastUsed ? { oldKeyLastUsedAt: await lastUsed } : {};
    },

    verifyRevoked: async ({ ctx }, signal) => {
      const old = await oldSecret(ctx);
      const deadline = ctx.deadlines.verifyRevoked ?? clock.now();
      const revokedYet = async (): Promise<{ done: true; value: undefined } | { done: false; observation: string }> => {
        if (old) {
          const r = await issuer.verify(old);
          if (!r.ok && r.reason === 'invalid') return { done: true, value: undefined };
          return { done: false, observation: r.ok ? 'the old key still works' : `${r.reason}: ${r.detail}` };
        }
        // no value to test with: the key must be gone from the issuer's list
        const keys = await issuer.list();
        return keys.some((k) => k.keyId === ctx.oldKeyId)
          ? { done: false, observation: 'the old key is still listed at the issuer' }
          : { done: true, value: undefined };
      };
      await pollUntil(
        clock,
        deadline,
        deps.verifyRevokedIntervalMs,
        signal,
        async () => {
          const r = await revokedYet();
          if (!r.done) deps.onStage?.({ stage: 'verifyRevoked', phase: 'wait', observation: r.observation, deadline });
          return r;
        },
        (last) =>
          new KeyrotorError('REVOKE_UNCONFIRMED', `the old key ${ctx.oldKeyId} is not dead yet: ${last}`, {
            stage: 'verifyRevoked',
          }),
      );
      deps.vault.delete(oldRef(ctx));
      if (!revokedFirst(ctx) || ctx.newKeyId !== null) deps.vault.delete(newRef(ctx));
    },

    demote: async ({ ctx, index }) => {
      await retried(ctx, undefined, () => store(index).demote(ctx.rotationId), 'none');
    },

    unstage: async ({ ctx, index }) => {
      await retried(ctx, undefined, () => store(index).unstage(ctx.rotationId), 'none');
    },

    discard: async ({ ctx }) => {
      await retried(
        ctx,
        undefined,
        async () => {
          if (ctx.newKeyId) {
            await issuer.revoke(ctx.newKeyId);
          } else {
            // the create may have succeeded without us seeing the response: find it by its unique name.
            // When the only create was refused outright and the issuer refuses the list for good too
            // (e.g. a wrong admin key), there is nothing it can have made: done.
            let keys;
            try {
              keys = await issuer.list();
            } catch (e) {
              if (ctx.newKeyNeverMade && REFUSED_SENDER.has(toKeyrotorError(e).code)) return;
              throw e;
            }
            for (const k of keys) if (k.name === ctx.newKeyName) await issuer.revoke(k.keyId);
          }
        },
        'none',
      );
      deps.vault.delete(newRef(ctx));
      deps.vault.delete(oldRef(ctx));
    },
  };
}
