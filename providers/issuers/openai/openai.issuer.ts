/**
 * OpenAI project API keys through the Admin API (`openai` v7, `client.admin.organization.projects.*`).
 *
 * Keys are minted for one service account of one project. Facts this relies on (docs/provider-notes.md):
 * - the SDK retries POST and sends no idempotency key, so every create goes out with `maxRetries: 0`;
 *   after an ambiguous failure (no answer, timeout, 5xx) the keys named like the request are deleted;
 * - names carry the rotation id, so a create that runs again for the same rotation (after a crash or an
 *   ambiguous failure) first deletes what an earlier attempt left: that value was never seen and can
 *   never be used;
 * - the secret `value` is returned by the create call only; lists show `redacted_value`;
 * - 401 `invalid_api_key` (unknown or revoked) differs from 401 `code: null` (missing scopes).
 */
import OpenAI from 'openai';
import type { APIKeyCreateResponse } from 'openai/resources/admin/organization/projects/service-accounts/api-keys';
import type { ProjectAPIKey } from 'openai/resources/admin/organization/projects/api-keys';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type {
  CreateKeyRequest,
  IdentifyResult,
  IssuedKey,
  Issuer,
  IssuerKeyInfo,
  IssuerProbe,
  ProviderContext,
  VerifyResult,
} from '../../../src/core/ports.ts';
import { Secret, scrubText } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';
import type { OpenAIIssuerConfig } from './openai.schema.ts';
import { apiMessage, isAmbiguous, isMissingScopes, mapOpenAIError, statusOf } from './openai.errors.ts';
import { limiterKey, sharedLimiter, type RateLimiter } from './openai.ratelimit.ts';

/** providerState key remembering the auto-created service account */
export const SERVICE_ACCOUNT_STATE_KEY = 'openai.serviceAccountId';
/** providerState key remembering an initial service-account key that still has to be deleted ('' = none) */
export const PENDING_INITIAL_KEY_STATE_KEY = 'openai.pendingInitialKeyId';
const PAGE_LIMIT = 100;

/** A 200 whose body is not what the API answers: retryable (a proxy page, a cut answer). */
function malformed(action: string, what: string, stage?: Stage): KeyrotorError {
  return new KeyrotorError('ISSUER_BAD_RESPONSE', `openai: ${action}: malformed answer (${what})`, {
    retryable: true,
    ...(stage ? { stage } : {}),
  });
}

/**
 * The items of one list page, checked: the SDK turns any 200 body without `data` (an HTML page from a
 * proxy, a JSON object missing the list) into an empty page, and an empty list of keys must never be
 * believed by mistake (a cleanup would find nothing to delete). `body` is the parsed answer the SDK
 * keeps on every page (protected in its types).
 */
function checkedItems<T>(page: { data: T[] }, action: string, stage?: Stage): T[] {
  const body = (page as unknown as { body?: unknown }).body;
  const data = body && typeof body === 'object' ? (body as { data?: unknown }).data : undefined;
  if (!Array.isArray(data)) throw malformed(action, typeof body === 'string' ? 'not JSON' : 'no list in it', stage);
  if (data.some((x) => !x || typeof x !== 'object' || typeof (x as { id?: unknown }).id !== 'string'))
    throw malformed(action, 'an item without an id', stage);
  return page.data;
}

/**
 * Admin API clients shared by every issuer of the process: one per rate limiter (base URL + admin key)
 * and client settings, built on first need. The client holds no per-request state; building one per
 * rotation (an `OpenAI` constructor instantiates every API resource) was the issuer's largest fixed
 * cost. The admin key is compared as well, not only the limiter's digest of it.
 */
const adminClients = new WeakMap<RateLimiter, Map<string, { adminKey: string; client: OpenAI }>>();

function sharedAdminClient(limiter: RateLimiter, settings: string, adminKey: string, build: () => OpenAI): OpenAI {
  let byLimiter = adminClients.get(limiter);
  if (!byLimiter) adminClients.set(limiter, (byLimiter = new Map()));
  const found = byLimiter.get(settings);
  if (found && found.adminKey === adminKey) return found.client;
  const client = build();
  byLimiter.set(settings, { adminKey, client });
  return client;
}

