/**
 * The rotation workflow: one actor per key rotation.
 *
 *   preflight → issue → stage(×stores) → verify → promote(×stores) → confirm → revoke → verifyRevoked → rotated
 *
 * Compensations run in reverse, entered at the depth the failure reached:
 *   promote/confirm failed → demote(i..0) → unstage(all) → discard → rolledBack
 *   verify failed          →                unstage(all) → discard → rolledBack
 *   stage[i] failed        →                unstage(i..0) → discard → rolledBack
 *   issue failed           →                               discard → rolledBack   (reconciles by name)
 * A failed compensation ends in `rollbackFailed`, naming what is left for a human.
 * Past confirm there is no way back: a failed revoke is retried, then reported (`needsAttention`).
 * Leak mode: confirm is skipped and nothing after promote ever demotes (the leaked key is never restored).
 *
 * Context holds references only (key ids, fingerprints, counters, deadlines); never a secret value.
 * Every wait is an invoked actor with an absolute deadline kept in context (an `after` timer is not
 * re-armed when a persisted snapshot is restored; an in-flight invoke is re-run, so every actor is
 * idempotent). Side effects are declared here by name and supplied by `createRotationActor` (stages/).
 *
 * State tags are the machine's vocabulary for callers (run loop, Lambda adapter, stage actors), so no
 * caller keeps its own list of state names:
 *   forward       the way to `rotated`, in declaration order (`FORWARD_ORDER`)
 *   compensation  the rollback states (demote, unstage, discard)
 *   wait          polls until an absolute deadline in context: safe to cut short and resume
 *   perStore      runs once per store (`index`), re-entered for the next store
 */
import { assign, fromPromise, setup, type SnapshotFrom } from 'xstate';
import type { ErrorRecord } from '../../src/core/errors.ts';
import { toKeyrotorError } from '../../src/core/errors.ts';
import type { Stage } from '../../src/core/stages.ts';

/** Bump when states or context change incompatibly; stored with every snapshot. */
export const MACHINE_VERSION = 1;

export interface RotationTiming {
  verifyTimeoutMs: number;
  /** one per gate, same order as gateNames */
  gateTimeoutsMs: number[];
  revokeAttempts: number;
  revokeBackoffMs: number;
  verifyRevokedTimeoutMs: number;
  /**
   * how long an idempotent step that fails retryably (the create after its reconciliation, stage,
   * promote, the compensations, preflight's reads) keeps trying with backoff; absent = 0 (only the
   * deps' `retryAttempts`)
   */
  retryBudgetMs?: number;
}

export interface RotationInput {
  rotationId: string;
  keyName: string;
  /** the issuer key name carrying the rotation id */
  newKeyName: string;
  leaked: boolean;
  /**
   * leak mode, `--revoke-first`: delete the leaked key right after preflight (consumers fail until the
   * new key is promoted), then issue, stage, verify and promote
   */
  revokeFirst?: boolean;
  storeLabels: string[];
  gateNames: string[];
  timing: RotationTiming;
  expiresInSeconds: number | null;
  /** ms since epoch */
  startedAt: number;
}

export interface RotationContext extends RotationInput {
  oldKeyId: string | null;
  oldFingerprint: string | null;
  /** the store had no value: nothing to revoke */
  bootstrap: boolean;
  /** leak mode went ahead although the old key could not be identified at the issuer */
  oldKeyUnidentified: boolean;
  /** bootstrap over a value declared a placeholder (`adopt --placeholder`): nothing is revoked for it */
  placeholder?: boolean;
  /** leak mode: when the issuer last saw the old key used (ISO), read before it is revoked */
  oldKeyLastUsedAt: string | null;
  newKeyId: string | null;
  newFingerprint: string | null;
  /** stores[0..staged-1] hold the new key as pending */
  staged: number;
  /** stores[0..promoted-1] serve the new key as current */
  promoted: number;
  /** compensation cursor: index of the store the running compensation works on */
  cursor: number;
  promotedAt: number | null;
  /**
   * the issue stage failed on its first create of a fresh rotation because the issuer refused the sender
   * (credentials, permission: it made nothing); discard does not fail when the issuer refuses its list too
   */
  newKeyNeverMade?: boolean;
  /** revoke-first: when the leaked key was deleted (ms since epoch); consumers had no working key from then until promotedAt */
  oldKeyRevokedAt?: number | null;
  deadlines: {
    verify: number | null;
    confirm: number[] | null;
    verifyRevoked: number | null;
    revokeRetryAt: number | null;
  };
  revokeAttempts: number;
  /** the failure that started a compensation (or ended the rotation) */
  error: ErrorRecord | null;
  /** the failure of a compensation itself */
  compensationError: ErrorRecord | null;
  /** what a human must still do */
  leftovers: string[];
}

