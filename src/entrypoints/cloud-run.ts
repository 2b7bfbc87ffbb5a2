/**
 * `keyrotor serve`: the HTTP entry point for Cloud Run (or any host), a thin adapter over run.ts.
 *
 *   GET  /healthz   200 when the server is up (no authentication, no body)
 *   GET  /metrics   Prometheus text (authenticated like /rotate)
 *   POST /rotate    Cloud Scheduler: rotate every due key (unfinished first), or
 *                   `{ "keys": ["name"], "now": true, "leaked": false }`
 *   POST /pubsub    Pub/Sub push of Secret Manager notifications: `SECRET_ROTATE` for a secret that is a
 *                   gcp-secret-manager store of a configured key rotates that key; other event types
 *                   are acknowledged and ignored
 *
 * Order of checks for every request: route and method (404/405), declared size (413), authentication
 * (401: a Google-signed OIDC ID token or the shared bearer token), body read with a hard cap (413),
 * JSON shape (400). Nothing is loaded, locked or rotated before all of them pass.
 *
 * Responses are the CLI's `--json` document `{ "results": [...] }`. Status: 200 when every result is
 * final; 202 (/rotate) or 503 (/pubsub, so Pub/Sub redelivers and the next delivery resumes) when a
 * rotation stopped at the request's deadline with `in_progress`. Durable waits: requests park
 * (RotateOptions `park`): a rotation whose next health-gate check is at least `defaults.park.after`
 * away is saved with its wake time and released (`waiting`: 202 on /rotate, 200 on /pubsub — the
 * scheduled /rotate continues it, redelivery would not help); a later /rotate continues it. Time budget: each request gets
 * `pauseAt = start + request timeout - safety margin`; set the request timeout to the service's.
 * A duplicate SECRET_ROTATE delivery does not rotate twice: a key rotated after the notification was
 * published counts as done.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Authenticator } from './auth/index.ts';
import type { LoadedConfig } from '../app/config/load.ts';
import type { ResolvedKey } from '../app/config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import type { Logger, StateStore } from '../core/ports.ts';
import { defaultObservers } from '../app/observers.ts';
import { processMetrics } from '../app/metrics.ts';
import { rotateKey, rotateKeys, type KeyResult, type RotateOptions } from '../app/run.ts';
import { createStateStore } from '../app/state/index.ts';

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 300_000;
export const DEFAULT_SAFETY_MARGIN_MS = 15_000;

export interface ServeOptions {
  config: LoadedConfig;
  auth: Authenticator;
  logger: Logger;
  stateStore?: StateStore;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** default 0.0.0.0 (Cloud Run needs it); tests bind 127.0.0.1 */
  host?: string;
  /** default 8080; 0 = any free port */
  port?: number;
  maxBodyBytes?: number;
  /** the platform's request timeout (Cloud Run: the service's timeoutSeconds) */
  requestTimeoutMs?: number;
  /** stop rotating this long before the request timeout */
  safetyMarginMs?: number;
}

export interface KeyrotorServer {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** stop accepting requests, pause running rotations at a safe point, wait for their responses */
  close(): Promise<void>;
}

// ------------------------------------------------------------------ request shapes

const rotateBodySchema = z
  .object({
    keys: z.array(z.string().min(1)).max(1000).optional(),
    now: z.boolean().optional(),
    leaked: z.boolean().optional(),
  })
  .strict();

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
const pubsubEnvelopeSchema = z
  .object({
    message: z
      .object({
        attributes: z.record(z.string(), z.string()),
        data: z.string().regex(BASE64, 'not base64').optional(),
        messageId: z.string().min(1).optional(),
        message_id: z.string().min(1).optional(),
        publishTime: z.iso.datetime({ offset: true }).optional(),
        publish_time: z.iso.datetime({ offset: true }).optional(),
        orderingKey: z.string().optional(),
      })
      .passthrough()
      .refine((m) => m.messageId !== undefined || m.message_id !== undefined, 'messageId is required'),
    subscription: z.string().min(1),
    deliveryAttempt: z.number().int().optional(),
  })
  .passthrough();

/** Secret Manager event types (https://cloud.google.com/secret-manager/docs/event-notifications) */
const SECRET_EVENT_TYPES = new Set([
  'SECRET_CREATE',
  'SECRET_UPDATE',
  'SECRET_DELETE',
  'SECRET_VERSION_ADD',
  'SECRET_VERSION_ENABLE',
  'SECRET_VERSION_DISABLE',
  'SECRET_VERSION_DESTROY',
  'SECRET_VERSION_DESTROY_SCHEDULED',
  'SECRET_ROTATE',
  'TOPIC_CONFIGURED',
]);
const SECRET_NAME = /^projects\/([^/]+)\/secrets\/([A-Za-z0-9_-]{1,255})$/;

class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

// ------------------------------------------------------------------ server

