/**
 * keyrotor as a library: what a job that embeds keyrotor calls (`import { loadConfig, rotate, status }
 * from 'keyrotor'`). The same code paths as the CLI: `rotate` is `keyrotor rotate`, `status` is
 * `keyrotor status --json`, with the audit trail, metrics and webhooks the config asks for.
 *
 * ```ts
 * import { loadConfig, rotate, status, exitCodeOf } from 'keyrotor';
 *
 * const config = await loadConfig('rotation.config.yaml');   // throws KeyrotorError CONFIG_INVALID
 * const results = await rotate(config, { keys: ['billing'] }); // rotates what is due
 * for (const r of results) console.log(r.key, r.outcome, r.newKeyId);
 * console.log(await status(config));                          // per key: current key id, next due, ...
 * process.exitCode = exitCodeOf(results);                     // the CLI's exit codes (0..4)
 * ```
 *
 * Results, statuses and errors carry references (key ids, fingerprints, rotation ids), never secret
 * values. Heavy modules (the workflow, providers, cloud SDKs) load when a function first needs them,
 * and a cloud SDK only when the config names that store.
 */
import type { LoadedConfig } from '../app/config/load.ts';
import type { ResolvedKey } from '../app/config/schema.ts';
import type { KeyResult, RotationObserver } from '../app/run.ts';
import { KeyrotorError } from '../core/errors.ts';
import type { Logger, StateStore } from '../core/ports.ts';
import { OUTCOME_EXIT } from '../core/stages.ts';
import type { KeyStatus } from './commands/status.ts';

export { loadConfig, parseConfig, DEFAULT_CONFIG_FILE, type LoadedConfig } from '../app/config/load.ts';
export type { ResolvedKey, RawConfig } from '../app/config/schema.ts';
export { KEYROTOR_VERSION } from '../app/version.ts';
export {
  KeyrotorError,
  isKeyrotorError,
  ERROR_CODES,
  type ErrorCode,
  type ErrorRecord,
  type KeyrotorErrorOptions,
} from '../core/errors.ts';
export { OUTCOME_EXIT, type Outcome } from '../core/stages.ts';
export type { KeyResult, PlanInfo, RotationObserver, TransitionEvent } from '../app/run.ts';
export type { KeyRecord, Logger, RotationResult, StateStore } from '../core/ports.ts';
export type { KeyStatus, Waiting } from './commands/status.ts';

/** Options of {@link rotate}. Everything is optional; the defaults are the CLI's. */
export interface RotateKeysOptions {
  /** names of the keys to rotate (default: every key in the config); an unknown name is UNKNOWN_KEY */
  keys?: string[];
  /** rotate even when not due (`--now`) */
  now?: boolean;
  /** leak mode (`--now --leaked`): the current key is compromised; needs `now` and named `keys` */
  leaked?: boolean;
  /** plan only, change nothing (`--dry-run`): each result carries `dryRun: true` and a `plan` */
  dryRun?: boolean;
  /** default: a logger that drops everything; pass a pino logger (or anything with the same methods) */
  logger?: Logger;
  /** default: the state backend the config names (`state:`; files under `stateDir` by default) */
  stateStore?: StateStore;
  /** where `${VAR}`s and `*Env` names are read (default process.env) */
  env?: NodeJS.ProcessEnv;
  /** who runs this, for the audit trail (default `library`) */
  actor?: string;
  /** keys rotated at the same time (default 4) */
  concurrency?: number;
  /** stop cleanly when aborted: the rotation is saved `in_progress` and the next call resumes it */
  signal?: AbortSignal;
  /**
   * durable waits (`--park`): a rotation whose next health-gate check is at least
   * `defaults.park.after` away is saved with its wake time and released (outcome `waiting`, `wakeAt`);
   * a later call from that time continues it. Default false: wait in this call.
   */
  park?: boolean;
  /**
   * default: the config's audit trail, metrics and webhooks (as the CLI); these are added to them.
   * Pending webhook deliveries are flushed (at most 10 s) before `rotate` returns.
   */
  observers?: RotationObserver[];
}

/** Options of {@link status}. */
export interface StatusOptions {
  /** names of the keys (default: every key in the config) */
  keys?: string[];
  /** default: the state backend the config names (`state:`; files under `stateDir` by default) */
  stateStore?: StateStore;
  /** "now" for due dates and ages, ms since the epoch (default Date.now()) */
  now?: number;
  /** environment for the state backend's `urlEnv` etc. (default process.env) */
  env?: NodeJS.ProcessEnv;
}

/**
 * The configured keys with these names, in that order (all keys when `names` is empty).
 * @throws KeyrotorError UNKNOWN_KEY for a name the config does not have
 */
