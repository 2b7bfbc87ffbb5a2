/**
 * AWS Lambda entry point: a thin adapter over run.ts. One handler, three kinds of event:
 *
 *   EventBridge schedule (`detail-type: Scheduled Event`, or `{}`)  rotate every due key (unfinished first)
 *   direct invoke `{ "key": "...", "now": true, "leaked": false }`  one rotation
 *   Secrets Manager rotation `{ Step, SecretId, ClientRequestToken }`  the 4-step protocol (below)
 *
 * Schedule and direct invoke return the CLI's `--json` document, `{ "results": [...] }`.
 *
 * Time budget: every run gets `pauseAt = now + context.getRemainingTimeInMillis() - safety margin`.
 * The run loop stops cleanly before it (a stage in flight finishes, a wait is cut short), keeps the
 * snapshot and reports `in_progress`; the next invocation resumes. The margin (KEYROTOR_LAMBDA_SAFETY_MARGIN,
 * default 15s) must cover the longest single provider call plus one state write.
 *
 * Secrets Manager native rotation: keyrotor's stages mapped onto AWS's steps, each idempotent (a retried
 * step re-runs nothing that is done) and bound to the event's ClientRequestToken:
 *
 *   createSecret  preflight, issue, stage (into the version whose id is the token) — stops before verify
 *   setSecret     nothing left to do: the issuer created the key at `issue`; checks the binding
 *   testSecret    verify: the new key works at the issuer — stops before promote
 *   finishSecret  promote (AWSCURRENT moves to the token's version), confirm (health gates), revoke,
 *                 verifyRevoked. Consumers can only prove the new key once it is current, so the
 *                 consumer health gates run here, after promote. If they need longer than this
 *                 invocation has, finishSecret returns once AWSCURRENT has moved and the rotation stays
 *                 `in_progress`: the next invocation of this function (the EventBridge schedule, or
 *                 `keyrotor resume`) finishes confirm -> revoke. A failed gate demotes AWSCURRENT back.
 */
import path from 'node:path';
import type { Context, ScheduledEvent, SecretsManagerRotationEvent } from 'aws-lambda';
import { z } from 'zod';
import { loadConfig, type LoadedConfig } from '../app/config/load.ts';
import type { ResolvedKey } from '../app/config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { parseDuration } from '../core/duration.ts';
import { fromRecord, KeyrotorError } from '../core/errors.ts';
import type { KeyRecord, Logger, StateStore } from '../core/ports.ts';
import { createLogger } from '../app/log.ts';
import { defaultObservers, flushObservers } from '../app/observers.ts';
import { processMetrics } from '../app/metrics.ts';
import { rotateKey, rotateKeys, type KeyResult, type RotateOptions, type TransitionEvent } from '../app/run.ts';
import { createStateStore } from '../app/state/index.ts';
import {
  formatNativeToken,
  loadAwsNativeRotation,
  nativeTokenKey,
  parseNativeToken,
  secretIdMatches,
  NATIVE_TOKEN_RE as TOKEN_RE,
  type AwsSecretsManagerStoreConfig,
} from '../../providers/index.ts';

export const DEFAULT_SAFETY_MARGIN_MS = 15_000;

/** The part of the Lambda context keyrotor reads. */
export type LambdaContext = Pick<Context, 'getRemainingTimeInMillis'> &
  Partial<Pick<Context, 'awsRequestId' | 'functionName'>>;

export interface DirectInvokeEvent {
  key: string;
  now?: boolean;
  leaked?: boolean;
}
export type KeyrotorLambdaEvent =
  ScheduledEvent | SecretsManagerRotationEvent | DirectInvokeEvent | Record<string, never>;

export interface RunResponse {
  results: KeyResult[];
}

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

export interface LambdaHandlerOptions {
  /** default: KEYROTOR_CONFIG, else rotation.config.yaml in LAMBDA_TASK_ROOT (or the cwd); loaded once */
  config?: LoadedConfig | (() => Promise<LoadedConfig>);
  /** default: the file state store in the config's stateDir (mount EFS there: state must outlive the invocation) */
  stateStore?: StateStore | ((cfg: LoadedConfig) => StateStore);
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** stop this long before the Lambda's deadline (default KEYROTOR_LAMBDA_SAFETY_MARGIN or 15s) */
  safetyMarginMs?: number;
}