export async function startServer(o: ServeOptions): Promise<KeyrotorServer> {
  const clock = o.clock ?? systemClock;
  const env = o.env ?? process.env;
  const maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const timeoutMs = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const marginMs = o.safetyMarginMs ?? DEFAULT_SAFETY_MARGIN_MS;
  const stateStore = o.stateStore ?? createStateStore(o.config, env);
  const log = o.logger.child({ entry: 'cloud-run' });
  const shutdown = new AbortController();
  const inflight = new Set<Promise<void>>();

  const server = createServer((req, res) => {
    const p = handle(req, res).finally(() => inflight.delete(p));
    inflight.add(p);
  });
  // slow clients cannot hold a connection open forever
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = clock.now();
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = `${req.method ?? '?'} ${url.pathname}`;
    let principal: string | undefined;
    try {
      if (url.pathname === '/healthz') {
        if (req.method !== 'GET' && req.method !== 'HEAD')
          throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use GET', { allow: 'GET, HEAD' });
        return send(res, 200, { status: shutdown.signal.aborted ? 'stopping' : 'ok' });
      }
      if (url.pathname === '/metrics') {
        // Prometheus text; authenticated like every other non-health route (scrapers send a bearer token)
        if (req.method !== 'GET') throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use GET', { allow: 'GET' });
        const auth = await o.auth.authenticate(req.headers.authorization);
        if (!auth.ok)
          throw new HttpError(401, 'UNAUTHENTICATED', `not authenticated: ${auth.reason}`, {
            'www-authenticate': 'Bearer realm="keyrotor"',
          });
        principal = auth.principal;
        const metrics = processMetrics();
        const text = await metrics.text();
        res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      if (url.pathname !== '/rotate' && url.pathname !== '/pubsub')
        throw new HttpError(404, 'NOT_FOUND', `no route ${url.pathname}`);
      if (req.method !== 'POST') throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use POST', { allow: 'POST' });
      if (shutdown.signal.aborted)
        throw new HttpError(503, 'STOPPING', 'the server is shutting down', { 'retry-after': '5' });
      const declared = req.headers['content-length'];
      if (declared !== undefined && (!/^\d+$/.test(declared) || Number(declared) > maxBody)) {
        throw new HttpError(413, 'BODY_TOO_LARGE', `the body may be at most ${maxBody} bytes`);
      }
      const auth = await o.auth.authenticate(req.headers.authorization);
      if (!auth.ok)
        throw new HttpError(401, 'UNAUTHENTICATED', `not authenticated: ${auth.reason}`, {
          'www-authenticate': 'Bearer realm="keyrotor"',
        });
      principal = auth.principal;
      const body = await readBody(req, maxBody);
      const json = parseJson(body);
      const deadline = t0 + timeoutMs - marginMs;
      const out = url.pathname === '/rotate' ? await onRotate(json, deadline) : await onPubsub(json, deadline);
      send(res, out.status, out.body);
    } catch (e) {
      const err = e instanceof HttpError ? e : fromKeyrotor(e);
      if (err.status >= 500) log.error({ route, status: err.status, code: err.code }, err.message);
      if (err.status === 413) discardBody(req);
      send(
        res,
        err.status,
        { error: { code: err.code, message: err.message } },
        { ...err.headers, ...(err.status === 413 ? { connection: 'close' } : {}) },
      );
    } finally {
      log.info({ route, status: res.statusCode, ms: clock.now() - t0, ...(principal ? { principal } : {}) }, 'request');
    }
  }

  function fromKeyrotor(e: unknown): HttpError {
    const err = toKeyrotorError(e);
    // caller mistakes are 400; a broken deployment (config, env, state) is 500
    const status = err.code === 'UNKNOWN_KEY' || err.code === 'USAGE' ? 400 : 500;
    return new HttpError(status, err.code, err.hint ? `${err.message} (${err.hint})` : err.message);
  }

  const common = (deadline: number): RotateOptions => ({
    config: o.config,
    stateStore,
    logger: log,
    env,
    clock,
    actor: 'cloud-run',
    observers: defaultObservers({ config: o.config, logger: log, actor: 'cloud-run', stateStore }),
    signal: shutdown.signal,
    pauseAt: deadline,
    park: true,
  });

  async function onRotate(json: unknown, deadline: number) {
    const r = rotateBodySchema.safeParse(json ?? {});
    if (!r.success)
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `invalid /rotate body (${issue(r.error)}); expected {} or { "keys": [...], "now": true }`,
      );
    const { keys: names, now, leaked } = r.data;
    if (leaked && (!now || !names?.length))
      throw new HttpError(400, 'BAD_REQUEST', '"leaked" needs "now": true and the "keys" that leaked');
    const keys = names?.length ? names.map((n) => pickKey(o.config, n)) : o.config.keys;
    const results = await rotateKeys(keys, { ...common(deadline), now: now === true, leaked: leaked === true });
    const unfinished = results.some((x) => x.outcome === 'in_progress' || x.outcome === 'waiting');
    return { status: unfinished ? 202 : 200, body: { results } };
  }

  async function onPubsub(json: unknown, deadline: number) {
    const r = pubsubEnvelopeSchema.safeParse(json);
    if (!r.success) throw new HttpError(400, 'BAD_REQUEST', `not a Pub/Sub push envelope (${issue(r.error)})`);
    const m = r.data.message;
    if (m.data !== undefined && !isBase64(m.data))
      throw new HttpError(400, 'BAD_REQUEST', 'not a Pub/Sub push envelope (message.data: not base64)');
    const eventType = m.attributes.eventType;
    if (!eventType || !SECRET_EVENT_TYPES.has(eventType)) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `not a Secret Manager notification (attributes.eventType: ${eventType === undefined ? 'missing' : 'unknown'})`,
      );
    }
    const secretId = m.attributes.secretId;
    const name = secretId ? SECRET_NAME.exec(secretId) : null;
    if (!name)
      throw new HttpError(
        400,
        'BAD_REQUEST',
        'not a Secret Manager notification (attributes.secretId: expected projects/<project>/secrets/<secret>)',
      );
    const messageId = m.messageId ?? m.message_id;
    if (eventType !== 'SECRET_ROTATE') {
      log.debug({ eventType, secretId, messageId }, 'notification ignored (only SECRET_ROTATE rotates)');
      return { status: 200, body: { results: [], ignored: `eventType ${eventType}` } };
    }
    const key = keyForGcpSecret(o.config, name[1]!, name[2]!);
    if (!key) {
      log.warn(
        { secretId, messageId },
        'SECRET_ROTATE for a secret no configured key holds: acknowledged, nothing rotated',
      );
      return {
        status: 200,
        body: { results: [], ignored: `no configured key has a gcp-secret-manager store for ${secretId}` },
      };
    }
    // at-least-once delivery: a key rotated after this notification was published is done
    const published = m.publishTime ?? m.publish_time;
    const record = await stateStore.read(key.name);
    const handled =
      published !== undefined &&
      record?.lastRotatedAt != null &&
      Date.parse(record.lastRotatedAt) >= Date.parse(published);
    log.info({ key: key.name, secretId, messageId, duplicate: handled }, 'SECRET_ROTATE');
    const result: KeyResult = await rotateKey(key, { ...common(deadline), now: !handled });
    return { status: result.outcome === 'in_progress' ? 503 : 200, body: { results: [result] } };
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, o.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  log.info({ url, auth: o.auth.methods, maxBodyBytes: maxBody, requestTimeoutMs: timeoutMs }, 'listening');

  let closing: Promise<void> | undefined;
  return {
    server,
    url,
    port: addr.port,
    close() {
      closing ??= (async () => {
        shutdown.abort();
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        await Promise.allSettled([...inflight]);
        server.closeAllConnections();
        await closed;
        log.info({}, 'stopped');
      })();
      return closing;
    },
  };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/**
 * After a 413 the rest of the body is read and dropped (up to a bound, briefly), so the client gets to
 * read the answer instead of a connection reset; beyond the bound the connection is cut.
 */