export function serviceAccountName(keyName: string): string {
  return `keyrotor-${keyName}`;
}

const iso = (unixSeconds: number | null | undefined): string | null | undefined =>
  unixSeconds === null
    ? null
    : typeof unixSeconds === 'number'
      ? new Date(unixSeconds * 1000).toISOString()
      : undefined;

/**
 * Does a masked value (`sk-abc...wxyz`, `sk-svcacct-****wxyz`, `sk-…wxyz`) fit this secret?
 * The visible head must start the value and the visible tail must end it; without any mask or
 * without a visible tail, nothing is claimed.
 */
export function matchesRedacted(redacted: string | null | undefined, value: string): boolean {
  if (!redacted) return false;
  const m = /^(.*?)(?:\.{2,}|\*{2,}|…+|•{2,})[.*…•]*(.*)$/su.exec(redacted);
  if (!m) return false;
  const head = m[1] ?? '';
  const tail = m[2] ?? '';
  if (tail.length === 0) return false;
  if (value.length < head.length + tail.length) return false;
  return value.startsWith(head) && value.endsWith(tail);
}

/**
 * The OpenAI issuer with both optional capabilities of the Issuer port (`reportsUsage` and `probe`):
 * key lists carry `last_used_at`, and a key can be checked against a specific model.
 */
export type OpenAIIssuer = Issuer & {
  readonly reportsUsage: true;
  probe(secret: Secret, call: IssuerProbe): Promise<VerifyResult>;
};