// ---------------------------------------------------------------- actor I/O (references only)

export interface PreflightOutput {
  oldKeyId: string | null;
  oldFingerprint: string | null;
  bootstrap: boolean;
  oldKeyUnidentified: boolean;
  oldKeyLastUsedAt?: string | null;
  placeholder?: boolean;
}
export interface IssueOutput {
  newKeyId: string;
  newFingerprint: string;
  /** leak mode: the old key's identity and last use, resolved alongside the create (not before it) */
  oldKeyId?: string | null;
  oldKeyUnidentified?: boolean;
  oldKeyLastUsedAt?: string | null;
}
/**
 * stage / promote: how many stores (from `index` on) the invocation finished. One in a normal rotation;
 * in leak mode every remaining store at once (in parallel; a failure of any compensates them all).
 */
export interface StoresDone {
  stores: number;
}
export interface RevokeOutput {
  /** revoke-first: the old key's last use, read alongside the delete (absent: leave context as it is) */
  oldKeyLastUsedAt?: string | null;
}
export interface StepInput {
  ctx: RotationContext;
  /** store index for per-store stages */
  index: number;
}
export interface SleepInput {
  until: number;
}

/** The tags states carry (see the header). */
export type RotationTag = 'forward' | 'compensation' | 'wait' | 'perStore';

/** stores finished by a stage/promote invocation (1 for an output without the count) */
const storesDone = (event: unknown): number => (event as { output?: Partial<StoresDone> }).output?.stores ?? 1;

/** revoke-first: the leaked key was deleted before the new key was issued */
export const revokedFirst = (c: RotationContext): boolean => typeof c.oldKeyRevokedAt === 'number';

const notProvided = (name: string) => async (): Promise<never> => {
  throw new Error(`rotation actor "${name}" was not provided (use createRotationActor)`);
};

export const rotationSetup = setup({
  types: {
    context: {} as RotationContext,
    input: {} as RotationInput,
    output: {} as RotationContext,
    tags: {} as RotationTag,
  },
  actors: {
    preflight: fromPromise<PreflightOutput, StepInput>(notProvided('preflight')),
    issue: fromPromise<IssueOutput, StepInput>(notProvided('issue')),
    stage: fromPromise<StoresDone, StepInput>(notProvided('stage')),
    verify: fromPromise<void, StepInput>(notProvided('verify')),
    promote: fromPromise<StoresDone, StepInput>(notProvided('promote')),
    confirm: fromPromise<void, StepInput>(notProvided('confirm')),
    revoke: fromPromise<RevokeOutput, StepInput>(notProvided('revoke')),
    verifyRevoked: fromPromise<void, StepInput>(notProvided('verifyRevoked')),
    demote: fromPromise<void, StepInput>(notProvided('demote')),
    unstage: fromPromise<void, StepInput>(notProvided('unstage')),
    discard: fromPromise<void, StepInput>(notProvided('discard')),
    sleep: fromPromise<void, SleepInput>(notProvided('sleep')),
  },
  guards: {
    moreToStage: ({ context, event }) => context.staged + storesDone(event) < context.storeLabels.length,
    moreToPromote: ({ context, event }) => context.promoted + storesDone(event) < context.storeLabels.length,
    moreToCompensate: ({ context }) => context.cursor > 0,
    leaked: ({ context }) => context.leaked,
    skipConfirm: ({ context }) => context.leaked || context.gateNames.length === 0,
    nothingToRevoke: ({ context }) => context.bootstrap,
    oldKeyUnknown: ({ context }) => context.oldKeyId === null,
    revokeAttemptsLeft: ({ context }) => context.revokeAttempts + 1 < context.timing.revokeAttempts,
    newValueLost: ({ context, event }) =>
      context.staged === 0 && toKeyrotorError((event as { error?: unknown }).error).code === 'SECRET_UNAVAILABLE',
    /** revoke-first (leak mode): preflight identified the old key; revoke it before anything else */
    revokeFirstNow: ({ context, event }) => {
      const out = (event as { output?: PreflightOutput }).output;
      return context.revokeFirst === true && context.leaked && !!out && !out.bootstrap && out.oldKeyId !== null;
    },
    /** revoke-first: the old key is gone and no new key was issued yet */
    issueAfterRevoke: ({ context }) => revokedFirst(context) && context.newKeyId === null,
    oldKeyRevokedFirst: ({ context }) => revokedFirst(context),
    revokeFirstUnconfirmed: ({ context }) => revokedFirst(context) && context.error?.stage === 'verifyRevoked',
    adoptionNeeded: ({ event }) => toKeyrotorError((event as { error?: unknown }).error).code === 'ADOPT_REQUIRED',
  },
  actions: {
    recordError: assign({
      error: ({ event }, params: { stage: Stage }) =>
        toKeyrotorError((event as { error?: unknown }).error, params.stage).toRecord(),
    }),
    recordCompensationError: assign({
      compensationError: ({ event }, params: { stage: Stage }) =>
        toKeyrotorError((event as { error?: unknown }).error, params.stage).toRecord(),
    }),
  },
});