function discardBody(req: IncomingMessage, maxBytes = 1024 * 1024, maxMs = 2_000): void {
  let dropped = 0;
  const cut = setTimeout(() => req.socket.destroy(), maxMs);
  cut.unref();
  req.removeAllListeners('data');
  req.on('data', (c: Buffer) => {
    dropped += c.length;
    if (dropped > maxBytes) req.socket.destroy();
  });
  req.on('end', () => clearTimeout(cut));
  req.on('close', () => clearTimeout(cut));
  req.resume();
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        done = true;
        req.pause();
        reject(new HttpError(413, 'BODY_TOO_LARGE', `the body may be at most ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => {
      if (done) return;
      done = true;
      reject(
        new HttpError(400, 'BAD_REQUEST', `could not read the body (${(e as NodeJS.ErrnoException).code ?? 'error'})`),
      );
    });
  });
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  const text = body.toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // never echo the body
    throw new HttpError(400, 'BAD_REQUEST', 'the body is not valid JSON');
  }
}

function isBase64(s: string): boolean {
  return s.length % 4 !== 1 && BASE64.test(s);
}

function issue(e: z.ZodError): string {
  const i = e.issues[0];
  return i ? `${i.path.join('.') || '(body)'}: ${i.message}` : 'invalid';
}

function pickKey(cfg: LoadedConfig, name: string): ResolvedKey {
  const k = cfg.keys.find((x) => x.name === name);
  if (!k) throw new KeyrotorError('UNKNOWN_KEY', `unknown key "${name}"`);
  return k;
}

/**
 * The key with a gcp-secret-manager store for `projects/<project>/secrets/<secret>`. Notifications may
 * name the project by number while the config names it by id: then the secret name must be unique
 * among the configured GCP stores.
 */
export function keyForGcpSecret(cfg: LoadedConfig, project: string, secret: string): ResolvedKey | undefined {
  const stores = cfg.keys.flatMap((key) =>
    key.stores.flatMap((s) => (s.type === 'gcp-secret-manager' ? [{ key, s }] : [])),
  );
  const exact = stores.filter(({ s }) => s.project === project && s.secret === secret);
  if (exact.length > 0) return exact[0]!.key;
  if (!/^\d+$/.test(project)) return undefined;
  const byName = stores.filter(({ s }) => s.secret === secret && !/^\d+$/.test(s.project));
  return byName.length === 1 ? byName[0]!.key : undefined;
}
