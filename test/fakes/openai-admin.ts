/**
 * A loopback fake of the OpenAI Admin API (project keys, service accounts) and of `GET /v1/models`
 * (and `GET /v1/models/{id}` for the ids in `state.models`; both record the key's `last_used_at`),
 * speaking the wire shapes of the `openai` v7 SDK (resources/admin/organization/projects/**.d.ts).
 *
 *   const fake = await startOpenAIFake();                 // 127.0.0.1:<random>, unref'd
 *   new OpenAI({ adminAPIKey: fake.adminKey, apiKey: null, baseURL: fake.baseURL })
 *   fake.failNext('serviceAccounts.apiKeys.create', { status: 429, headers: { 'retry-after': '1' } });
 *   fake.loseResponse('serviceAccounts.apiKeys.create');  // applied, then the socket is destroyed
 *   fake.setRateLimit({ requestsPerSecond: 50 });          // beyond it: 429 + retry-after, nothing applied
 *   fake.log                                              // [{ method, path, route, status, ... }]
 *   fake.state.liveKeys()                                 // what exists now
 *   await fake.close();                                   // in afterAll
 *
 * Every value it mints contains the CANARY (test/canary.ts) plus a counter, so a plain substring
 * scan of captured output catches any leak. Admin keys are built from it too.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { CANARY } from '../canary.ts';

// ------------------------------------------------------------------ types

export type FakeRoute =
  | 'projects.apiKeys.list'
  | 'projects.apiKeys.retrieve'
  | 'projects.apiKeys.update'
  | 'projects.apiKeys.delete'
  | 'serviceAccounts.list'
  | 'serviceAccounts.create'
  | 'serviceAccounts.retrieve'
  | 'serviceAccounts.delete'
  | 'serviceAccounts.apiKeys.create'
  | 'models.list'
  | 'models.retrieve'
  | 'unknown';

export type FakeKeyOwner =
  { type: 'service_account'; serviceAccountId: string } | { type: 'user'; userId: string; name: string; email: string };

export interface FakeKey {
  id: string;
  projectId: string;
  name: string;
  /** the secret value (contains the CANARY): only for tests that must present it */
  value: string;
  redactedValue: string;
  owner: FakeKeyOwner;
  createdAt: number; // unix s
  lastUsedAt: number | null;
  expiresAt: number | null;
  /** scopes sent at create/update (null = none sent) */
  scopes: string[] | null;
  ownerProjectAccess: 'active' | 'inactive';
  deleted: boolean;
  deletedAt: number | null;
  /** the initial key returned by a service-account create */
  initial: boolean;
}

export interface FakeServiceAccount {
  id: string;
  projectId: string;
  name: string;
  role: 'owner' | 'member' | 'none';
  createdAt: number;
  deleted: boolean;
}

export interface FakeLogEntry {
  seq: number;
  method: string;
  /** path without the query string, e.g. `/v1/organization/projects/proj_test/api_keys` */
  path: string;
  route: FakeRoute;
  query: Record<string, string>;
  /** parsed JSON body of POSTs (the Admin API never carries secret values in request bodies) */
  body?: unknown;
  /** the status sent; 0 when no answer was sent (lost / reset) */
  status: number;
  fault?: 'status' | 'lost' | 'reset' | 'slow' | 'ratelimited' | 'malformed' | undefined;
  /** `performance.now()` of this process when the request arrived */
  at: number;
  /** `performance.now()` when the answer was sent in full (absent: none was sent) */
  doneAt?: number;
}

/**
 * A 200 answer the SDK cannot use: `truncated` JSON (cut mid-body, still `application/json`), `html`
 * (a proxy's error page with a 200), or the right JSON `shape` missing its fields. `applied`: the
 * request took effect before the bad answer went out (a create minted the key).
 */
export interface MalformedOptions {
  kind: 'truncated' | 'html' | 'shape';
  applied?: boolean;
  times?: number;
}

export interface FailOptions {
  status: number;
  /** how many matching requests fail (default 1) */
  times?: number;
  code?: string | null;
  message?: string;
  type?: string;
  headers?: Record<string, string>;
}

type Fault =
  | { kind: 'status'; route: FakeRoute | '*'; remaining: number; opts: FailOptions }
  | { kind: 'lose' | 'reset'; route: FakeRoute | '*'; remaining: number }
  | { kind: 'slow'; route: FakeRoute | '*'; remaining: number; ms: number }
  | { kind: 'malformed'; route: FakeRoute | '*'; remaining: number; opts: MalformedOptions }
  | { kind: 'hold'; route: FakeRoute | '*'; remaining: number; released: Promise<void> };

