/**
 * `keyrotor/consumer`: the small library an application uses to take part in rotations.
 *
 *   import { createServer } from 'node:http';
 *   import OpenAI from 'openai';
 *   import { createConsumer } from 'keyrotor/consumer';
 *
 *   const keys = await createConsumer({ config: 'rotation.config.yaml', key: 'app' });
 *   createServer((req, res) => (req.url === '/keyrotor/fingerprint' ? keys.handler(req, res) : app(req, res))).listen(8080);
 *   const reply = await keys.withKey((apiKey) => new OpenAI({ apiKey }).responses.create({ model: 'gpt-4o-mini', input: 'hi' }));
 *
 * - Reads the current key from the configured store (the key's first store in the keyrotor config, or
 *   a store config given directly) and caches it; refreshes every `refreshInterval` (default 60s) and
 *   on SIGHUP.
 * - `handler` serves the loaded key's fingerprint for the `http` gate (format: providers/health/http/
 *   src/core/fingerprint-format.ts): `{"format":"keyrotor-fingerprint/1","fingerprint":"fp_…","loadedAt":"…"}`.
 * - `withKey(fn)` calls `fn` with the key; on a 401 `invalid_api_key` from OpenAI (a thrown SDK error
 *   or a fetch Response) it refreshes once and, if the store now holds another key, retries once.
 * - The key itself is never logged or served; `current()` returns it wrapped in `Secret`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import type { z } from 'zod';
import { loadConfig } from '../app/config/load.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { parseDuration } from '../core/duration.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import { fingerprint } from '../core/fingerprint.ts';
import type { Logger, ProviderContext, SecretStore } from '../core/ports.ts';
import type { Secret } from '../core/secret.ts';
import { createStore, storeConfigSchema } from '../../providers/index.ts';
import { FINGERPRINT_FORMAT, type FingerprintDocument } from '../core/fingerprint-format.ts';

export { fingerprint, FINGERPRINT_LABEL } from '../core/fingerprint.ts';
export { Secret } from '../core/secret.ts';
export {
  FINGERPRINT_FORMAT,
  FINGERPRINT_RE,
  parseFingerprintBody,
  type FingerprintDocument,
} from '../core/fingerprint-format.ts';

export interface ConsumerOptions {
  /** the key's name (in the keyrotor config, or the name the store keeps it under) */
  key: string;
  /** a keyrotor config file: the key's store is taken from it (default: its first store) */
  config?: string;
  /** which of the key's stores to read (default 0) */
  storeIndex?: number;
  /** or a store config given directly, same shape as in rotation.config.yaml (`{ type: file, ... }`) */
  store?: z.input<typeof storeConfigSchema>;
  /** with `store`: the keyrotor state dir (file store default paths) and the folder relative paths
   *  resolve from (defaults `.keyrotor` and the current directory) */
  stateDir?: string;
  configDir?: string;
  /** re-read the store this often: a duration (`30s`, `5m`) or ms; `false` or 0 = never (default 60s) */
  refreshInterval?: string | number | false;
  /** re-read the store on SIGHUP (default true; while active, SIGHUP no longer ends the process) */
  sighup?: boolean;
  /** environment for store credentials and `${VAR}` in the config (default process.env) */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  clock?: Clock;
  /** called when a refresh loaded a different key (fingerprints only) */
  onChange?(e: { fingerprint: string; previous: string | null }): void;
  /** called when a background refresh fails (the last good key stays in use) */
  onError?(e: KeyrotorError): void;
}

export interface RefreshResult {
  fingerprint: string;
  previous: string | null;
  changed: boolean;
}