const input = ({ context }: { context: RotationContext }): StepInput => ({ ctx: context, index: 0 });
const inputAt =
  (field: 'staged' | 'promoted' | 'cursor') =>
  ({ context }: { context: RotationContext }): StepInput => ({
    ctx: context,
    index: context[field],
  });

export const rotationMachine = rotationSetup.createMachine({
  id: 'rotation',
  initial: 'preflight',
  context: ({ input: i }) => ({
    ...i,
    oldKeyId: null,
    oldFingerprint: null,
    bootstrap: false,
    oldKeyUnidentified: false,
    oldKeyLastUsedAt: null,
    newKeyId: null,
    newFingerprint: null,
    staged: 0,
    promoted: 0,
    cursor: 0,
    promotedAt: null,
    oldKeyRevokedAt: null,
    deadlines: { verify: null, confirm: null, verifyRevoked: null, revokeRetryAt: null },
    revokeAttempts: 0,
    error: null,
    compensationError: null,
    leftovers: [],
  }),
  output: ({ context }) => context,
  states: {
    preflight: {
      tags: ['forward'],
      invoke: {
        id: 'preflight',
        src: 'preflight',
        input,
        onDone: [
          { guard: 'revokeFirstNow', target: 'revoke', actions: assign(({ event }) => ({ ...event.output })) },
          { target: 'issue', actions: assign(({ event }) => ({ ...event.output })) },
        ],
        onError: [
          {
            guard: 'adoptionNeeded',
            target: 'needsAttention',
            actions: [{ type: 'recordError', params: { stage: 'preflight' } }],
          },
          { target: 'failed', actions: [{ type: 'recordError', params: { stage: 'preflight' } }] },
        ],
      },
    },
    issue: {
      tags: ['forward'],
      invoke: {
        id: 'issue',
        src: 'issue',
        input,
        onDone: { target: 'stage', actions: assign(({ event }) => ({ ...event.output })) },
        onError: {
          target: 'discard',
          actions: [
            { type: 'recordError', params: { stage: 'issue' } },
            assign({
              newKeyNeverMade: ({ event }) =>
                (event.error as { nothingCreated?: unknown } | undefined)?.nothingCreated === true,
            }),
          ],
        },
      },
    },
    stage: {
      tags: ['forward', 'perStore'],
      invoke: {
        id: 'stage',
        src: 'stage',
        input: inputAt('staged'),
        onDone: [
          {
            guard: 'moreToStage',
            target: 'stage',
            reenter: true,
            actions: assign({ staged: ({ context, event }) => context.staged + storesDone(event) }),
          },
          { target: 'verify', actions: assign({ staged: ({ context, event }) => context.staged + storesDone(event) }) },
        ],
        onError: [
          // restored after a crash between `issue` and the first `stage`: the new value was only in
          // the dead process's memory. Issue again under the same rotation (the create first deletes
          // the key of that name, whose value nobody holds) instead of rolling back.
          { guard: 'newValueLost', target: 'issue' },
          // the failing store may hold a partial write: unstage it too (unstage is idempotent); in leak
          // mode every remaining store was written at once: unstage them all
          {
            target: 'unstage',
            actions: [
              { type: 'recordError', params: { stage: 'stage' } },
              assign({
                cursor: ({ context }) => (context.leaked ? context.storeLabels.length - 1 : context.staged),
              }),
            ],
          },
        ],
      },
    },
    verify: {
      tags: ['forward', 'wait'],
      entry: assign({
        deadlines: ({ context }) => ({
          ...context.deadlines,
          verify: context.deadlines.verify ?? Date.now() + context.timing.verifyTimeoutMs,
        }),
      }),
      invoke: {
        id: 'verify',
        src: 'verify',
        input,
        onDone: { target: 'promote' },
        onError: {
          target: 'unstage',
          actions: [
            { type: 'recordError', params: { stage: 'verify' } },
            assign({ cursor: ({ context }) => context.storeLabels.length - 1 }),
          ],
        },
      },
    },
    promote: {
      tags: ['forward', 'perStore'],
      invoke: {
        id: 'promote',
        src: 'promote',
        input: inputAt('promoted'),
        onDone: [
          {
            guard: 'moreToPromote',
            target: 'promote',
            reenter: true,
            actions: assign({ promoted: ({ context, event }) => context.promoted + storesDone(event) }),
          },
          {
            guard: 'skipConfirm',
            target: 'decideRevoke',
            actions: assign({
              promoted: ({ context, event }) => context.promoted + storesDone(event),
              promotedAt: () => Date.now(),
            }),
          },
          {
            target: 'confirm',
            actions: assign({
              promoted: ({ context, event }) => context.promoted + storesDone(event),
              promotedAt: () => Date.now(),
            }),
          },
        ],
        onError: [
          {
            // leak mode never puts the leaked key back: report what is half-promoted
            guard: 'leaked',
            target: 'needsAttention',
            actions: [
              { type: 'recordError', params: { stage: 'promote' } },
              assign({
                leftovers: ({ context }) => [
                  `promote failed (${context.error?.message ?? 'see the error'}): of ${context.storeLabels
                    .slice(context.promoted)
                    .join(
                      ', ',
                    )}, those it names still serve the LEAKED key ${context.oldKeyId ?? '(unidentified)'}; the new key ${context.newKeyId} is staged there — fix access and run \`keyrotor resume ${context.keyName}\` or promote it by hand`,
                  ...(context.oldKeyId && !revokedFirst(context)
                    ? [
                        `the leaked key ${context.oldKeyId} is still alive: delete it once every store serves the new key`,
                      ]
                    : []),
                ],
              }),
            ],
          },
          {
            target: 'demote',
            actions: [
              { type: 'recordError', params: { stage: 'promote' } },
              assign({ cursor: ({ context }) => context.promoted }),
            ],
          },
        ],
      },
    },
    confirm: {
      tags: ['forward', 'wait'],
      entry: assign({
        deadlines: ({ context }) => ({
          ...context.deadlines,
          confirm: context.deadlines.confirm ?? context.timing.gateTimeoutsMs.map((t) => Date.now() + t),
        }),
      }),
      invoke: {
        id: 'confirm',
        src: 'confirm',
        input,
        onDone: { target: 'decideRevoke' },
        onError: {
          target: 'demote',
          actions: [
            { type: 'recordError', params: { stage: 'confirm' } },
            assign({ cursor: ({ context }) => context.storeLabels.length - 1 }),
          ],
        },
      },
    },
    /** transient: is there an old key we positively identified? */
    decideRevoke: {
      tags: ['forward'],
      always: [
        { guard: 'nothingToRevoke', target: 'rotated' },
        {
          guard: 'revokeFirstUnconfirmed',
          target: 'needsAttention',
          actions: assign({
            leftovers: ({ context }) => [
              `the leaked key ${context.oldKeyId} was deleted first but still worked at the deadline: check it at the issuer and delete it again (the new key ${context.newKeyId} is current everywhere)`,
            ],
          }),
        },
        { guard: 'oldKeyRevokedFirst', target: 'rotated' },
        {
          guard: 'oldKeyUnknown',
          target: 'needsAttention',
          actions: assign({
            leftovers: () => [
              'the old key was not identified at the issuer, so it was NOT revoked: find it and delete it by hand (the new key is current everywhere)',
            ],
          }),
        },
        { target: 'revoke' },
      ],
    },
    revoke: {
      tags: ['forward'],
      invoke: {
        id: 'revoke',
        src: 'revoke',
        input,
        onDone: {
          target: 'verifyRevoked',
          actions: assign({
            // revoke-first: from now on consumers have no working key until the new one is promoted
            oldKeyRevokedAt: ({ context }) =>
              context.revokeFirst && context.newKeyId === null ? Date.now() : (context.oldKeyRevokedAt ?? null),
            oldKeyLastUsedAt: ({ context, event }) =>
              event.output?.oldKeyLastUsedAt !== undefined ? event.output.oldKeyLastUsedAt : context.oldKeyLastUsedAt,
          }),
        },
        onError: [
          {
            guard: 'revokeAttemptsLeft',
            target: 'revokeRetry',
            actions: [
              { type: 'recordError', params: { stage: 'revoke' } },
              assign({
                revokeAttempts: ({ context }) => context.revokeAttempts + 1,
                deadlines: ({ context }) => ({
                  ...context.deadlines,
                  revokeRetryAt: Date.now() + context.timing.revokeBackoffMs * 2 ** context.revokeAttempts,
                }),
              }),
            ],
          },
          {
            target: 'needsAttention',
            actions: [
              { type: 'recordError', params: { stage: 'revoke' } },
              assign({
                revokeAttempts: ({ context }) => context.revokeAttempts + 1,
                leftovers: ({ context }) => [
                  context.newKeyId === null
                    ? `the LEAKED key ${context.oldKeyId} could not be revoked first after ${context.revokeAttempts + 1} attempts and no new key was issued (the stores still serve it): delete it at the issuer, or run \`keyrotor rotate --now --leaked ${context.keyName}\` again`
                    : `the old key ${context.oldKeyId} could not be revoked after ${context.revokeAttempts + 1} attempts: delete it at the issuer (the new key ${context.newKeyId} is current everywhere)`,
                ],
              }),
            ],
          },
        ],
      },
    },
    revokeRetry: {
      tags: ['forward', 'wait'],
      invoke: {
        id: 'sleep',
        src: 'sleep',
        input: ({ context }) => ({ until: context.deadlines.revokeRetryAt ?? 0 }),
        onDone: { target: 'revoke' },
        onError: { target: 'revoke' },
      },
    },
    verifyRevoked: {
      tags: ['forward', 'wait'],
      entry: assign({
        deadlines: ({ context }) => ({
          ...context.deadlines,
          verifyRevoked: context.deadlines.verifyRevoked ?? Date.now() + context.timing.verifyRevokedTimeoutMs,
        }),
      }),
      invoke: {
        id: 'verifyRevoked',
        src: 'verifyRevoked',
        input,
        onDone: [{ guard: 'issueAfterRevoke', target: 'issue' }, { target: 'rotated' }],
        onError: [
          {
            // revoke-first: the delete went through; consumers need the new key whatever happens, so go
            // on (decideRevoke reports the unconfirmed revoke at the end)
            guard: 'issueAfterRevoke',
            target: 'issue',
            actions: [{ type: 'recordError', params: { stage: 'verifyRevoked' } }],
          },
          {
            target: 'needsAttention',
            actions: [
              { type: 'recordError', params: { stage: 'verifyRevoked' } },
              assign({
                leftovers: ({ context }) => [
                  `the old key ${context.oldKeyId} was deleted but still worked at the deadline: check it at the issuer and delete it again`,
                ],
              }),
            ],
          },
        ],
      },
    },

    // ------------------------------------------------------------ compensations
    demote: {
      tags: ['compensation', 'perStore'],
      invoke: {
        id: 'demote',
        src: 'demote',
        input: inputAt('cursor'),
        onDone: [
          {
            guard: 'moreToCompensate',
            target: 'demote',
            reenter: true,
            actions: assign({ cursor: ({ context }) => context.cursor - 1 }),
          },
          { target: 'unstage', actions: assign({ cursor: ({ context }) => context.storeLabels.length - 1 }) },
        ],
        onError: {
          target: 'rollbackFailed',
          actions: [
            { type: 'recordCompensationError', params: { stage: 'demote' } },
            assign({
              leftovers: ({ context }) => [
                `${context.storeLabels.slice(0, context.cursor + 1).join(', ')} still serve the new key ${context.newKeyId} (${context.newFingerprint}): set the previous version current again${context.oldKeyId ? ` (it holds the old key ${context.oldKeyId}, which stays alive for it)` : ''}`,
                `the new key ${context.newKeyId} still exists at the issuer: delete it once no store serves it`,
              ],
            }),
          ],
        },
      },
    },
    unstage: {
      tags: ['compensation', 'perStore'],
      invoke: {
        id: 'unstage',
        src: 'unstage',
        input: inputAt('cursor'),
        onDone: [
          {
            guard: 'moreToCompensate',
            target: 'unstage',
            reenter: true,
            actions: assign({ cursor: ({ context }) => context.cursor - 1 }),
          },
          { target: 'discard' },
        ],
        onError: {
          target: 'rollbackFailed',
          actions: [
            { type: 'recordCompensationError', params: { stage: 'unstage' } },
            assign({
              leftovers: ({ context }) => [
                `${context.storeLabels.slice(0, context.cursor + 1).join(', ')} still hold the new key ${context.newKeyId} as pending (not served to consumers): remove that pending version`,
                `the new key ${context.newKeyId} still exists at the issuer: delete it`,
              ],
            }),
          ],
        },
      },
    },
    discard: {
      tags: ['compensation'],
      invoke: {
        id: 'discard',
        src: 'discard',
        input,
        onDone: [
          {
            guard: 'leaked',
            target: 'needsAttention',
            actions: assign({
              leftovers: ({ context }) => [
                revokedFirst(context)
                  ? `rotation failed before the new key was served, and the LEAKED key ${context.oldKeyId} was already revoked (revoke-first): consumers have NO working key; fix the cause and run \`keyrotor rotate --now --leaked ${context.keyName}\` again`
                  : `rotation failed before the new key was served; the LEAKED key ${context.oldKeyId ?? '(unidentified)'} is still current: fix the cause and run \`keyrotor rotate --now --leaked ${context.keyName}\` again`,
              ],
            }),
          },
          { target: 'rolledBack' },
        ],
        onError: {
          target: 'rollbackFailed',
          actions: [
            { type: 'recordCompensationError', params: { stage: 'discard' } },
            assign({
              leftovers: ({ context }) => [
                `the new key ${context.newKeyId ?? `named ${context.newKeyName}`} may still exist at the issuer: delete it (\`keyrotor sweep\` finds it by name)`,
              ],
            }),
          ],
        },
      },
    },

    // ------------------------------------------------------------ final states
    rotated: { type: 'final' },
    rolledBack: { type: 'final' },
    /** preflight refused: nothing was changed */
    failed: { type: 'final' },
    needsAttention: { type: 'final' },
    rollbackFailed: { type: 'final' },
  },
});

