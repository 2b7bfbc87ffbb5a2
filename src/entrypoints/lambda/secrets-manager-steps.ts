/**
 * Secrets Manager native rotation: keyrotor's stages mapped onto AWS's 4 steps, each idempotent (a
 * retried step re-runs nothing that is done) and bound to the event's ClientRequestToken. The Lambda
 * adapter (`../lambda.ts`) classifies the event and calls `secretsManagerStep`.
 *
 *   createSecret  preflight, issue, stage (into the version whose id is the token) — stops before verify
 *   setSecret     nothing left to do: the issuer created the key at `issue`; checks the binding
 *   testSecret    verify: the new key works at the issuer — stops before promote
 *   finishSecret  promote (AWSCURRENT moves to the token's version), confirm (health gates), revoke,
 *                 verifyRevoked. Consumers can only prove the new key once it is current, so the
 *                 consumer health gates run here, after promote. If they need longer than this
 *                 invocation has, finishSecret returns once AWSCURRENT has moved and the rotation stays
 *                 `in_progress`: the next invocation of this function (the EventBridge schedule, or
 *                 `keyrotor resume`) finishes confirm -> revoke. A long gate wait is parked (a durable
 *                 wait, outcome `waiting`): reported as `in_progress` the same way. A failed gate demotes AWSCURRENT back.
 */
import type { SecretsManagerRotationEvent } from 'aws-lambda';
import { z } from 'zod';
import type { LoadedConfig } from '../../app/config/load.ts';
import type { ResolvedKey } from '../../app/config/schema.ts';
import { rotateKey, type KeyResult, type RotateOptions, type TransitionEvent } from '../../app/run.ts';
import { fromRecord, KeyrotorError } from '../../core/errors.ts';
import type { KeyRecord, Logger } from '../../core/ports.ts';
import {
  formatNativeToken,
  loadAwsNativeRotation,
  nativeTokenKey,
  parseNativeToken,
  secretIdMatches,
  NATIVE_TOKEN_RE as TOKEN_RE,
  type AwsSecretsManagerStoreConfig,
} from '../../../providers/index.ts';
import { forwardRank, type RotationState } from '../../../workflows/rotation/rotation.machine.ts';

export interface SecretsManagerStepResponse {
  step: SecretsManagerRotationEvent['Step'];
  secretId: string;
  key: string;
  token: string;
  rotationId: string | null;
  /** `done`: this step's work is finished (now or by an earlier attempt) */
  status: 'done' | 'in_progress';
  /** stage the rotation stands at (unfinished) or its outcome (finished) */
  stage: string;
  note: string;
}

const STEPS = ['createSecret', 'setSecret', 'testSecret', 'finishSecret'] as const;
/** a Secrets Manager rotation event, as the adapter accepts it */
export const smEventSchema = z
  .object({
    Step: z.enum(STEPS),
    SecretId: z.string().min(1).max(2048),
    ClientRequestToken: z.string().regex(TOKEN_RE, 'a 32-64 character token'),
    // sent by newer Secrets Manager versions for cross-account rotation; not needed here
    RotationToken: z.string().optional(),
  })
  .strict();
export type SecretsManagerRotationEventParsed = z.infer<typeof smEventSchema>;

/**
 * where each step stops: the first state that belongs to the next step (null = run to the end),
 * compared by position in the workflow's forward order (compensations are never paused on purpose)
 */
const STOP_AT: Record<SecretsManagerRotationEvent['Step'], RotationState | null> = {
  createSecret: 'verify',
  setSecret: 'verify',
  testSecret: 'promote',
  finishSecret: null,
};

function findAwsKey(cfg: LoadedConfig, secretId: string): { key: ResolvedKey; store: AwsSecretsManagerStoreConfig } {
  const hits: { key: ResolvedKey; store: AwsSecretsManagerStoreConfig }[] = [];
  for (const key of cfg.keys) {
    for (const s of key.stores)
      if (s.type === 'aws-secrets-manager' && secretIdMatches(s.secretId, secretId)) hits.push({ key, store: s });
  }
  if (hits.length === 0) {
    throw new KeyrotorError(
      'UNKNOWN_KEY',
      `no configured key has an aws-secrets-manager store for secret ${secretId}`,
      {
        hint: "add the secret (name or ARN) as an aws-secrets-manager store of the key it holds, or point this secret's rotation at another function",
      },
    );
  }
  if (hits.length > 1) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `secret ${secretId} matches stores of several keys (${hits.map((h) => h.key.name).join(', ')})`,
      {
        hint: 'configure the secret by its full ARN so it names exactly one store',
      },
    );
  }
  return hits[0]!;
}