export function createOpenAIIssuerImpl(cfg: OpenAIIssuerConfig, ctx: ProviderContext): OpenAIIssuer {
  const project = cfg.project;
  const log = ctx.logger.child({ issuer: 'openai', project });
  const saName = serviceAccountName(ctx.keyName);
  // every request of every issuer on this account (base URL + admin key) draws from one bucket
  const envAdminKey = typeof ctx.env[cfg.adminKeyEnv] === 'string' ? ctx.env[cfg.adminKeyEnv]!.trim() : '';
  const limiter = sharedLimiter(limiterKey(cfg.baseURL, envAdminKey || undefined), {
    requestsPerSecond: cfg.rateLimit,
    maxInFlight: cfg.maxConcurrentRequests,
  });
  const limited = limiter.wrap();

  let adminClient: OpenAI | undefined;
  let adminKey: string | undefined;
  let serviceAccountId: string | undefined;
  /**
   * the remembered service account, used without reading it first (one request less before the
   * create); a create answered 404 for it looks it up properly and tries once more (nothing was made)
   */
  let unconfirmedServiceAccount: string | undefined;

  /** the admin client, built on first need so that verify() works without the admin key */
  function admin(stage?: Stage): OpenAI {
    if (adminClient) return adminClient;
    const raw = ctx.env[cfg.adminKeyEnv];
    const key = typeof raw === 'string' ? raw.trim() : '';
    if (!key) {
      throw new KeyrotorError(
        'CONFIG_ENV_MISSING',
        `openai issuer: environment variable ${cfg.adminKeyEnv} (admin key) is not set`,
        {
          stage,
          hint: `export ${cfg.adminKeyEnv}=<an OpenAI admin key, sk-admin-...> (or point adminKeyEnv at the variable that holds it)`,
        },
      );
    }
    adminKey = key;
    const settings = JSON.stringify([cfg.baseURL, cfg.organization ?? null, cfg.timeout]);
    adminClient = sharedAdminClient(
      limiter,
      settings,
      key,
      () =>
        new OpenAI({
          apiKey: null,
          adminAPIKey: key,
          baseURL: cfg.baseURL,
          organization: cfg.organization ?? null,
          project: null,
          webhookSecret: null,
          timeout: cfg.timeout,
          maxRetries: 2, // GET and DELETE only; every POST below passes maxRetries: 0
          logLevel: 'off',
          fetch: limited,
        }),
    );
    return adminClient;
  }

  const secrets = (...extra: string[]): string[] => [...(adminKey ? [adminKey] : []), ...extra];
  const fail = (e: unknown, action: string, stage?: Stage, notFound?: string) =>
    mapOpenAIError(e, { action, stage, notFound, adminKeyEnv: cfg.adminKeyEnv, secrets: secrets() });

  async function listKeys(stage?: Stage): Promise<ProjectAPIKey[]> {
    const client = admin(stage);
    const out: ProjectAPIKey[] = [];
    try {
      const first = await client.admin.organization.projects.apiKeys.list(project, {
        limit: PAGE_LIMIT,
        owner_project_access: 'any',
      });
      for await (const page of first.iterPages())
        out.push(...checkedItems<ProjectAPIKey>(page, `list keys of project ${project}`, stage));
    } catch (e) {
      throw fail(e, `list keys of project ${project}`, stage, `project ${project}`);
    }
    return out;
  }

  /**
   * delete a key; 404 = already gone. Only the API's own answer (`deleted: true` for this id) proves
   * the key is gone: any other 200 (a proxy's page, a cut or empty body) is a retryable
   * ISSUER_BAD_RESPONSE, never "revoked" (the retry deletes it, or gets 404 if it was deleted).
   */
  async function deleteKey(keyId: string, stage?: Stage): Promise<{ alreadyGone: boolean }> {
    const client = admin(stage);
    const action = `delete key ${keyId} in project ${project}`;
    try {
      const r: unknown = await client.admin.organization.projects.apiKeys.delete(keyId, { project_id: project });
      const body = r && typeof r === 'object' ? (r as { id?: unknown; deleted?: unknown }) : undefined;
      if (!body) throw malformed(action, typeof r === 'string' ? 'not JSON' : 'no body', stage);
      if (body.deleted !== true) throw malformed(action, 'it does not say the key was deleted', stage);
      if (body.id !== undefined && body.id !== keyId) throw malformed(action, 'it names another key', stage);
      return { alreadyGone: false };
    } catch (e) {
      if (statusOf(e) === 404) return { alreadyGone: true };
      throw fail(e, action, stage, `key ${keyId} or project ${project}`);
    }
  }

  /**
   * delete every key of the project carrying exactly this name; returns the ids deleted. `guard` runs
   * between the lookup and the first delete (CreateKeyRequest.beforeDeleteByName).
   */
  async function deleteByName(name: string, stage?: Stage, guard?: () => Promise<void>): Promise<string[]> {
    const found = (await listKeys(stage)).filter((k) => k.name === name);
    if (found.length && guard) await guard();
    const deleted: string[] = [];
    for (const k of found) {
      await deleteKey(k.id, stage);
      deleted.push(k.id);
    }
    return deleted;
  }

  async function listServiceAccounts(stage?: Stage) {
    const client = admin(stage);
    const out: { id: string; name: string }[] = [];
    try {
      const first = await client.admin.organization.projects.serviceAccounts.list(project, { limit: PAGE_LIMIT });
      for await (const page of first.iterPages()) {
        for (const sa of checkedItems<{ id: string; name: string }>(
          page,
          `list service accounts of project ${project}`,
          stage,
        ))
          out.push({ id: sa.id, name: sa.name });
      }
    } catch (e) {
      throw fail(e, `list service accounts of project ${project}`, stage, `project ${project}`);
    }
    return out;
  }

  /** true if the service account exists, false on 404 */
  async function serviceAccountExists(id: string, stage?: Stage): Promise<boolean> {
    const client = admin(stage);
    try {
      await client.admin.organization.projects.serviceAccounts.retrieve(id, { project_id: project });
      return true;
    } catch (e) {
      if (statusOf(e) === 404) return false;
      throw fail(
        e,
        `read service account ${id} in project ${project}`,
        stage,
        `service account ${id} or project ${project}`,
      );
    }
  }

  /** delete the initial key a service-account create returned (recorded first, so a crash cannot lose it) */
  async function deleteInitialKey(keyId: string, stage?: Stage): Promise<void> {
    await deleteKey(keyId, stage);
    await ctx.providerState.set(PENDING_INITIAL_KEY_STATE_KEY, '');
    log.info({ keyId }, 'deleted the initial key of the new service account');
  }

  async function finishPendingInitialKey(stage?: Stage): Promise<void> {
    const pending = ctx.providerState.get(PENDING_INITIAL_KEY_STATE_KEY);
    if (pending) await deleteInitialKey(pending, stage);
  }

  async function createServiceAccount(stage?: Stage): Promise<string> {
    const client = admin(stage);
    let res: Awaited<ReturnType<typeof client.admin.organization.projects.serviceAccounts.create>>;
    try {
      res = await client.admin.organization.projects.serviceAccounts.create(
        project,
        { name: saName },
        { maxRetries: 0 },
      );
    } catch (e) {
      if (!isAmbiguous(e))
        throw fail(e, `create service account ${saName} in project ${project}`, stage, `project ${project}`);
      // It may exist now, with an initial key whose value we never saw: adopt it and delete its keys.
      log.warn(
        { serviceAccount: saName, error: apiMessage(e, secrets()) },
        'service account create had no clear answer; looking it up',
      );
      const found = (await listServiceAccounts(stage)).filter((s) => s.name === saName);
      if (found.length !== 1) {
        throw new KeyrotorError(
          'CREATE_AMBIGUOUS',
          `openai: create service account ${saName} in project ${project} had no clear answer (${apiMessage(e, secrets())}) and ${found.length} account(s) by that name exist now`,
          { stage, retryable: found.length === 0, cause: fail(e, 'create service account', stage) },
        );
      }
      const id = found[0]!.id;
      await ctx.providerState.set(SERVICE_ACCOUNT_STATE_KEY, id);
      for (const k of (await listKeys(stage)).filter((k) => k.owner?.service_account?.id === id))
        await deleteKey(k.id, stage);
      log.info({ serviceAccountId: id }, 'adopted the service account created by the unanswered request');
      return id;
    }
    if (!res || typeof res.id !== 'string' || !res.id) {
      throw new KeyrotorError(
        'ISSUER_BAD_RESPONSE',
        `openai: create service account ${saName} in project ${project}: answer has no id`,
        { stage },
      );
    }
    const id = res.id;
    await ctx.providerState.set(SERVICE_ACCOUNT_STATE_KEY, id);
    log.info({ serviceAccountId: id, serviceAccount: saName }, 'created service account');
    const initial = res.api_key?.id;
    if (initial) {
      // the initial key is not tracked by any rotation: remember it, then delete it at once
      await ctx.providerState.set(PENDING_INITIAL_KEY_STATE_KEY, initial);
      await deleteInitialKey(initial, stage);
    }
    return id;
  }

  /** a remembered service account a create was refused for (404): look it up or create another */
  let goneServiceAccount: string | undefined;

  /** The service account new keys belong to: configured, remembered, found by name, or created. */
  async function ensureServiceAccount(stage?: Stage): Promise<string> {
    if (serviceAccountId) return serviceAccountId;
    if (cfg.serviceAccount) return (serviceAccountId = cfg.serviceAccount);
    await finishPendingInitialKey(stage);
    const remembered = ctx.providerState.get(SERVICE_ACCOUNT_STATE_KEY);
    if (remembered && remembered !== goneServiceAccount) {
      // used as it is: a create for an account that is gone is a clean 404 (see create)
      unconfirmedServiceAccount = remembered;
      return remembered;
    }
    if (remembered)
      log.warn({ serviceAccountId: remembered }, 'remembered service account is gone; looking up or creating another');
    const found = (await listServiceAccounts(stage)).filter((s) => s.name === saName);
    if (found.length > 1) {
      throw new KeyrotorError(
        'ISSUER_POLICY',
        `openai: project ${project} has ${found.length} service accounts named ${saName}`,
        {
          stage,
          hint: `set serviceAccount in the issuer config to the id of the one to use (${found.map((s) => s.id).join(', ')})`,
        },
      );
    }
    if (found[0]) {
      await ctx.providerState.set(SERVICE_ACCOUNT_STATE_KEY, found[0].id);
      return (serviceAccountId = found[0].id);
    }
    return (serviceAccountId = await createServiceAccount(stage));
  }

  /** The service account to scope identify() to, without creating one. */
  async function knownServiceAccount(): Promise<string | undefined> {
    if (serviceAccountId) return serviceAccountId;
    if (cfg.serviceAccount) return cfg.serviceAccount;
    const remembered = ctx.providerState.get(SERVICE_ACCOUNT_STATE_KEY);
    if (remembered) return remembered;
    return (await listServiceAccounts()).find((s) => s.name === saName)?.id;
  }

  function toInfo(k: ProjectAPIKey): IssuerKeyInfo {
    const o = k.owner;
    let owner: IssuerKeyInfo['owner'];
    if (o?.type === 'service_account' && o.service_account)
      owner = { type: 'service_account', id: o.service_account.id, name: o.service_account.name };
    else if (o?.type === 'user' && o.user) owner = { type: 'user', id: o.user.id, name: o.user.name };
    else if (o?.service_account)
      owner = { type: 'service_account', id: o.service_account.id, name: o.service_account.name };
    else if (o?.user) owner = { type: 'user', id: o.user.id, name: o.user.name };
    return {
      keyId: k.id,
      name: k.name ?? null,
      createdAt: iso(k.created_at) ?? undefined,
      lastUsedAt: iso(k.last_used_at),
      expiresAt: iso(k.expires_at),
      redactedValue: typeof k.redacted_value === 'string' ? k.redacted_value : undefined,
      owner,
    };
  }

  function ambiguousCreate(
    req: CreateKeyRequest,
    reason: string,
    removed: string[] | undefined,
    cause: unknown,
  ): KeyrotorError {
    const what = `openai: create key ${req.name} in project ${project} had no clear answer (${reason})`;
    if (removed) {
      return new KeyrotorError(
        'CREATE_AMBIGUOUS',
        `${what}; removed ${removed.length} key(s) it may have made${removed.length ? ` (${removed.join(', ')})` : ''}`,
        {
          stage: 'issue',
          retryable: true,
          cause,
        },
      );
    }
    return new KeyrotorError('CREATE_AMBIGUOUS', `${what}; cleanup failed too, a key named ${req.name} may exist`, {
      stage: 'issue',
      retryable: true,
      cause,
      hint: `the next attempt deletes any key named ${req.name} first; or delete it in the dashboard`,
    });
  }

  async function reconcile(
    req: CreateKeyRequest,
    reason: string,
    cause: unknown,
    extraIds: string[] = [],
  ): Promise<KeyrotorError> {
    log.warn({ name: req.name, reason }, 'key create had no clear answer; deleting any key it may have made');
    try {
      const removed: string[] = [];
      for (const id of extraIds) if (!(await deleteKey(id, 'issue')).alreadyGone) removed.push(id);
      for (const id of await deleteByName(req.name, 'issue', req.beforeDeleteByName))
        if (!removed.includes(id)) removed.push(id);
      if (removed.length) log.warn({ name: req.name, deleted: removed }, 'deleted keys left by the unanswered create');
      return ambiguousCreate(req, reason, removed, cause);
    } catch (e) {
      // the caller may no longer act for this rotation (beforeDeleteByName): nothing was deleted
      if (e instanceof KeyrotorError && e.code === 'LEASE_LOST') return e;
      log.error(
        { name: req.name, error: e instanceof Error ? scrubText(e.message, secrets()) : 'unknown' },
        'cleanup after unanswered create failed',
      );
      return ambiguousCreate(req, reason, undefined, cause);
    }
  }

  /**
   * the clients of the project keys this issuer checked (it lives for one rotation), by key: verify and
   * the issuer-smoke-test gate check the same new key with one client; gone with the key's Secret
   */
  const projectClients = new WeakMap<Secret, OpenAI>();

  /** one call made with a project key (not the admin key), classified like verify */
  async function withProjectKey(secret: Secret, call: (client: OpenAI) => Promise<unknown>): Promise<VerifyResult> {
    const value = secret.reveal();
    let client = projectClients.get(secret);
    if (!client) {
      client = new OpenAI({
        apiKey: value,
        adminAPIKey: null,
        baseURL: cfg.verifyBaseURL ?? cfg.baseURL,
        organization: null,
        project: null,
        webhookSecret: null,
        timeout: cfg.timeout,
        maxRetries: 0,
        logLevel: 'off',
        fetch: limited,
      });
      projectClients.set(secret, client);
    }
    try {
      await call(client);
      return { ok: true };
    } catch (e) {
      if (e instanceof KeyrotorError || e instanceof SyntaxError) {
        // a 200 we cannot use (see checkedItems; a SyntaxError is JSON that does not parse, whose
        // text may quote the body: never shown)
        const why = e instanceof KeyrotorError ? e.message : 'malformed answer (not valid JSON)';
        return { ok: false, reason: 'error', detail: scrubText(why, [value]), retryable: true };
      }
      const status = statusOf(e);
      const detail = `${status ?? 'no answer'}${e && typeof e === 'object' && 'code' in e && e.code ? ` ${String(e.code)}` : ''}: ${apiMessage(e, [value, ...secrets()])}`;
      if (status === 401 && !isMissingScopes(e))
        return { ok: false, reason: 'invalid', detail: scrubText(detail, [value]), retryable: false };
      if (isMissingScopes(e))
        return { ok: false, reason: 'missing_scopes', detail: scrubText(detail, [value]), retryable: false };
      const retryable = status === undefined || status === 408 || status === 409 || status === 429 || status >= 500;
      return { ok: false, reason: 'error', detail: scrubText(detail, [value]), retryable };
    }
  }

  /** one create (with the lookup-first of a retried one), for the service account in use */
  async function createOnce(req: CreateKeyRequest): Promise<IssuedKey> {
    const client = admin('issue');
    const sa = await ensureServiceAccount('issue');
    // Lookup first: a key with this name is the leftover of an earlier attempt of this rotation
    // (crash or ambiguous answer) whose value nobody holds. Delete it before minting the one we keep.
    // Skipped only when the caller says this rotation cannot have tried before (`firstAttempt`).
    if (req.firstAttempt !== true) {
      const leftovers = await deleteByName(req.name, 'issue', req.beforeDeleteByName);
      if (leftovers.length)
        log.warn({ name: req.name, deleted: leftovers }, 'deleted keys left by an earlier attempt of this rotation');
    }

    const body = {
      project_id: project,
      name: req.name,
      ...(cfg.scopes ? { scopes: cfg.scopes } : {}),
      ...(typeof req.expiresInSeconds === 'number' ? { expires_in_seconds: req.expiresInSeconds } : {}),
    };
    let res: APIKeyCreateResponse;
    try {
      res = await client.admin.organization.projects.serviceAccounts.apiKeys.create(sa, body, { maxRetries: 0 });
    } catch (e) {
      if (isAmbiguous(e))
        throw await reconcile(req, apiMessage(e, secrets()), fail(e, `create key ${req.name}`, 'issue'));
      throw fail(
        e,
        `create key ${req.name} in project ${project} for service account ${sa}`,
        'issue',
        `project ${project} or service account ${sa}`,
      );
    }
    const r = res as Partial<APIKeyCreateResponse> | null | undefined;
    if (!r || typeof r.value !== 'string' || !r.value || typeof r.id !== 'string' || !r.id) {
      // created, but we cannot use it: delete what exists and report a bad answer
      const id = r && typeof r.id === 'string' && r.id ? [r.id] : [];
      const err = await reconcile(req, 'answer lacks the key id or value', undefined, id);
      throw new KeyrotorError(
        'ISSUER_BAD_RESPONSE',
        `openai: create key ${req.name} in project ${project}: answer lacks the key id or value`,
        {
          stage: 'issue',
          retryable: true,
          cause: err,
        },
      );
    }
    const createdAt = iso(r.created_at) ?? new Date(ctx.clock.now()).toISOString();
    const expiresAt = iso(r.expires_at) ?? undefined;
    log.info({ keyId: r.id, name: req.name, serviceAccountId: sa, expiresAt }, 'created key');
    const issued: IssuedKey = {
      keyId: r.id,
      name: typeof r.name === 'string' && r.name ? r.name : req.name,
      secret: Secret.of(r.value),
      createdAt,
    };
    if (expiresAt) issued.expiresAt = expiresAt;
    return issued;
  }

  const issuer: OpenAIIssuer = {
    type: 'openai',
    reportsUsage: true,

    async check() {
      // P2 extras (preflight, before anything changes): the admin key can list this project's keys,
      // and the configured service account exists
      // (both reads at once; a service account found here is not read again by create)
      const client = admin('preflight');
      const sa = cfg.serviceAccount ?? ctx.providerState.get(SERVICE_ACCOUNT_STATE_KEY);
      const [listed, exists] = await Promise.allSettled([
        client.admin.organization.projects.apiKeys.list(project, { limit: 1, owner_project_access: 'any' }),
        sa ? serviceAccountExists(sa, 'preflight') : Promise.resolve(true),
      ]);
      if (listed.status === 'rejected')
        throw fail(listed.reason, `list keys of project ${project}`, 'preflight', `project ${project}`);
      if (exists.status === 'rejected') throw exists.reason;
      if (sa && exists.value && !cfg.serviceAccount) serviceAccountId = sa;
      if (sa && !exists.value) {
        if (cfg.serviceAccount) {
          throw new KeyrotorError('ISSUER_NOT_FOUND', `openai: service account ${sa} not found in project ${project}`, {
            stage: 'preflight',
            hint: `fix serviceAccount in the issuer config, or remove it to let keyrotor create ${saName}`,
          });
        }
        log.warn(
          { serviceAccountId: sa },
          'remembered service account is gone; the next create looks it up by name or creates it',
        );
      }
    },

    async create(req) {
      try {
        return await createOnce(req);
      } catch (e) {
        const sa = unconfirmedServiceAccount;
        if (!sa || !(e instanceof KeyrotorError) || e.code !== 'ISSUER_NOT_FOUND' || serviceAccountId) throw e;
        // the remembered service account was used unread and the create was refused (404: nothing was
        // made): is it gone? Then look it up by name or create it, and create the key once more
        unconfirmedServiceAccount = undefined;
        if (await serviceAccountExists(sa, 'issue')) throw e;
        goneServiceAccount = sa;
        return createOnce(req);
      }
    },

    async verify(secret): Promise<VerifyResult> {
      // a 200 is proof only with the API's own answer in it: an HTML page from a proxy, or JSON
      // without the model list, is a bad answer (retryable), never a verified key
      return withProjectKey(secret, async (client) =>
        checkedItems(await client.models.list({ maxRetries: 0 }), 'verify (list models)'),
      );
    },

    /** a declared cheap call with the key: retrieve one model (scopes and project access of that model) */
    async probe(secret: Secret, call: IssuerProbe): Promise<VerifyResult> {
      return withProjectKey(secret, async (client) => {
        const m: unknown = await client.models.retrieve(call.model, { maxRetries: 0 });
        if (!m || typeof m !== 'object' || typeof (m as { id?: unknown }).id !== 'string')
          throw malformed(`probe (retrieve model ${call.model})`, 'no model in it');
      });
    },

    async revoke(keyId) {
      const r = await deleteKey(keyId);
      log.info({ keyId, alreadyGone: r.alreadyGone }, 'revoked key');
      return r;
    },

    async list() {
      return (await listKeys()).map(toInfo);
    },

    async identify(secret): Promise<IdentifyResult> {
      const sa = await knownServiceAccount();
      const all = await listKeys();
      const scoped = sa ? all.filter((k) => k.owner?.service_account?.id === sa) : all;
      const value = secret.reveal();
      const hits = scoped.filter((k) => matchesRedacted(k.redacted_value, value)).map((k) => k.id);
      if (hits.length === 1) return { kind: 'found', keyId: hits[0]! };
      if (hits.length > 1) return { kind: 'ambiguous', candidates: hits };
      return { kind: 'not_found' };
    },
  };
  return issuer;
}