export type RedactStyle = 'ellipsis' | 'stars' | ((value: string) => string);

export interface OpenAIFakeOptions {
  /** projects that exist (default ['proj_test']) */
  projects?: string[];
  /** admin key accepted on admin routes (default `${CANARY}-admin-1`) */
  adminKey?: string;
  /** delay before every request is handled, ms (a realistic round trip is ~200 ms; `setLatency` changes it) */
  latencyMs?: number;
  /** how list answers mask values: `sk-canar...wxyz` (default) or `sk-canar****...wxyz` */
  redact?: RedactStyle;
  /** time source (ms), default Date.now */
  now?: () => number;
  /** a request-rate limit over every route; requests beyond it get 429 + `retry-after` (no change applied) */
  rateLimit?: FakeRateLimit;
}

/**
 * A token bucket at the server: `requestsPerSecond` refill, `burst` capacity (default one second's
 * worth). A request that finds it empty is answered 429 `rate_limit_exceeded` with `retry-after`
 * (whole seconds until a token is back, at least 1) and, with `retryAfterMs`, `retry-after-ms`.
 */
export interface FakeRateLimit {
  requestsPerSecond: number;
  burst?: number;
  retryAfterMs?: boolean;
}

export interface PlantKeyOptions {
  name?: string;
  value?: string;
  projectId?: string;
  /** a service account id, or a user (default: a hand-made user key) */
  owner?: FakeKeyOwner;
  redactedValue?: string;
  createdAt?: number;
  lastUsedAt?: number | null;
  expiresAt?: number | null;
  ownerProjectAccess?: 'active' | 'inactive';
}

// ------------------------------------------------------------------ state

const hex = (n: number) => randomBytes(n).toString('hex');

export function redactWith(style: RedactStyle, value: string): string {
  if (typeof style === 'function') return style(value);
  if (style === 'stars') return `${value.slice(0, 8)}${'*'.repeat(24)}${value.slice(-4)}`;
  return `${value.slice(0, 8)}...${value.slice(-4)}`;
}

export class OpenAIFakeState {
  readonly projects = new Set<string>();
  readonly keys: FakeKey[] = [];
  readonly serviceAccounts: FakeServiceAccount[] = [];
  /** admin keys and what they may do */
  readonly adminKeys = new Map<string, 'full' | 'no-scopes'>();
  /** key id -> /models checks left that still answer 401 invalid_api_key (propagation delay) */
  readonly propagation = new Map<string, number>();
  /** key ids whose /models checks answer 401 code null "Missing scopes" */
  readonly lackingScopes = new Set<string>();
  /** model ids `GET /v1/models/{id}` knows (others answer 404 model_not_found) */
  models: string[] = ['gpt-fake-1'];
  /** applied to every key minted by a service-account key create from now on */
  newKeys: { propagationChecks: number; lackScopes: boolean } = { propagationChecks: 0, lackScopes: false };
  /** policy: a create with expires_in_seconds above this (or without one when required) is 400 */
  policy: { maxExpiresInSeconds?: number | undefined; requireExpiry?: boolean | undefined } = {};
  redact: RedactStyle;
  counter = 0;
  readonly nowMs: () => number;

  constructor(opts: OpenAIFakeOptions) {
    for (const p of opts.projects ?? ['proj_test']) this.projects.add(p);
    this.adminKeys.set(opts.adminKey ?? `${CANARY}-admin-1`, 'full');
    this.redact = opts.redact ?? 'ellipsis';
    this.nowMs = opts.now ?? Date.now;
  }

  now(): number {
    return Math.floor(this.nowMs() / 1000);
  }

  /** a fresh value shaped like a service-account key, containing the CANARY */
  mintValue(kind = 'svcacct'): string {
    this.counter += 1;
    return `${CANARY}-${kind}-${this.counter}-${hex(8)}`;
  }

  liveKeys(projectId?: string): FakeKey[] {
    return this.keys.filter((k) => !k.deleted && (projectId === undefined || k.projectId === projectId));
  }
  keysNamed(name: string): FakeKey[] {
    return this.liveKeys().filter((k) => k.name === name);
  }
  deletedKeys(): FakeKey[] {
    return this.keys.filter((k) => k.deleted);
  }
  keyById(id: string): FakeKey | undefined {
    return this.keys.find((k) => k.id === id);
  }
  liveServiceAccounts(projectId?: string): FakeServiceAccount[] {
    return this.serviceAccounts.filter((s) => !s.deleted && (projectId === undefined || s.projectId === projectId));
  }
  serviceAccount(id: string, projectId?: string): FakeServiceAccount | undefined {
    return this.serviceAccounts.find(
      (s) => s.id === id && !s.deleted && (projectId === undefined || s.projectId === projectId),
    );
  }

