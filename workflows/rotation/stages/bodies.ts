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
import type { SecretStore } from '../../../src/core/ports.ts';
import type { IssueOutput, PreflightOutput, StepInput } from '../rotation.machine.ts';
import type { RotationDeps } from './deps.ts';
import { ADOPT_WAYS, withoutPlaceholders } from './placeholder.ts';
import { pollUntil, withRetries } from './retry.ts';
import { newRef, newSecret, oldRef } from './vault.ts';

/** one stage's side effect; `signal` aborts when the stage is cancelled (pause, stop) */
export type StageBody<O> = (input: StepInput, signal: AbortSignal) => Promise<O>;

/** every invoked stage of the machine (not `sleep`) and what it returns */
export interface StageOutputs {
  preflight: PreflightOutput;
  issue: IssueOutput;
  stage: void;
  verify: void;
  promote: void;
  confirm: void;
  revoke: void;
  verifyRevoked: void;
  demote: void;
  unstage: void;
  discard: void;
}

export type StageBodies = { [S in keyof StageOutputs]: StageBody<StageOutputs[S]> };

/** What each stage does, for one rotation's deps (wrapped by `actors.ts`). */
export function stageBodies(deps: RotationDeps): StageBodies {
  const { issuer, stores, clock } = deps;

  const store = (i: number): SecretStore => {
    const s = stores[i];
    if (!s) throw new KeyrotorError('INTERNAL', `no store at index ${i}`);
    return s;
  };

  return {
    preflight: async ({ ctx }) => {
      await issuer.check();
      for (const s of stores) await s.check();
      // What is current now? Every store must agree on one key (or all be empty).
      const read = await Promise.all(stores.map((s) => s.readCurrent()));
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
      if (!oldKeyId) {
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
      // leak mode: record when the compromised key was last used, before it is revoked
      let oldKeyLastUsedAt: string | null = null;
      if (ctx.leaked && oldKeyId) {
        oldKeyLastUsedAt = (await issuer.list()).find((k) => k.keyId === oldKeyId)?.lastUsedAt ?? null;
      }
      return { oldKeyId, oldFingerprint, bootstrap: false, oldKeyUnidentified: oldKeyId === null, oldKeyLastUsedAt };
    },

    issue: async ({ ctx }) => {
      // a 429 is a clean rejection (nothing was created) and a retried create() looks up its name
      // first, so trying again cannot mint a second key; any other failure goes to discard (reconcile
      // by name). Only the first try of a rotation not restored at `issue` can skip that lookup.
      const key = await withRetries(
        clock,
        deps.retryAttempts,
        (attempt) =>
          issuer.create({
            name: ctx.newKeyName,
            rotationId: ctx.rotationId,
            // not the first create of this rotation when restored at `issue`, or issuing again after
            // the value was lost (newKeyId names the earlier key)
            firstAttempt: attempt === 0 && deps.resumedIn !== 'issue' && !ctx.newKeyId,
            ...(ctx.expiresInSeconds ? { expiresInSeconds: ctx.expiresInSeconds } : {}),
          }),
        (e) => e.code === 'ISSUER_RATE_LIMITED',
      );
      deps.vault.set(newRef(ctx), key.secret);
      deps.logger.info({ stage: 'issue', keyId: key.keyId, fingerprint: fingerprint(key.secret) }, 'new key issued');
      return { newKeyId: key.keyId, newFingerprint: fingerprint(key.secret) };
    },

    stage: async ({ ctx, index }) => {
      // after a restart the value is read back from the stores staged so far, this one included (a
      // process that died between writing this store and saving the snapshot left it there)
      const secret = await newSecret(deps, ctx, 'stage', index + 1);
      const meta = {
        rotationId: ctx.rotationId,
        issuerKeyId: ctx.newKeyId ?? undefined,
        fingerprint: ctx.newFingerprint ?? undefined,
        createdAt: new Date(clock.now()).toISOString(),
      };
      await withRetries(clock, deps.retryAttempts, () =>
        store(index).stage({ rotationId: ctx.rotationId, secret, meta }),
      );
    },

    verify: async ({ ctx }, signal) => {
      // every store holds exactly the value that was issued
      for (const s of stores) {
        const p = await s.readPending(ctx.rotationId);
        if (!p || fingerprint(p.secret) !== ctx.newFingerprint) {
          throw new KeyrotorError(
            'STORE_CORRUPT',
            `${s.label} does not hold the staged key ${ctx.newFingerprint} for ${ctx.rotationId}`,
            { stage: 'verify' },
          );
        }
      }
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

    promote: async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).promote(ctx.rotationId));
    },

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
      if (!ctx.oldKeyId)
        throw new KeyrotorError('INTERNAL', 'revoke without an identified old key', { stage: 'revoke' });
      const r = await issuer.revoke(ctx.oldKeyId);
      deps.logger.info({ stage: 'revoke', keyId: ctx.oldKeyId, alreadyGone: r.alreadyGone }, 'old key revoked');
    },

    verifyRevoked: async ({ ctx }, signal) => {
      let old = deps.vault.get(oldRef(ctx));
      if (!old) {
        for (const s of stores) {
          const p = await s.readPrevious();
          if (p && fingerprint(p.secret) === ctx.oldFingerprint) {
            old = p.secret;
            break;
          }
        }
      }
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
      deps.vault.delete(newRef(ctx));
    },

    demote: async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).demote(ctx.rotationId));
    },

    unstage: async ({ ctx, index }) => {
      await withRetries(clock, deps.retryAttempts, () => store(index).unstage(ctx.rotationId));
    },

    discard: async ({ ctx }) => {
      await withRetries(clock, deps.retryAttempts, async () => {
        if (ctx.newKeyId) {
          await issuer.revoke(ctx.newKeyId);
        } else {
          // the create may have succeeded without us seeing the response: find it by its unique name
          for (const k of await issuer.list()) if (k.name === ctx.newKeyName) await issuer.revoke(k.keyId);
        }
      });
      deps.vault.delete(newRef(ctx));
      deps.vault.delete(oldRef(ctx));
    },
  };
}
