/**
 * AWS Lambda entry point: a thin adapter over run.ts. One handler, three kinds of event:
 *
 *   EventBridge schedule (`detail-type: Scheduled Event`, or `{}`)  rotate every due key (unfinished first)
 *   direct invoke `{ "key": "...", "now": true, "leaked": false }`  one rotation
 *   Secrets Manager rotation `{ Step, SecretId, ClientRequestToken }`  the 4-step protocol
 *
 * Schedule and direct invoke return the CLI's `--json` document, `{ "results": [...] }`.
 *
 * Time budget: every run gets `pauseAt = now + context.getRemainingTimeInMillis() - safety margin`.
 * The run loop stops cleanly before it (a stage in flight finishes, a wait is cut short), keeps the
 * snapshot and reports `in_progress`; the next invocation resumes. The margin (KEYROTOR_LAMBDA_SAFETY_MARGIN,
 * default 15s) must cover the longest single provider call plus one state write.
 *
 * Durable waits: every run parks (RotateOptions `park`): a rotation whose next health-gate check is at
 * least `defaults.park.after` away is saved with its wake time and released (outcome `waiting`), so
 * no invocation sits idle at a gate; the next scheduled invocation from that time continues it.
 *
 * The adapter only classifies the event and dispatches. Secrets Manager's native rotation (createSecret,
 * setSecret, testSecret, finishSecret onto keyrotor's stages) lives in `lambda/secrets-manager-steps.ts`.
 */
import path from 'node:path';
import type { Context, ScheduledEvent, SecretsManagerRotationEvent } from 'aws-lambda';
import { z } from 'zod';
import { loadConfig, type LoadedConfig } from '../app/config/load.ts';
import type { ResolvedKey } from '../app/config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { parseDuration } from '../core/duration.ts';
import { KeyrotorError } from '../core/errors.ts';
import type { Logger, StateStore } from '../core/ports.ts';
import { createLogger } from '../app/log.ts';
import { defaultObservers, flushObservers } from '../app/observers.ts';
import { processMetrics } from '../app/metrics.ts';
import { rotateKey, rotateKeys, type KeyResult, type RotateOptions } from '../app/run.ts';
import { createStateStore } from '../app/state/index.ts';
import {
  secretsManagerStep,
  smEventSchema,
  type SecretsManagerRotationEventParsed,
  type SecretsManagerStepResponse,
} from './lambda/secrets-manager-steps.ts';

export type { SecretsManagerStepResponse } from './lambda/secrets-manager-steps.ts';

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

const scheduledSchema = z.object({ 'detail-type': z.literal('Scheduled Event'), source: z.string() }).passthrough();
const directSchema = z
  .object({ key: z.string().min(1), now: z.boolean().optional(), leaked: z.boolean().optional() })
  .strict();

type Classified =
  | { kind: 'scheduled' }
  | { kind: 'direct'; event: z.infer<typeof directSchema> }
  | { kind: 'secretsManager'; event: SecretsManagerRotationEventParsed };

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
    const store = stateStore(cfg);
    const common: RotateOptions = {
      config: cfg,
      stateStore: store,
      logger: log,
      env,
      clock,
      actor: 'lambda',
      park: true,
      observers: defaultObservers({ config: cfg, logger: log, actor: 'lambda', stateStore: store }),
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