function stateOf(record: KeyRecord | null): string | null {
  const v = (record?.active?.snapshot as { value?: unknown } | undefined)?.value;
  return typeof v === 'string' ? v : null;
}

/** Run one step of Secrets Manager's rotation of the secret `ev.SecretId` (see the header). */
export async function secretsManagerStep(
  ev: SecretsManagerRotationEventParsed,
  cfg: LoadedConfig,
  common: RotateOptions,
  log: Logger,
): Promise<SecretsManagerStepResponse> {
  const { Step: step, SecretId: secretId, ClientRequestToken: token } = ev;
  const { key, store } = findAwsKey(cfg, secretId);
  const slog = log.child({ key: key.name, step, token });
  const stateKey = nativeTokenKey(store.secretId);
  const inspectNativeRotation = await loadAwsNativeRotation();
  const inspect = () => inspectNativeRotation(store, common.env ?? process.env, token);
  const reply = (
    status: 'done' | 'in_progress',
    rotationId: string | null,
    stage: string,
    note: string,
  ): SecretsManagerStepResponse => {
    slog.info({ status, rotationId, stage }, `${step}: ${note}`);
    return { step, secretId, key: key.name, token, rotationId, status, stage, note };
  };
  const where = `${step} of ${secretId} (key ${key.name}, ClientRequestToken ${token})`;

  const view = await inspect();
  if (view.tokenStages?.includes('AWSCURRENT')) {
    return reply(
      'done',
      view.tokenRotationId ?? null,
      'rotated',
      `version ${token} is already AWSCURRENT: nothing left to do`,
    );
  }

  const record = await common.stateStore.read(key.name);
  const entry = parseNativeToken(record?.providerState[stateKey]);
  const active = record?.active ?? null;
  const mine = entry?.token === token;

  /** the rotation bound to this token ended (no longer active): report it */
  const ended = (rotationId: string) => {
    const last = record?.last;
    if (last?.rotationId === rotationId && last.outcome === 'rotated') {
      return reply('done', rotationId, 'rotated', `rotation ${rotationId} for this token already finished`);
    }
    const why =
      last?.rotationId === rotationId
        ? `${last.outcome}${last.error ? `: ${last.error.message}` : ''}`
        : 'its result is not recorded';
    throw new KeyrotorError(
      'STORE_CONFLICT',
      `${where}: rotation ${rotationId} for this token already ended (${why}); a token is used once`,
      {
        hint: 'the next Secrets Manager rotation starts with a new token (or run: aws secretsmanager rotate-secret --secret-id <secret>)',
      },
    );
  };

  if (step === 'createSecret') {
    if (active && !(mine && (!entry.rotationId || entry.rotationId === active.rotationId))) {
      throw new KeyrotorError(
        'LOCKED',
        `${where}: key ${key.name} has an unfinished rotation ${active.rotationId} (${entry?.rotationId === active.rotationId ? `for ClientRequestToken ${entry.token}` : 'not started by this Secrets Manager rotation'})`,
        {
          retryable: true,
          hint: `let it finish (the scheduled invocation resumes it, or keyrotor resume ${key.name}), then rotate again`,
        },
      );
    }
    if (!active && mine && entry?.rotationId) return ended(entry.rotationId);
    if (!mine) {
      if (view.tokenRotationId) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `${where}: version ${token} was already written by keyrotor rotation ${view.tokenRotationId}`,
          {
            hint: 'a token is used once; start a new Secrets Manager rotation',
          },
        );
      }
      await common.stateStore.setProviderState(key.name, stateKey, formatNativeToken({ token }));
    }
  } else {
    if (!mine) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${where}: ClientRequestToken mismatch: ` +
          (entry
            ? `keyrotor's Secrets Manager rotation of ${key.name} is for token ${entry.token}`
            : `no createSecret was seen for this token`),
        {
          hint: 'Secrets Manager sends the same token to all four steps of one rotation; start a new rotation (aws secretsmanager rotate-secret)',
        },
      );
    }
    if (!active) {
      if (entry.rotationId) return ended(entry.rotationId);
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${where}: createSecret did not finish for this token (no rotation is in progress)`,
        {
          hint: 'Secrets Manager retries the rotation from createSecret; or start a new one (aws secretsmanager rotate-secret)',
        },
      );
    }
    if (entry.rotationId && entry.rotationId !== active.rotationId) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${where}: ClientRequestToken mismatch: the unfinished rotation ${active.rotationId} is not the one (${entry.rotationId}) this token started`,
      );
    }
  }

  // drive the rotation until this step's work is done
  const stopAt = STOP_AT[step];
  const at = stateOf(record);
  if (stopAt && active && at && forwardRank(at) >= forwardRank(stopAt)) {
    return reply('done', active.rotationId, at, `already done (the rotation stands at ${at})`);
  }
  const ac = new AbortController();
  const stopper = {
    onTransition(e: TransitionEvent) {
      if (stopAt && forwardRank(e.state) >= forwardRank(stopAt)) ac.abort();
    },
  };
  const result = await rotateKey(key, {
    ...common,
    signal: ac.signal,
    observers: [...(common.observers ?? []), stopper],
    // Secrets Manager asks for this step now: a parked rotation is continued whatever its wake time
    ...(step === 'createSecret' ? { now: true } : { resumeOnly: true, wake: true }),
  });
  const rid = result.rotationId;

  if (result.outcome === 'locked') {
    throw new KeyrotorError(
      'LOCKED',
      `${where}: ${result.error?.message ?? `${key.name} is being rotated by another run`}`,
      { retryable: true },
    );
  }
  if (result.outcome === 'rolled_back' || result.outcome === 'needs_attention') {
    const err = result.error ? fromRecord(result.error) : undefined;
    const leftovers = result.leftovers?.length ? `; a human must: ${result.leftovers.join('; ')}` : '';
    throw new KeyrotorError(
      err?.code ?? 'INTERNAL',
      `${where}: rotation ${rid} ${result.outcome}${err ? ` (${err.message})` : ''}${leftovers}`,
      {
        stage: err?.stage,
        ...(err?.hint ? { hint: err.hint } : {}),
      },
    );
  }
  if (result.outcome === 'skipped') {
    throw new KeyrotorError('STORE_CONFLICT', `${where}: no unfinished rotation to continue`);
  }

  if (step === 'finishSecret') {
    const after = await inspect();
    if (!after.tokenStages?.includes('AWSCURRENT')) {
      if (result.outcome === 'rotated') {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `${where}: rotation ${rid} finished, but version ${token} is not AWSCURRENT (the new value went into another version)`,
          {
            hint: 'another writer changed the secret during the rotation; check its staging labels',
          },
        );
      }
      throw stopped(where, result, 'before AWSCURRENT moved to the new version');
    }
    if (result.outcome === 'in_progress' || result.outcome === 'waiting') {
      return reply(
        'in_progress',
        rid,
        result.stage ?? 'confirm',
        result.outcome === 'waiting'
          ? `AWSCURRENT moved; ${result.stage} is parked until ${result.wakeAt} (a durable wait): the next scheduled invocation from then (or keyrotor resume ${key.name}) continues it`
          : `AWSCURRENT moved; ${result.stage} continues on the next invocation (schedule or keyrotor resume ${key.name})`,
      );
    }
    return reply('done', rid, 'rotated', 'rotated: the new key is current, the old key is revoked');
  }

  // create / set / test: the rotation must stand at (or past) this step's stop
  if (result.outcome !== 'rotated' && (!result.stage || forwardRank(result.stage) < forwardRank(stopAt!))) {
    throw stopped(where, result, `before ${stopAt}`);
  }
  if (step === 'createSecret') {
    const after = await inspect();
    if (!after.tokenStages?.includes('AWSPENDING') || after.tokenRotationId !== rid) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${where}: rotation ${rid} did not stage into version ${token} (labels there: ${after.tokenStages?.join(', ') ?? 'none'})`,
        {
          hint: "another writer changed the secret's AWSPENDING version; start a new rotation",
        },
      );
    }
  }
  return reply('done', rid, result.stage ?? result.outcome, `${step} done`);
}

/** a step that ran out of time (or was paused) before its work was done: retryable, the snapshot is kept */
function stopped(where: string, r: KeyResult, what: string): KeyrotorError {
  return new KeyrotorError(
    'IN_PROGRESS',
    `${where}: rotation ${r.rotationId} stopped at ${r.stage ?? r.outcome} ${what} (the Lambda's time ran out); the state is saved and a retry of this step resumes it`,
    {
      retryable: true,
      hint: 'raise the function timeout (or lower KEYROTOR_LAMBDA_SAFETY_MARGIN)',
    },
  );
}