export interface Consumer {
  readonly key: string;
  /** where the key is read from, e.g. `file:.keyrotor/secrets/app.json` */
  readonly source: string;
  /** the cached key (loads it when nothing is cached) */
  current(): Promise<Secret>;
  /** fingerprint of the loaded key (`fp_` + 12 hex), null before the first load */
  fingerprint(): string | null;
  /** ISO time the loaded key was read, null before the first load */
  loadedAt(): string | null;
  /** re-read the store now (concurrent calls share one read) */
  refresh(): Promise<RefreshResult>;
  /** call `fn` with the key; on 401 invalid_api_key refresh once and retry once with a new key */
  withKey<T>(fn: (apiKey: string) => Promise<T>): Promise<T>;
  /** what `handler` serves */
  document(): FingerprintDocument;
  /** node:http / Express handler serving `document()` as JSON (200, or 503 before the first load) */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void;
  /** stop the refresh timer and the SIGHUP listener, release the store */
  close(): Promise<void>;
}

const noopLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return noopLogger;
  },
};

/** A thrown OpenAI SDK error (or anything shaped like one) for a revoked or unknown key. */
export function isInvalidApiKeyError(e: unknown): boolean {
  if (!e || typeof e !== 'object') return false;
  const o = e as { status?: unknown; code?: unknown; error?: { code?: unknown } | null };
  return o.status === 401 && (o.code === 'invalid_api_key' || o.error?.code === 'invalid_api_key');
}

async function isInvalidApiKeyResponse(r: unknown): Promise<boolean> {
  if (typeof Response === 'undefined' || !(r instanceof Response) || r.status !== 401) return false;
  try {
    const body = (await r.clone().json()) as { error?: { code?: unknown } };
    return body?.error?.code === 'invalid_api_key';
  } catch {
    return false;
  }
}

async function openStore(
  o: ConsumerOptions,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  clock: Clock,
): Promise<SecretStore> {
  const memory = new Map<string, string>();
  const providerState = {
    get: (k: string) => memory.get(k),
    set: async (k: string, v: string) => void memory.set(k, v),
  };
  if (o.config !== undefined) {
    const cfg = await loadConfig(o.config, env);
    const key = cfg.keys.find((k) => k.name === o.key);
    if (!key)
      throw new KeyrotorError(
        'UNKNOWN_KEY',
        `keyrotor/consumer: no key "${o.key}" in ${o.config} (configured: ${cfg.keys.map((k) => k.name).join(', ')})`,
      );
    const index = o.storeIndex ?? 0;
    const storeCfg = key.stores[index];
    if (!storeCfg)
      throw new KeyrotorError(
        'USAGE',
        `keyrotor/consumer: key "${o.key}" has no store #${index} (it has ${key.stores.length})`,
      );
    const ctx: ProviderContext = {
      keyName: key.name,
      stateDir: cfg.stateDir,
      configDir: cfg.dir,
      logger,
      clock,
      env,
      providerState,
    };
    return createStore(storeCfg, ctx);
  }
  if (o.store === undefined)
    throw new KeyrotorError(
      'USAGE',
      'keyrotor/consumer: pass `config` (a keyrotor config file) or `store` (a store config)',
    );
  const parsed = storeConfigSchema.safeParse(o.store);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `keyrotor/consumer: invalid store config: ${i?.path.join('.') || '(root)'}: ${i?.message}`,
    );
  }
  const configDir = path.resolve(o.configDir ?? process.cwd());
  const ctx: ProviderContext = {
    keyName: o.key,
    stateDir: path.resolve(configDir, o.stateDir ?? '.keyrotor'),
    configDir,
    logger,
    clock,
    env,
    providerState,
  };
  return createStore(parsed.data, ctx);
}