  addServiceAccount(name: string, projectId = this.firstProject()): FakeServiceAccount {
    const sa: FakeServiceAccount = {
      id: `svc_acct_${hex(8)}`,
      projectId,
      name,
      role: 'member',
      createdAt: this.now(),
      deleted: false,
    };
    this.serviceAccounts.push(sa);
    return sa;
  }

  /** add a key as if made elsewhere (dashboard, another tool); returns it (value included) */
  plantKey(o: PlantKeyOptions = {}): FakeKey {
    const value = o.value ?? this.mintValue(o.owner?.type === 'service_account' ? 'svcacct' : 'proj');
    const k: FakeKey = {
      id: `key_${hex(8)}`,
      projectId: o.projectId ?? this.firstProject(),
      name: o.name ?? 'Secret key',
      value,
      redactedValue: o.redactedValue ?? redactWith(this.redact, value),
      owner: o.owner ?? { type: 'user', userId: 'user-fake1', name: 'Ada Admin', email: 'ada@example.com' },
      createdAt: o.createdAt ?? this.now(),
      lastUsedAt: o.lastUsedAt ?? null,
      expiresAt: o.expiresAt ?? null,
      scopes: null,
      ownerProjectAccess: o.ownerProjectAccess ?? 'active',
      deleted: false,
      deletedAt: null,
      initial: false,
    };
    this.keys.push(k);
    return k;
  }

  deleteKey(k: FakeKey): void {
    k.deleted = true;
    k.deletedAt = this.now();
  }

  private firstProject(): string {
    const p = [...this.projects][0];
    if (!p) throw new Error('fake has no project');
    return p;
  }
}

// ------------------------------------------------------------------ wire shapes

function keyJson(s: OpenAIFakeState, k: FakeKey) {
  let owner: object;
  if (k.owner.type === 'service_account') {
    const sa = s.serviceAccounts.find((x) => x.id === (k.owner as { serviceAccountId: string }).serviceAccountId);
    owner = {
      type: 'service_account',
      service_account: {
        id: k.owner.serviceAccountId,
        name: sa?.name ?? '',
        created_at: sa?.createdAt ?? k.createdAt,
        role: sa?.role ?? 'member',
      },
    };
  } else {
    owner = {
      type: 'user',
      user: { id: k.owner.userId, name: k.owner.name, email: k.owner.email, created_at: k.createdAt, role: 'owner' },
    };
  }
  return {
    object: 'organization.project.api_key',
    id: k.id,
    name: k.name,
    redacted_value: k.redactedValue,
    created_at: k.createdAt,
    last_used_at: k.lastUsedAt,
    expires_at: k.expiresAt,
    owner,
    owner_project_access: k.ownerProjectAccess,
  };
}

function saJson(sa: FakeServiceAccount) {
  return {
    object: 'organization.project.service_account',
    id: sa.id,
    name: sa.name,
    role: sa.role,
    created_at: sa.createdAt,
  };
}

function newKeyJson(k: FakeKey) {
  return {
    object: 'organization.project.service_account.api_key',
    id: k.id,
    name: k.name,
    value: k.value,
    created_at: k.createdAt,
    expires_at: k.expiresAt,
  };
}

/** mask like the real API does in "Incorrect API key provided" messages (never the whole value) */
function maskForMessage(v: string): string {
  return v.length <= 12 ? '***' : `${v.slice(0, 6)}${'*'.repeat(Math.max(4, v.length - 10))}${v.slice(-4)}`;
}

class HttpError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly type: string;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    message: string,
    code: string | null = null,
    type = 'invalid_request_error',
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
    this.headers = headers;
  }
}

// ------------------------------------------------------------------ server