export function selectKeys(config: LoadedConfig, names: readonly string[] = []): ResolvedKey[] {
  if (names.length === 0) return config.keys;
  return names.map((n) => {
    const k = config.keys.find((x) => x.name === n);
    if (!k)
      throw new KeyrotorError(
        'UNKNOWN_KEY',
        `unknown key "${n}" (configured: ${config.keys.map((x) => x.name).join(', ')})`,
      );
    return k;
  });
}

/** the state backend the config names (`state:`; files under `stateDir` by default) */
async function defaultStateStore(config: LoadedConfig, env: NodeJS.ProcessEnv): Promise<StateStore> {
  const { createStateStore } = await import('../app/state/index.ts');
  return createStateStore(config, env);
}

/**
 * Rotate the keys that are due (or all named keys with `now`), one result per key, as
 * `keyrotor rotate` does: create the new key at the issuer, stage it in every store, verify, promote,
 * wait for the consumers, revoke the old key; roll back on failure. A rotation another process holds
 * the lock for is `locked`; an interrupted one is resumed.
 *
 * Failures of a key are results (`outcome` `rolled_back` / `needs_attention`, with `error`), not
 * exceptions; {@link exitCodeOf} turns results into the CLI's exit code.
 * @throws KeyrotorError for bad options (USAGE), unknown key names (UNKNOWN_KEY) or a webhook whose
 *   env var is missing (CONFIG_ENV_MISSING), before anything is changed
 */
export async function rotate(config: LoadedConfig, o: RotateKeysOptions = {}): Promise<KeyResult[]> {
  if (o.leaked && !o.now) throw new KeyrotorError('USAGE', 'leaked needs now: a leaked key is rotated immediately');
  if (o.leaked && !o.keys?.length)
    throw new KeyrotorError('USAGE', 'leaked needs the name(s) of the key(s) that leaked');
  const keys = selectKeys(config, o.keys);
  const [{ rotateKeys }, { defaultObservers, flushObservers }, { silentLogger }] = await Promise.all([
    import('../app/run.ts'),
    import('../app/observers.ts'),
    import('../app/log.ts'),
  ]);
  const env = o.env ?? process.env;
  const logger = o.logger ?? silentLogger();
  const actor = o.actor ?? 'library';
  // what this call opens (the default state store, the audit trail's connections) it closes again
  const made = o.stateStore ? undefined : await defaultStateStore(config, env);
  const stateStore = o.stateStore ?? made!;
  let release: (() => Promise<void>) | undefined;
  const observers = [
    ...defaultObservers({ config, logger, actor, env, stateStore, own: (r) => (release = r) }),
    ...(o.observers ?? []),
  ];
  try {
    return await rotateKeys(keys, {
      config,
      stateStore,
      logger,
      observers,
      env,
      actor,
      now: o.now === true,
      leaked: o.leaked === true,
      dryRun: o.dryRun === true,
      park: o.park === true,
      ...(o.concurrency ? { concurrency: o.concurrency } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
  } finally {
    await flushObservers(observers, 10_000);
    await release?.();
    if (made) await made.close?.();
    // the caller's own store lives on: the process-wide metrics keep reading key ages from it, as before
    else (await import('../app/metrics.ts')).processMetrics().trackKeys(config, stateStore);
  }
}

/**
 * Where each key stands, read from the state store only (no provider is called): the current key
 * id, when it was rotated and is due next, the last outcome and error, and an unfinished rotation
 * with what it waits for. The same objects as `keyrotor status --json`.
 * @throws KeyrotorError UNKNOWN_KEY for a name the config does not have
 */
export async function status(config: LoadedConfig, o: StatusOptions = {}): Promise<KeyStatus[]> {
  const keys = selectKeys(config, o.keys);
  const { keyStatus } = await import('./commands/status.ts');
  const made = o.stateStore ? undefined : await defaultStateStore(config, o.env ?? process.env);
  const stateStore = o.stateStore ?? made!;
  const now = o.now ?? Date.now();
  const out: KeyStatus[] = [];
  try {
    for (const k of keys) out.push(keyStatus(k, await stateStore.read(k.name), now));
  } finally {
    await made?.close?.(); // the default store's connections
  }
  return out;
}

/**
 * The CLI's exit code for these results: the highest of 0 (rotated / not due), 1 (rolled back, the
 * old key still serves), 3 (locked), 4 (a human must act).
 */
export function exitCodeOf(results: readonly KeyResult[]): number {
  return Math.max(0, ...results.map((r) => OUTCOME_EXIT[r.outcome]));
}