export type KeyrotorHandler = (
  event: unknown,
  context: LambdaContext,
) => Promise<RunResponse | SecretsManagerStepResponse>;

// ------------------------------------------------------------------ event shapes

const STEPS = ['createSecret', 'setSecret', 'testSecret', 'finishSecret'] as const;
const smEventSchema = z
  .object({
    Step: z.enum(STEPS),
    SecretId: z.string().min(1).max(2048),
    ClientRequestToken: z.string().regex(TOKEN_RE, 'a 32-64 character token'),
    // sent by newer Secrets Manager versions for cross-account rotation; not needed here
    RotationToken: z.string().optional(),
  })
  .strict();
const scheduledSchema = z.object({ 'detail-type': z.literal('Scheduled Event'), source: z.string() }).passthrough();
const directSchema = z
  .object({ key: z.string().min(1), now: z.boolean().optional(), leaked: z.boolean().optional() })
  .strict();

type Classified =
  | { kind: 'scheduled' }
  | { kind: 'direct'; event: z.infer<typeof directSchema> }
  | { kind: 'secretsManager'; event: z.infer<typeof smEventSchema> };

function classify(event: unknown): Classified {
  if (!event || typeof event !== 'object' || Array.isArray(event)) {
    throw new KeyrotorError('USAGE', 'the Lambda event is not a JSON object');
  }
  const o = event as Record<string, unknown>;
  const first = (r: z.ZodSafeParseError<unknown>) => {
    const i = r.error.issues[0];
    return i ? `${i.path.join('.') || '(event)'}: ${i.message}` : 'invalid';
  };
  if ('Step' in o || 'ClientRequestToken' in o) {
    const r = smEventSchema.safeParse(o);
    if (!r.success) throw new KeyrotorError('USAGE', `malformed Secrets Manager rotation event (${first(r)})`);
    return { kind: 'secretsManager', event: r.data };
  }
  if ('detail-type' in o) {
    const r = scheduledSchema.safeParse(o);
    if (!r.success)
      throw new KeyrotorError(
        'USAGE',
        `unsupported EventBridge event (${first(r)}); keyrotor handles "Scheduled Event"`,
      );
    return { kind: 'scheduled' };
  }
  if ('key' in o) {
    const r = directSchema.safeParse(o);
    if (!r.success)
      throw new KeyrotorError(
        'USAGE',
        `malformed direct invocation (${first(r)}); expected { "key": "<name>", "now": true, "leaked": false }`,
      );
    return { kind: 'direct', event: r.data };
  }
  if (Object.keys(o).length === 0) return { kind: 'scheduled' };
  throw new KeyrotorError('USAGE', `unrecognized Lambda event (fields: ${Object.keys(o).slice(0, 5).join(', ')})`, {
    hint: 'send an EventBridge scheduled event, { "key": "<name>", "now": true }, or point Secrets Manager rotation at this function',
  });
}

// ------------------------------------------------------------------ the handler