/** Open the store, load the current key once (throws when it cannot), start refreshing. */
export async function createConsumer(o: ConsumerOptions): Promise<Consumer> {
  const env = o.env ?? process.env;
  const logger = (o.logger ?? noopLogger).child({ consumer: o.key });
  const clock = o.clock ?? systemClock;
  const intervalMs = o.refreshInterval === false ? 0 : parseDuration(o.refreshInterval ?? '60s');
  if (intervalMs === undefined)
    throw new KeyrotorError(
      'USAGE',
      `keyrotor/consumer: invalid refreshInterval ${JSON.stringify(o.refreshInterval)} (use e.g. 30s, 5m)`,
    );
  const store = await openStore(o, env, logger, clock);

  let cached: Secret | null = null;
  let cachedFp: string | null = null;
  let loadedAtMs: number | null = null;
  let inflight: Promise<RefreshResult> | null = null;
  let closed = false;

  async function load(): Promise<RefreshResult> {
    let v;
    try {
      v = await store.readCurrent();
    } catch (e) {
      throw toKeyrotorError(e);
    }
    if (!v) {
      throw new KeyrotorError(
        'SECRET_UNAVAILABLE',
        `keyrotor/consumer: ${store.label} holds no current value for ${o.key}`,
        {
          hint: `bootstrap it with \`keyrotor rotate --now ${o.key}\``,
        },
      );
    }
    const fp = fingerprint(v.secret);
    const previous = cachedFp;
    cached = v.secret;
    cachedFp = fp;
    loadedAtMs = clock.now();
    const changed = previous !== fp;
    if (changed) {
      logger.info({ fingerprint: fp, previous }, previous ? 'loaded a new key' : 'loaded the key');
      if (previous !== null) o.onChange?.({ fingerprint: fp, previous });
    }
    return { fingerprint: fp, previous, changed };
  }

  function refresh(): Promise<RefreshResult> {
    inflight ??= load().finally(() => {
      inflight = null;
    });
    return inflight;
  }

  const background = () => {
    if (closed) return;
    refresh().catch((e: unknown) => {
      const err = toKeyrotorError(e);
      logger.warn({ err: err.toRecord() }, 'refresh failed; keeping the loaded key');
      o.onError?.(err);
    });
  };

  try {
    await refresh();
  } catch (e) {
    await store.close?.().catch(() => undefined);
    throw e;
  }
  const timer = intervalMs > 0 ? setInterval(background, intervalMs) : undefined;
  timer?.unref();
  const onHup = () => background();
  if (o.sighup !== false) process.on('SIGHUP', onHup);

  async function current(): Promise<Secret> {
    if (cached) return cached;
    await refresh();
    return cached!;
  }

  function document(): FingerprintDocument {
    return {
      format: FINGERPRINT_FORMAT,
      fingerprint: cachedFp,
      loadedAt: loadedAtMs === null ? null : new Date(loadedAtMs).toISOString(),
    };
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 });
      res.end();
      return;
    }
    const body = JSON.stringify(document());
    res.writeHead(cachedFp ? 200 : 503, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  async function withKey<T>(fn: (apiKey: string) => Promise<T>): Promise<T> {
    const used = await current();
    let first: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      const value = await fn(used.reveal());
      if (!(await isInvalidApiKeyResponse(value))) return value;
      first = { ok: true, value };
    } catch (e) {
      if (!isInvalidApiKeyError(e)) throw e;
      first = { ok: false, error: e };
    }
    // the key was rejected: another call may have reloaded already; else read the store once
    let next = await current();
    if (fingerprint(next) === fingerprint(used)) {
      await refresh();
      next = await current();
    }
    if (fingerprint(next) === fingerprint(used)) {
      logger.warn(
        { fingerprint: fingerprint(used) },
        'the key was rejected (invalid_api_key) and the store holds no other key',
      );
      if (first.ok) return first.value;
      throw first.error;
    }
    logger.info(
      { from: fingerprint(used), to: fingerprint(next) },
      'the key was rejected (invalid_api_key); retrying once with the reloaded key',
    );
    return fn(next.reveal());
  }

  return {
    key: o.key,
    source: store.label,
    current,
    fingerprint: () => cachedFp,
    loadedAt: () => (loadedAtMs === null ? null : new Date(loadedAtMs).toISOString()),
    refresh,
    withKey,
    document,
    handler,
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      process.off('SIGHUP', onHup);
      await store.close?.();
    },
  };
}