export type RotationMachine = typeof rotationMachine;
/** A state of the machine (stage, compensation, transient or final). */
export type RotationState = SnapshotFrom<RotationMachine>['value'];
type RotationSnapshot = SnapshotFrom<RotationMachine>;

/** The states carrying `tag`, in declaration order. */
export function statesTagged(tag: RotationTag): RotationState[] {
  return Object.values(rotationMachine.states)
    .filter((n) => n.tags.includes(tag))
    .map((n) => n.key as RotationState);
}

/** The forward states in the order a rotation goes through them (compensations are not in it). */
export const FORWARD_ORDER: readonly RotationState[] = statesTagged('forward');

/** Position of `state` in `FORWARD_ORDER`; -1 for compensation, final and unknown states. */
export function forwardRank(state: string): number {
  return (FORWARD_ORDER as readonly string[]).indexOf(state);
}

/**
 * Between `issue` and the first `stage` the new key's value exists only in this process's memory:
 * stopping there (pause, not crash) would lose it for nothing.
 */
export function holdsNewKeyOnlyInMemory(s: RotationSnapshot): boolean {
  return s.matches('stage') && s.context.staged === 0;
}

export type FinalState = 'rotated' | 'rolledBack' | 'failed' | 'needsAttention' | 'rollbackFailed';
export const FINAL_STATES: readonly FinalState[] = [
  'rotated',
  'rolledBack',
  'failed',
  'needsAttention',
  'rollbackFailed',
];