export function createHandler(opts: LambdaHandlerOptions = {}): KeyrotorHandler {
  const env = opts.env ?? process.env;
  const clock = opts.clock ?? systemClock;
  let configP: Promise<LoadedConfig> | undefined;
  let loggerP: Promise<Logger> | undefined;
  let store: StateStore | undefined;

  const config = () => {
    if (!configP) {
      const c = opts.config;
      configP = typeof c === 'function' ? c() : c ? Promise.resolve(c) : loadConfig(defaultConfigPath(env), env);
      configP.catch(() => (configP = undefined)); // a failed load is retried on the next invocation
    }
    return configP;
  };
  const logger = () => (loggerP ??= opts.logger ? Promise.resolve(opts.logger) : createLogger({ pretty: false }));
  const stateStore = (cfg: LoadedConfig) => {
    const s = opts.stateStore;
    return (store ??= typeof s === 'function' ? s(cfg) : (s ?? createStateStore(cfg, env)));
  };
  const marginMs = () => {
    if (opts.safetyMarginMs !== undefined) return opts.safetyMarginMs;
    const v = env.KEYROTOR_LAMBDA_SAFETY_MARGIN;
    if (!v) return DEFAULT_SAFETY_MARGIN_MS;
    const ms = parseDuration(v);
    if (ms === undefined)
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `KEYROTOR_LAMBDA_SAFETY_MARGIN: not a duration (${JSON.stringify(v)})`,
        { hint: 'e.g. 15s' },
      );
    return ms;
  };

  return async (event, context) => {
    const what = classify(event);
    const cfg = await config();
    const base = await logger();
    const log = base.child({
      entry: 'lambda',
      ...(context.awsRequestId ? { awsRequestId: context.awsRequestId } : {}),
    });
    const remaining =
      typeof context?.getRemainingTimeInMillis === 'function' ? context.getRemainingTimeInMillis() : undefined;
    const pauseAt = remaining !== undefined ? clock.now() + remaining - marginMs() : undefined;
    const common: RotateOptions = {
      config: cfg,
      stateStore: stateStore(cfg),
      logger: log,
      env,
      clock,
      actor: 'lambda',
      observers: defaultObservers({ config: cfg, logger: log, actor: 'lambda' }),
      ...(pauseAt !== undefined ? { pauseAt } : {}),
    };

    if (what.kind === 'scheduled') {
      log.info({ keys: cfg.keys.length }, 'scheduled run: rotating every due key');
      const results = await rotateKeys(cfg.keys, common);
      await flushObservers(common.observers ?? [], 5_000); // webhook deliveries, bounded: the Lambda freezes after returning
      return { results, metrics: await processMetrics().snapshot() };
    }
    if (what.kind === 'direct') {
      const { key: name, now, leaked } = what.event;
      if (leaked && !now)
        throw new KeyrotorError('USAGE', '"leaked": true needs "now": true: a leaked key is rotated immediately');
      const key = pickKey(cfg, name);
      const results = [await rotateKey(key, { ...common, now: now === true, leaked: leaked === true })];
      await flushObservers(common.observers ?? [], 5_000);
      return { results, metrics: await processMetrics().snapshot() };
    }
    return secretsManagerStep(what.event, cfg, common, log);
  };
}

/** The handler Lambda calls (`lambda.handler`). Reads its config on the first invocation. */
export const handler: KeyrotorHandler = createHandler();

function defaultConfigPath(env: NodeJS.ProcessEnv): string {
  return env.KEYROTOR_CONFIG ?? path.join(env.LAMBDA_TASK_ROOT ?? process.cwd(), 'rotation.config.yaml');
}

function pickKey(cfg: LoadedConfig, name: string): ResolvedKey {
  const k = cfg.keys.find((x) => x.name === name);
  if (!k)
    throw new KeyrotorError(
      'UNKNOWN_KEY',
      `unknown key "${name}" (configured: ${cfg.keys.map((x) => x.name).join(', ')})`,
    );
  return k;
}

// ------------------------------------------------------------------ Secrets Manager native rotation

/** forward states in order; compensation states (demote, unstage, discard) are never paused on purpose */
const FORWARD = [
  'preflight',
  'issue',
  'stage',
  'verify',
  'promote',
  'confirm',
  'decideRevoke',
  'revoke',
  'revokeRetry',
  'verifyRevoked',
];
const rank = (state: string) => FORWARD.indexOf(state);

/** where each step stops: the first state that belongs to the next step (null = run to the end) */
const STOP_AT: Record<SecretsManagerRotationEvent['Step'], string | null> = {
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

async function secretsManagerStep(
  ev: z.infer<typeof smEventSchema>,
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
  if (stopAt && active && at && rank(at) >= rank(stopAt)) {
    return reply('done', active.rotationId, at, `already done (the rotation stands at ${at})`);
  }
  const ac = new AbortController();
  const stopper = {
    onTransition(e: TransitionEvent) {
      if (stopAt && rank(e.state) >= rank(stopAt)) ac.abort();
    },
  };
  const result = await rotateKey(key, {
    ...common,
    signal: ac.signal,
    observers: [...(common.observers ?? []), stopper],
    ...(step === 'createSecret' ? { now: true } : { resumeOnly: true }),
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
    if (result.outcome === 'in_progress') {
      return reply(
        'in_progress',
        rid,
        result.stage ?? 'confirm',
        `AWSCURRENT moved; ${result.stage} continues on the next invocation (schedule or keyrotor resume ${key.name})`,
      );
    }
    return reply('done', rid, 'rotated', 'rotated: the new key is current, the old key is revoked');
  }

  // create / set / test: the rotation must stand at (or past) this step's stop
  if (result.outcome !== 'rotated' && (!result.stage || rank(result.stage) < rank(stopAt!))) {
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