export interface OpenAIFake {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `http://127.0.0.1:<port>/v1`: pass as baseURL */
  baseURL: string;
  /** the accepted admin key (contains the CANARY) */
  adminKey: string;
  /** default project id */
  project: string;
  state: OpenAIFakeState;
  log: FakeLogEntry[];
  /** entries of one route (and optionally one method) */
  calls(route: FakeRoute): FakeLogEntry[];
  /** answer the next `times` requests to `route` with an error status (no change applied) */
  failNext(route: FakeRoute | '*', opts: FailOptions): void;
  /** apply the next `times` requests to `route`, then destroy the socket instead of answering */
  loseResponse(route: FakeRoute | '*', times?: number): void;
  /** destroy the socket of the next `times` requests to `route` without applying them */
  resetConnection(route: FakeRoute | '*', times?: number): void;
  /** apply the next `times` requests to `route`, then wait `ms` before answering */
  slowResponse(route: FakeRoute | '*', ms: number, times?: number): void;
  /**
   * The next matching request is applied, but its answer waits until `release()` is called (a step
   * held open for as long as a test needs, independent of machine speed).
   */
  holdResponse(route: FakeRoute | '*'): { release(): void };
  /** the next `times` matching requests get a 200 the SDK cannot use (see MalformedOptions) */
  malformedResponse(route: FakeRoute | '*', o: MalformedOptions): void;
  /** delay before handling every request */
  setLatency(ms: number): void;
  /** limit the request rate over every route (null = no limit); the bucket starts full */
  setRateLimit(limit: FakeRateLimit | null): void;
  /** the first `checks` GET /v1/models with this key answer 401 invalid_api_key (propagation) */
  delayPropagation(keyId: string, checks: number): void;
  /** every key minted from now on fails its first `checks` GET /v1/models with 401 invalid_api_key */
  setNewKeyPropagation(checks: number): void;
  /** GET /v1/models with this key answers 401 code null "Missing scopes" */
  lackScopes(keyId: string, lacking?: boolean): void;
  /** an extra admin key that authenticates but lacks the admin scopes (401 code null) */
  addRestrictedAdminKey(): string;
  /** called for each request as it arrives (before faults and handling); returns an unsubscribe */
  onRequest(listener: (entry: FakeLogEntry) => void): () => void;
  /** drop pending faults, request listeners and the log (state stays) */
  resetFaults(): void;
  close(): Promise<void>;
}

export async function startOpenAIFake(opts: OpenAIFakeOptions = {}): Promise<OpenAIFake> {
  const state = new OpenAIFakeState(opts);
  const log: FakeLogEntry[] = [];
  let faults: Fault[] = [];
  let latencyMs = opts.latencyMs ?? 0;
  let rate: { limit: FakeRateLimit; tokens: number; at: number } | null = null;
  const setRateLimit = (limit: FakeRateLimit | null) => {
    rate = limit ? { limit, tokens: limit.burst ?? limit.requestsPerSecond, at: performance.now() } : null;
  };
  setRateLimit(opts.rateLimit ?? null);
  /** take a token at arrival; returns ms until one is back when there is none */
  function overLimit(): number | undefined {
    if (!rate) return undefined;
    const now = performance.now();
    const cap = rate.limit.burst ?? rate.limit.requestsPerSecond;
    rate.tokens = Math.min(cap, rate.tokens + ((now - rate.at) * rate.limit.requestsPerSecond) / 1000);
    rate.at = now;
    if (rate.tokens >= 1) {
      rate.tokens -= 1;
      return undefined;
    }
    return ((1 - rate.tokens) * 1000) / rate.limit.requestsPerSecond;
  }
  let seq = 0;
  let listeners: ((e: FakeLogEntry) => void)[] = [];
  const sockets = new Set<Socket>();
  const adminKey = [...state.adminKeys.keys()][0]!;

  function takeFault(route: FakeRoute): Fault | undefined {
    const f = faults.find((x) => x.remaining > 0 && (x.route === route || x.route === '*'));
    if (!f) return undefined;
    f.remaining -= 1;
    faults = faults.filter((x) => x.remaining > 0);
    return f;
  }

  function classify(method: string, parts: string[]): { route: FakeRoute; params: Record<string, string> } {
    // parts: ['v1', ...]
    const p = parts.slice(1);
    if (parts[0] === 'v1' && p.length === 1 && p[0] === 'models' && method === 'GET')
      return { route: 'models.list', params: {} };
    if (parts[0] === 'v1' && p.length === 2 && p[0] === 'models' && p[1] && method === 'GET')
      return { route: 'models.retrieve', params: { model: p[1] } };
    if (parts[0] !== 'v1' || p[0] !== 'organization' || p[1] !== 'projects' || !p[2])
      return { route: 'unknown', params: {} };
    const project = p[2];
    const rest = p.slice(3);
    if (rest[0] === 'api_keys') {
      if (rest.length === 1 && method === 'GET') return { route: 'projects.apiKeys.list', params: { project } };
      if (rest.length === 2 && rest[1]) {
        const params = { project, key: rest[1] };
        if (method === 'GET') return { route: 'projects.apiKeys.retrieve', params };
        if (method === 'POST') return { route: 'projects.apiKeys.update', params };
        if (method === 'DELETE') return { route: 'projects.apiKeys.delete', params };
      }
    }
    if (rest[0] === 'service_accounts') {
      if (rest.length === 1 && method === 'GET') return { route: 'serviceAccounts.list', params: { project } };
      if (rest.length === 1 && method === 'POST') return { route: 'serviceAccounts.create', params: { project } };
      if (rest.length === 2 && rest[1]) {
        const params = { project, sa: rest[1] };
        if (method === 'GET') return { route: 'serviceAccounts.retrieve', params };
        if (method === 'DELETE') return { route: 'serviceAccounts.delete', params };
      }
      if (rest.length === 3 && rest[1] && rest[2] === 'api_keys' && method === 'POST') {
        return { route: 'serviceAccounts.apiKeys.create', params: { project, sa: rest[1] } };
      }
    }
    return { route: 'unknown', params: {} };
  }

  function bearer(req: IncomingMessage): string | undefined {
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
    return m?.[1];
  }

  function authAdmin(req: IncomingMessage): void {
    const token = bearer(req);
    if (!token) {
      throw new HttpError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      );
    }
    const grant = state.adminKeys.get(token);
    if (!grant) {
      throw new HttpError(
        401,
        `Incorrect API key provided: ${maskForMessage(token)}. You can find your API key at https://platform.openai.com/account/api-keys.`,
        'invalid_api_key',
      );
    }
    if (grant === 'no-scopes') {
      throw new HttpError(
        401,
        'You have insufficient permissions for this operation. Missing scopes: api.management.write. Check that you have the correct role in your organization.',
        null,
      );
    }
  }

  function needProject(id: string): void {
    if (!state.projects.has(id)) throw new HttpError(404, `No such project: ${id}`, 'not_found');
  }

  function paginate<T extends { id: string }>(all: T[], visible: (x: T) => boolean, query: Record<string, string>) {
    const limit = query.limit === undefined ? 20 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100)
      throw new HttpError(400, `Invalid 'limit': must be an integer between 1 and 100.`, 'invalid_value');
    let start = 0;
    if (query.after) {
      const i = all.findIndex((x) => x.id === query.after);
      if (i < 0) throw new HttpError(400, `Invalid 'after': no object with id ${query.after}.`, 'invalid_value');
      start = i + 1;
    }
    const rest = all.slice(start).filter(visible);
    const data = rest.slice(0, limit);
    return {
      data,
      has_more: rest.length > limit,
      first_id: data[0]?.id ?? null,
      last_id: data[data.length - 1]?.id ?? null,
    };
  }

  async function handle(
    method: string,
    route: FakeRoute,
    params: Record<string, string>,
    query: Record<string, string>,
    body: unknown,
    req: IncomingMessage,
  ): Promise<{ status: number; json: unknown }> {
    if (route === 'unknown')
      throw new HttpError(404, `Invalid URL (${method} ${new URL(req.url ?? '/', 'http://x').pathname})`);
    if (route === 'models.list') return models(req);
    if (route === 'models.retrieve') return modelRetrieve(req, params.model!);
    authAdmin(req);
    const project = params.project!;
    needProject(project);
    const b = (body ?? {}) as Record<string, unknown>;
    switch (route) {
      case 'projects.apiKeys.list': {
        const access = query.owner_project_access;
        if (access !== undefined && !['active', 'inactive', 'any'].includes(access))
          throw new HttpError(400, `Invalid 'owner_project_access'.`, 'invalid_value');
        const visible = (k: FakeKey) =>
          !k.deleted &&
          k.projectId === project &&
          (access === 'any' || k.ownerProjectAccess === (access === 'inactive' ? 'inactive' : 'active'));
        const page = paginate(state.keys, visible, query);
        return { status: 200, json: { object: 'list', ...page, data: page.data.map((k) => keyJson(state, k)) } };
      }
      case 'projects.apiKeys.retrieve': {
        const k = state.liveKeys(project).find((x) => x.id === params.key);
        if (!k) throw new HttpError(404, `No such API key: ${params.key}`, 'api_key_not_found');
        return { status: 200, json: keyJson(state, k) };
      }
      case 'projects.apiKeys.update': {
        const k = state.liveKeys(project).find((x) => x.id === params.key);
        if (!k) throw new HttpError(404, `No such API key: ${params.key}`, 'api_key_not_found');
        if (b.scopes === undefined && b.expires_in_seconds === undefined)
          throw new HttpError(400, 'Provide at least one of scopes or expires_in_seconds.', 'invalid_value');
        if (b.scopes !== undefined) k.scopes = validScopes(b.scopes);
        if (b.expires_in_seconds !== undefined) k.expiresAt = state.now() + validExpiry(b.expires_in_seconds);
        return { status: 200, json: keyJson(state, k) };
      }
      case 'projects.apiKeys.delete': {
        const k = state.liveKeys(project).find((x) => x.id === params.key);
        if (!k) throw new HttpError(404, `No such API key: ${params.key}`, 'api_key_not_found');
        state.deleteKey(k);
        return { status: 200, json: { object: 'organization.project.api_key.deleted', id: k.id, deleted: true } };
      }
      case 'serviceAccounts.list': {
        const page = paginate(state.serviceAccounts, (s) => !s.deleted && s.projectId === project, query);
        return { status: 200, json: { object: 'list', ...page, data: page.data.map(saJson) } };
      }
      case 'serviceAccounts.create': {
        if (typeof b.name !== 'string' || !b.name)
          throw new HttpError(
            400,
            "Missing required parameter: 'name'.",
            'missing_required_parameter',
            'invalid_request_error',
          );
        const only = b.create_service_account_only === true;
        const expiry =
          b.expires_in_seconds === undefined || b.expires_in_seconds === null
            ? undefined
            : validExpiry(b.expires_in_seconds);
        if (!only) checkPolicy(expiry);
        const sa = state.addServiceAccount(b.name, project);
        if (only) sa.role = 'none';
        let apiKey: unknown = null;
        if (!only) {
          const k = state.plantKey({
            projectId: project,
            name: 'Secret Key',
            owner: { type: 'service_account', serviceAccountId: sa.id },
            expiresAt: expiry === undefined ? null : state.now() + expiry,
          });
          k.initial = true;
          apiKey = newKeyJson(k);
        }
        return { status: 200, json: { ...saJson(sa), api_key: apiKey } };
      }
      case 'serviceAccounts.retrieve': {
        const sa = state.serviceAccount(params.sa!, project);
        if (!sa) throw new HttpError(404, `No such service account: ${params.sa}`, 'not_found');
        return { status: 200, json: saJson(sa) };
      }
      case 'serviceAccounts.delete': {
        const sa = state.serviceAccount(params.sa!, project);
        if (!sa) throw new HttpError(404, `No such service account: ${params.sa}`, 'not_found');
        sa.deleted = true;
        for (const k of state.liveKeys(project))
          if (k.owner.type === 'service_account' && k.owner.serviceAccountId === sa.id) state.deleteKey(k);
        return {
          status: 200,
          json: { object: 'organization.project.service_account.deleted', id: sa.id, deleted: true },
        };
      }
      case 'serviceAccounts.apiKeys.create': {
        const sa = state.serviceAccount(params.sa!, project);
        if (!sa) throw new HttpError(404, `No such service account: ${params.sa}`, 'not_found');
        if (b.name !== undefined && typeof b.name !== 'string')
          throw new HttpError(400, "Invalid type for 'name': expected a string.", 'invalid_type');
        const scopes = b.scopes === undefined ? null : validScopes(b.scopes);
        const expiry =
          b.expires_in_seconds === undefined || b.expires_in_seconds === null
            ? undefined
            : validExpiry(b.expires_in_seconds);
        checkPolicy(expiry);
        const k = state.plantKey({
          projectId: project,
          name: b.name ?? 'Secret Key',
          owner: { type: 'service_account', serviceAccountId: sa.id },
          expiresAt: expiry === undefined ? null : state.now() + expiry,
        });
        k.scopes = scopes;
        if (state.newKeys.propagationChecks > 0) state.propagation.set(k.id, state.newKeys.propagationChecks);
        if (state.newKeys.lackScopes) state.lackingScopes.add(k.id);
        return { status: 200, json: newKeyJson(k) };
      }
    }
  }

  function validScopes(v: unknown): string[] {
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string'))
      throw new HttpError(400, "Invalid type for 'scopes': expected an array of strings.", 'invalid_type');
    return v as string[];
  }
  function validExpiry(v: unknown): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      throw new HttpError(400, "Invalid 'expires_in_seconds': expected a positive integer.", 'invalid_value');
    return v;
  }
  function checkPolicy(expiry: number | undefined): void {
    const p = state.policy;
    if (p.requireExpiry && expiry === undefined)
      throw new HttpError(
        400,
        'This project requires API keys to have an expiration (expires_in_seconds).',
        'invalid_value',
      );
    if (p.maxExpiresInSeconds !== undefined && expiry !== undefined && expiry > p.maxExpiresInSeconds) {
      throw new HttpError(
        400,
        `API key lifetime of ${expiry} seconds exceeds the maximum of ${p.maxExpiresInSeconds} seconds allowed by the project policy.`,
        'invalid_value',
      );
    }
  }

  /** the project key of a /v1/models request: checks it like the API does and records its use */
  function projectKey(req: IncomingMessage): FakeKey {
    const token = bearer(req);
    if (!token)
      throw new HttpError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      );
    const now = state.now();
    const k = state.keys.find((x) => x.value === token && !x.deleted && (x.expiresAt === null || x.expiresAt > now));
    const invalid = () =>
      new HttpError(
        401,
        `Incorrect API key provided: ${maskForMessage(token)}. You can find your API key at https://platform.openai.com/account/api-keys.`,
        'invalid_api_key',
      );
    if (!k) throw invalid();
    const left = state.propagation.get(k.id) ?? 0;
    if (left > 0) {
      state.propagation.set(k.id, left - 1);
      throw invalid();
    }
    if (state.lackingScopes.has(k.id)) {
      throw new HttpError(
        401,
        'You have insufficient permissions for this operation. Missing scopes: api.model.read. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you are using a restricted API key, that it has the necessary scopes.',
        null,
      );
    }
    k.lastUsedAt = now;
    return k;
  }

  function modelRetrieve(req: IncomingMessage, id: string): { status: number; json: unknown } {
    projectKey(req);
    const model = decodeURIComponent(id);
    if (!state.models.includes(model)) {
      throw new HttpError(
        404,
        `The model '${model}' does not exist or you do not have access to it.`,
        'model_not_found',
      );
    }
    return { status: 200, json: { id: model, object: 'model', created: 1_700_000_000, owned_by: 'system' } };
  }

  function models(req: IncomingMessage): { status: number; json: unknown } {
    projectKey(req);
    return {
      status: 200,
      json: {
        object: 'list',
        data: [{ id: 'gpt-fake-1', object: 'model', created: 1_700_000_000, owned_by: 'system' }],
      },
    };
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  function send(res: ServerResponse, status: number, json: unknown, headers: Record<string, string> = {}) {
    const text = JSON.stringify(json);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-request-id': `req_${hex(6)}`,
      ...headers,
    });
    res.end(text);
  }

  function sendMalformed(res: ServerResponse, entry: FakeLogEntry, o: MalformedOptions, json: unknown) {
    entry.fault = 'malformed';
    entry.status = 200;
    // never echo a real answer's text (a create's answer holds the key's value): cut the JSON of its
    // keys only, or answer with the right envelope but none of the fields
    const keys = json && typeof json === 'object' ? Object.keys(json) : [];
    const text =
      o.kind === 'truncated'
        ? `{"${keys[0] ?? 'object'}": "`
        : o.kind === 'html'
          ? '<html><body><h1>502 Bad Gateway</h1></body></html>'
          : JSON.stringify({ object: (json as { object?: unknown } | null)?.object ?? 'list' });
    res.writeHead(200, {
      'content-type': o.kind === 'html' ? 'text/html' : 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-request-id': `req_${hex(6)}`,
    });
    res.end(text);
  }

  const errorJson = (e: HttpError) => ({ error: { message: e.message, type: e.type, param: null, code: e.code } });

  const server: Server = createServer((req, res) => {
    void (async () => {
      const method = req.method ?? 'GET';
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const query = Object.fromEntries(url.searchParams.entries());
      const { route, params } = classify(method, url.pathname.split('/').filter(Boolean));
      const raw = await readBody(req);
      let body: unknown;
      const entry: FakeLogEntry = {
        seq: ++seq,
        method,
        path: url.pathname,
        route,
        query,
        status: 0,
        at: performance.now(),
      };
      res.on('finish', () => (entry.doneAt = performance.now()));
      log.push(entry);
      for (const l of listeners) l(entry);
      const limitedForMs = overLimit();
      try {
        if (raw) {
          try {
            body = JSON.parse(raw);
          } catch {
            throw new HttpError(400, 'We could not parse the JSON body of your request.');
          }
          if (route !== 'models.list') entry.body = body;
        }
        if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
        if (limitedForMs !== undefined) {
          entry.fault = 'ratelimited';
          entry.status = 429;
          const headers: Record<string, string> = {
            'retry-after': String(Math.max(1, Math.ceil(limitedForMs / 1000))),
          };
          if (rate?.limit.retryAfterMs) headers['retry-after-ms'] = String(Math.ceil(limitedForMs));
          const limit = rate?.limit.requestsPerSecond ?? 0;
          send(
            res,
            429,
            {
              error: {
                message: `Rate limit reached for requests: limit ${limit} requests per second. Please try again later.`,
                type: 'requests',
                param: null,
                code: 'rate_limit_exceeded',
              },
            },
            headers,
          );
          return;
        }
        const fault = takeFault(route);
        if (fault?.kind === 'reset') {
          entry.fault = 'reset';
          req.socket.destroy();
          return;
        }
        if (fault?.kind === 'status') {
          const o = fault.opts;
          entry.fault = 'status';
          entry.status = o.status;
          const msg =
            o.message ??
            (o.status === 429
              ? 'Rate limit reached for requests. Please try again later.'
              : o.status >= 500
                ? 'The server had an error while processing your request.'
                : 'Injected failure.');
          const type =
            o.type ?? (o.status === 429 ? 'requests' : o.status >= 500 ? 'server_error' : 'invalid_request_error');
          send(
            res,
            o.status,
            { error: { message: msg, type, param: null, code: o.code === undefined ? null : o.code } },
            o.headers ?? {},
          );
          return;
        }
        if (fault?.kind === 'malformed' && !fault.opts.applied) {
          sendMalformed(res, entry, fault.opts, { object: 'error' });
          return;
        }
        const out = await handle(method, route, params, query, body, req);
        if (fault?.kind === 'malformed') {
          sendMalformed(res, entry, fault.opts, out.json);
          return;
        }
        if (fault?.kind === 'hold') await fault.released;
        if (fault?.kind === 'lose') {
          entry.fault = 'lost';
          req.socket.destroy();
          return;
        }
        if (fault?.kind === 'slow') {
          entry.fault = 'slow';
          await new Promise((r) => setTimeout(r, fault.ms));
          if (req.socket.destroyed) return;
        }
        entry.status = out.status;
        send(res, out.status, out.json);
      } catch (e) {
        const he =
          e instanceof HttpError
            ? e
            : new HttpError(500, 'The server had an error while processing your request.', null, 'server_error');
        entry.status = he.status;
        if (!res.headersSent && !req.socket.destroyed) send(res, he.status, errorJson(he), he.headers);
      }
    })();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.unref();
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    baseURL: `${url}/v1`,
    adminKey,
    project: [...state.projects][0]!,
    state,
    log,
    calls: (route) => log.filter((e) => e.route === route),
    failNext: (route, o) => faults.push({ kind: 'status', route, remaining: o.times ?? 1, opts: o }),
    loseResponse: (route, times = 1) => faults.push({ kind: 'lose', route, remaining: times }),
    resetConnection: (route, times = 1) => faults.push({ kind: 'reset', route, remaining: times }),
    slowResponse: (route, ms, times = 1) => faults.push({ kind: 'slow', route, remaining: times, ms }),
    holdResponse: (route) => {
      let release = () => {};
      const released = new Promise<void>((r) => (release = r));
      faults.push({ kind: 'hold', route, remaining: 1, released });
      return { release };
    },
    malformedResponse: (route, o) => faults.push({ kind: 'malformed', route, remaining: o.times ?? 1, opts: o }),
    setLatency: (ms) => {
      latencyMs = ms;
    },
    setRateLimit,
    delayPropagation: (keyId, checks) => {
      state.propagation.set(keyId, checks);
    },
    setNewKeyPropagation: (checks) => {
      state.newKeys.propagationChecks = checks;
    },
    lackScopes: (keyId, lacking = true) => {
      if (lacking) state.lackingScopes.add(keyId);
      else state.lackingScopes.delete(keyId);
    },
    addRestrictedAdminKey: () => {
      const k = `${CANARY}-admin-restricted-${hex(4)}`;
      state.adminKeys.set(k, 'no-scopes');
      return k;
    },
    onRequest: (listener) => {
      listeners.push(listener);
      return () => {
        listeners = listeners.filter((l) => l !== listener);
      };
    },
    resetFaults: () => {
      faults = [];
      listeners = [];
      log.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
