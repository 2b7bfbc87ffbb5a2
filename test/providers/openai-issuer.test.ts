/**
 * The OpenAI issuer with the real `openai` SDK against the loopback Admin API fake.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { Issuer, Logger, ProviderContext } from '../../src/core/ports.ts';
import { Secret } from '../../src/core/secret.ts';
import { issuedKeyName } from '../../src/core/ids.ts';
import { systemClock } from '../../src/core/clock.ts';
import { openaiIssuerSchema } from '../../providers/issuers/openai/openai.schema.ts';
import { createOpenAIIssuer } from '../../providers/issuers/openai/index.ts';
import { matchesRedacted, SERVICE_ACCOUNT_STATE_KEY } from '../../providers/issuers/openai/openai.issuer.ts';
import { mapOpenAIError } from '../../providers/issuers/openai/openai.errors.ts';
import { startOpenAIFake } from '../fakes/openai-admin.ts';
import type { FakeServiceAccount, OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { linesLogger } from '../helpers/logger.ts';

// ------------------------------------------------------------------ harness

const logLines: string[] = [];
const seenErrors: unknown[] = [];

const recordingLogger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);

function memoryState(initial: Record<string, string> = {}) {
  const data: Record<string, string> = { ...initial };
  return { data, api: { get: (k: string) => data[k], set: async (k: string, v: string) => void (data[k] = v) } };
}

interface Made {
  issuer: Issuer;
  state: ReturnType<typeof memoryState>;
  ctx: ProviderContext;
}

let fake: OpenAIFake;
let sa: FakeServiceAccount;
let n = 0;

async function make(
  over: Record<string, unknown> = {},
  opts: { env?: NodeJS.ProcessEnv; state?: ReturnType<typeof memoryState>; keyName?: string } = {},
): Promise<Made> {
  const state = opts.state ?? memoryState();
  const ctx: ProviderContext = {
    keyName: opts.keyName ?? 'app',
    stateDir: tempDir('openai-issuer-state'),
    configDir: tempDir('openai-issuer-config'),
    logger: recordingLogger(),
    clock: systemClock,
    env: opts.env ?? { KR_OPENAI_ADMIN: fake.adminKey },
    providerState: state.api,
  };
  const cfg = openaiIssuerSchema.parse({
    type: 'openai',
    project: fake.project,
    serviceAccount: sa.id,
    adminKeyEnv: 'KR_OPENAI_ADMIN',
    baseURL: fake.baseURL,
    timeout: '5s',
    ...over,
  });
  return { issuer: await createOpenAIIssuer(cfg, ctx), state, ctx };
}

const rot = () => `rot-20261123t1515${String(10 + (n % 50)).padStart(2, '0')}z-${(++n).toString(16).padStart(8, '0')}`;
const req = (keyName = 'app') => {
  const rotationId = rot();
  return { name: issuedKeyName(keyName, rotationId), rotationId };
};

/** run, expect a KeyrotorError, keep it for the leak scan */
async function failure(p: Promise<unknown>): Promise<KeyrotorError> {
  try {
    await p;
  } catch (e) {
    seenErrors.push(e);
    expect(e).toBeInstanceOf(KeyrotorError);
    return e as KeyrotorError;
  }
  throw new Error('expected a KeyrotorError, got success');
}

const posts = () => fake.calls('serviceAccounts.apiKeys.create');

beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
  // everything this file produced, for the global canary scan
  capture('openai-issuer.log.jsonl', logLines.join('\n'));
  capture(
    'openai-issuer.errors.txt',
    seenErrors
      .map((e) => `${inspect(e, { depth: 6 })}\n${JSON.stringify((e as KeyrotorError).toRecord?.())}`)
      .join('\n---\n'),
  );
  capture('openai-issuer.fake-log.json', JSON.stringify(fake?.log ?? []));
});
beforeEach(() => {
  fake.resetFaults();
  fake.state.policy = {};
  sa = fake.state.addServiceAccount(`svc-${++n}`);
});

// ------------------------------------------------------------------ tests

describe('openai issuer: create, verify, revoke, list', () => {
  it('creates a key for the service account, verifies it, lists it and revokes it', async () => {
    const { issuer } = await make();
    await issuer.check();
    const r = req();
    const k = await issuer.create(r);
    expect(k.name).toBe(r.name);
    expect(k.keyId).toMatch(/^key_/);
    expect(k.secret).toBeInstanceOf(Secret);
    expect(String(k.secret)).toBe('[REDACTED]');
    expect(JSON.stringify(k)).not.toContain(CANARY);
    expect(k.secret.reveal()).toBe(fake.state.keyById(k.keyId)!.value);
    expect(Date.parse(k.createdAt)).toBeGreaterThan(Date.parse('2026-01-01') - 10 * 365 * 86400e3);
    expect(k.expiresAt).toBeUndefined();

    const created = fake.state.keyById(k.keyId)!;
    expect(created.owner).toEqual({ type: 'service_account', serviceAccountId: sa.id });
    expect(posts()).toHaveLength(1);
    expect(posts()[0]!.path).toBe(`/v1/organization/projects/${fake.project}/service_accounts/${sa.id}/api_keys`);

    expect(await issuer.verify(k.secret)).toEqual({ ok: true });

    const listed = (await issuer.list()).find((i) => i.keyId === k.keyId);
    expect(listed).toMatchObject({
      keyId: k.keyId,
      name: r.name,
      createdAt: new Date(created.createdAt * 1000).toISOString(),
      expiresAt: null,
      owner: { type: 'service_account', id: sa.id, name: sa.name },
    });
    expect(listed?.lastUsedAt).toMatch(/^\d{4}-\d\d-\d\dT/); // set by the verify above
    expect(listed?.redactedValue).toBe(created.redactedValue);
    expect(listed?.redactedValue).not.toContain(CANARY);

    expect(await issuer.revoke(k.keyId)).toEqual({ alreadyGone: false });
    expect(fake.state.keyById(k.keyId)!.deleted).toBe(true);
    const after = await issuer.verify(k.secret);
    expect(after).toMatchObject({ ok: false, reason: 'invalid', retryable: false });
    expect(JSON.stringify(after)).not.toContain(CANARY);
    expect(await issuer.revoke(k.keyId)).toEqual({ alreadyGone: true });
  });

  it('lists every page (limit 100, after cursor) and maps user owners', async () => {
    const { issuer } = await make();
    const before = fake.state.liveKeys(fake.project).length;
    for (let i = 0; i < 230; i++)
      fake.state.plantKey({
        name: `bulk-${i}`,
        createdAt: 1_760_000_000 + i,
        lastUsedAt: i % 2 ? 1_760_000_500 : null,
      });
    fake.resetFaults();
    const all = await issuer.list();
    expect(all).toHaveLength(before + 230);
    expect(new Set(all.map((k) => k.keyId)).size).toBe(all.length);
    const pages = fake.calls('projects.apiKeys.list');
    expect(pages.length).toBe(Math.ceil((before + 230) / 100));
    expect(pages.every((p) => p.query.limit === '100' && p.query.owner_project_access === 'any')).toBe(true);
    expect(pages[0]!.query.after).toBeUndefined();
    expect(pages[1]!.query.after).toBeTruthy();
    const one = all.find((k) => k.name === 'bulk-1')!;
    expect(one).toMatchObject({
      createdAt: new Date(1_760_000_001_000).toISOString(),
      lastUsedAt: new Date(1_760_000_500_000).toISOString(),
      owner: { type: 'user', id: 'user-fake1', name: 'Ada Admin' },
    });
    expect(all.find((k) => k.name === 'bulk-0')!.lastUsedAt).toBeNull();
    // tidy up so later tests list less
    for (const k of fake.state.liveKeys()) if (k.name.startsWith('bulk-')) fake.state.deleteKey(k);
  });

  it('revoke of an unknown key is alreadyGone, not an error', async () => {
    const { issuer } = await make();
    expect(await issuer.revoke('key_doesnotexist')).toEqual({ alreadyGone: true });
  });

  it('sends scopes and expires_in_seconds and returns expiresAt', async () => {
    const { issuer } = await make({ scopes: ['api.model.read', 'api.responses.write'] });
    const r = req();
    const k = await issuer.create({ ...r, expiresInSeconds: 86_400 });
    expect(posts()[0]!.body).toEqual({
      name: r.name,
      scopes: ['api.model.read', 'api.responses.write'],
      expires_in_seconds: 86_400,
    });
    const stored = fake.state.keyById(k.keyId)!;
    expect(stored.scopes).toEqual(['api.model.read', 'api.responses.write']);
    expect(k.expiresAt).toBe(new Date(stored.expiresAt! * 1000).toISOString());
    expect(Date.parse(k.expiresAt!) - Date.parse(k.createdAt)).toBe(86_400_000);

    const plain = await (await make()).issuer.create(req());
    expect(posts()[1]!.body).toEqual({ name: plain.name });
  });
});

describe('openai issuer: create never mints a key nobody holds', () => {
  it('the lookup of same-name leftovers is skipped only for a first attempt the caller vouches for', async () => {
    const { issuer } = await make();
    const r = req();
    const lists = () => fake.calls('projects.apiKeys.list').length;
    const before = lists();
    await issuer.create({ ...r, firstAttempt: true });
    expect(lists()).toBe(before); // no lookup
    // a retry of the same rotation (or one restored at issue) looks its name up and replaces the leftover
    const again = await issuer.create(r);
    expect(lists()).toBe(before + 1);
    expect(fake.state.keysNamed(r.name).map((k) => k.id)).toEqual([again.keyId]);
  });

  it('a caller that may no longer act for the rotation (beforeDeleteByName throws) deletes nothing of that name', async () => {
    const { issuer } = await make();
    const r = req();
    // the key a successor minted under this rotation's name: consumers use it now
    const successor = await issuer.create({ ...r, firstAttempt: true });
    const lost = new KeyrotorError('LEASE_LOST', 'the lease of app was granted to another worker');
    let asked = 0;
    const beforeDeleteByName = async () => {
      asked++;
      throw lost;
    };
    // a retried create: lookup, then the guard refuses the delete; nothing is minted either
    const e = await failure(issuer.create({ ...r, beforeDeleteByName }));
    expect(e.code).toBe('LEASE_LOST');
    expect(asked).toBe(1);
    expect(fake.state.keysNamed(r.name).map((k) => k.id)).toEqual([successor.keyId]);
    // an unanswered create's clean-up by name: the key it made is known by id, the successor's is kept
    fake.loseResponse('serviceAccounts.apiKeys.create');
    const e2 = await failure(issuer.create({ ...r, firstAttempt: true, beforeDeleteByName }));
    expect(e2.code).toBe('LEASE_LOST');
    expect(fake.state.keysNamed(r.name).map((k) => k.id)).toContain(successor.keyId);
    // with no key of that name the guard is not asked (nothing to delete)
    const fresh = req();
    await issuer.create({ ...fresh, beforeDeleteByName });
    expect(asked).toBe(2);
  });

  it('lost create response: the key is deleted by name and CREATE_AMBIGUOUS is thrown', async () => {
    const { issuer } = await make();
    const r = req();
    fake.loseResponse('serviceAccounts.apiKeys.create');
    const e = await failure(issuer.create(r));
    expect(e.code).toBe('CREATE_AMBIGUOUS');
    expect(e.retryable).toBe(true);
    expect(e.stage).toBe('issue');
    expect(e.message).toContain(r.name);
    expect(posts()).toHaveLength(1); // no SDK retry of the POST
    expect(posts()[0]!.fault).toBe('lost');
    // the fake did mint it, and the issuer removed it
    const minted = fake.state.keys.filter((k) => k.name === r.name);
    expect(minted).toHaveLength(1);
    expect(minted[0]!.deleted).toBe(true);
    expect(fake.state.keysNamed(r.name)).toHaveLength(0);
    // order: lookup, POST, list, DELETE
    const order = fake.log.map((l) => l.route);
    const post = order.indexOf('serviceAccounts.apiKeys.create');
    expect(order.slice(post + 1)).toEqual(['projects.apiKeys.list', 'projects.apiKeys.delete']);
    expect(e.message).not.toContain(CANARY);
  });

  it('5xx and timeouts on create are ambiguous too; each sends exactly one POST', async () => {
    const { issuer } = await make({ timeout: 400 });
    const r1 = req();
    fake.failNext('serviceAccounts.apiKeys.create', { status: 502 });
    const e1 = await failure(issuer.create(r1));
    expect(e1).toMatchObject({ code: 'CREATE_AMBIGUOUS', retryable: true, stage: 'issue' });
    expect(posts()).toHaveLength(1);

    const r2 = req();
    fake.slowResponse('serviceAccounts.apiKeys.create', 1_500); // applied, answered after the client gave up
    const e2 = await failure(issuer.create(r2));
    expect(e2).toMatchObject({ code: 'CREATE_AMBIGUOUS', retryable: true });
    expect(posts()).toHaveLength(2);
    expect(fake.state.keysNamed(r2.name)).toHaveLength(0);
    expect(fake.state.keys.filter((k) => k.name === r2.name && k.deleted)).toHaveLength(1);
  });

  it('connection reset before the server applied it: nothing to delete, still ambiguous', async () => {
    const { issuer } = await make();
    const r = req();
    fake.resetConnection('serviceAccounts.apiKeys.create');
    const e = await failure(issuer.create(r));
    expect(e.code).toBe('CREATE_AMBIGUOUS');
    expect(e.message).toMatch(/removed 0 key/);
    expect(posts()).toHaveLength(1);
    expect(fake.state.keys.filter((k) => k.name === r.name)).toHaveLength(0);
  });

  it('when cleanup fails too, the error says a key may exist and the next attempt removes it first', async () => {
    const { issuer } = await make();
    const r = req();
    fake.loseResponse('serviceAccounts.apiKeys.create');
    // once the POST is in, every cleanup list fails (the SDK retries a GET twice: 3 answers)
    const off = fake.onRequest((en) => {
      if (en.route === 'serviceAccounts.apiKeys.create')
        fake.failNext('projects.apiKeys.list', { status: 503, times: 3 });
    });
    const e = await failure(issuer.create(r));
    off();
    expect(e).toMatchObject({ code: 'CREATE_AMBIGUOUS', retryable: true, stage: 'issue' });
    expect(e.message).toMatch(/may exist/);
    expect(e.hint).toMatch(/next attempt/);
    expect(fake.calls('projects.apiKeys.list').map((c) => c.status)).toEqual([200, 503, 503, 503]); // lookup, then 3 failed
    expect(fake.state.keysNamed(r.name)).toHaveLength(1); // the orphan is still there...
    const again = await issuer.create(r); // ...and the next attempt of the same rotation removes it first
    expect(fake.state.keysNamed(r.name).map((k) => k.id)).toEqual([again.keyId]);
    expect(fake.state.keys.filter((k) => k.name === r.name && k.deleted)).toHaveLength(1);
  });

  it('429 on create is not retried: exactly one POST, ISSUER_RATE_LIMITED retryable, no key', async () => {
    const { issuer } = await make();
    const r = req();
    fake.failNext('serviceAccounts.apiKeys.create', {
      status: 429,
      headers: { 'retry-after': '1' },
      code: 'rate_limit_exceeded',
    });
    const e = await failure(issuer.create(r));
    expect(e).toMatchObject({ code: 'ISSUER_RATE_LIMITED', retryable: true, stage: 'issue' });
    expect(e.message).toMatch(/retry after 1s/);
    expect(posts()).toHaveLength(1);
    expect(fake.state.keys.filter((k) => k.name === r.name)).toHaveLength(0);
    expect(fake.calls('projects.apiKeys.delete')).toHaveLength(0);
  });

  it('non-ambiguous failures map cleanly: 400 policy, 403, 404 service account', async () => {
    const { issuer } = await make();
    fake.state.policy = { maxExpiresInSeconds: 3600 };
    const e400 = await failure(issuer.create({ ...req(), expiresInSeconds: 7200 }));
    expect(e400).toMatchObject({ code: 'ISSUER_POLICY', retryable: false, stage: 'issue' });
    expect(e400.message).toContain('exceeds the maximum of 3600 seconds');
    fake.state.policy = {};

    fake.failNext('serviceAccounts.apiKeys.create', {
      status: 403,
      code: null,
      message: 'You are not allowed to create keys in this project.',
    });
    const e403 = await failure(issuer.create(req()));
    expect(e403).toMatchObject({ code: 'ISSUER_PERMISSION', retryable: false });

    const { issuer: gone } = await make({ serviceAccount: 'svc_acct_missing' });
    const e404 = await failure(gone.create(req()));
    expect(e404).toMatchObject({ code: 'ISSUER_NOT_FOUND', retryable: false, stage: 'issue' });
    expect(e404.message).toContain('svc_acct_missing');
    expect(fake.calls('projects.apiKeys.delete')).toHaveLength(0);
  });

  it('a create that runs again for the same rotation replaces the leftover of the earlier attempt', async () => {
    const { issuer } = await make();
    const r = req();
    const first = await issuer.create(r); // e.g. crashed before the result was persisted
    const second = await issuer.create(r);
    expect(second.keyId).not.toBe(first.keyId);
    expect(fake.state.keysNamed(r.name).map((k) => k.id)).toEqual([second.keyId]);
    expect(fake.state.keyById(first.keyId)!.deleted).toBe(true);
  });
});

describe('openai issuer: verify', () => {
  it('answers ok / invalid / missing_scopes / error, never throws', async () => {
    const { issuer } = await make();
    const k = await issuer.create(req());
    expect(await issuer.verify(k.secret)).toEqual({ ok: true });

    const invalid = await issuer.verify(Secret.of(`${CANARY}-never-issued-0000`));
    expect(invalid).toMatchObject({ ok: false, reason: 'invalid', retryable: false });

    fake.lackScopes(k.keyId);
    const scopes = await issuer.verify(k.secret);
    expect(scopes).toMatchObject({ ok: false, reason: 'missing_scopes' });
    fake.lackScopes(k.keyId, false);

    fake.failNext('models.list', { status: 403, code: null, message: 'Project access denied.' });
    expect(await issuer.verify(k.secret)).toMatchObject({ ok: false, reason: 'missing_scopes' });

    fake.failNext('models.list', { status: 429 });
    expect(await issuer.verify(k.secret)).toMatchObject({ ok: false, reason: 'error', retryable: true });
    fake.failNext('models.list', { status: 500 });
    expect(await issuer.verify(k.secret)).toMatchObject({ ok: false, reason: 'error', retryable: true });
    expect(fake.calls('models.list').filter((c) => c.status === 500)).toHaveLength(1); // maxRetries 0
    fake.resetConnection('models.list');
    expect(await issuer.verify(k.secret)).toMatchObject({ ok: false, reason: 'error', retryable: true });

    for (const v of [invalid, scopes]) {
      expect(JSON.stringify(v)).not.toContain(CANARY);
      if (!v.ok) expect(v.detail).toBeTruthy();
    }
    capture('openai-issuer.verify-results.json', JSON.stringify([invalid, scopes]));
  });

  it('a new key that is not live yet reads invalid until it propagates', async () => {
    const { issuer } = await make();
    fake.setNewKeyPropagation(2);
    const k = await issuer.create(req());
    fake.setNewKeyPropagation(0);
    expect((await issuer.verify(k.secret)).ok).toBe(false);
    expect((await issuer.verify(k.secret)).ok).toBe(false);
    expect(await issuer.verify(k.secret)).toEqual({ ok: true });
  });

  it('uses verifyBaseURL when set and sends the key, not the admin key', async () => {
    const other = await startOpenAIFake();
    try {
      const { issuer } = await make({ verifyBaseURL: other.baseURL });
      const k = await issuer.create(req());
      expect((await issuer.verify(k.secret)).ok).toBe(false); // the other fake does not know the key
      expect(other.calls('models.list')).toHaveLength(1);
      expect(fake.calls('models.list')).toHaveLength(0);
    } finally {
      await other.close();
    }
  });
});

describe('openai issuer: service account', () => {
  it('auto-creates keyrotor-<key>, deletes its initial key, records the id and reuses it', async () => {
    const keyName = `auto${n}`;
    const state = memoryState();
    const { issuer } = await make({ serviceAccount: undefined }, { state, keyName });
    const k = await issuer.create(req(keyName));
    const created = fake.calls('serviceAccounts.create');
    expect(created).toHaveLength(1);
    expect(created[0]!.body).toEqual({ name: `keyrotor-${keyName}` });
    const id = state.data[SERVICE_ACCOUNT_STATE_KEY]!;
    const account = fake.state.serviceAccount(id)!;
    expect(account.name).toBe(`keyrotor-${keyName}`);
    expect(fake.state.keyById(k.keyId)!.owner).toEqual({ type: 'service_account', serviceAccountId: id });
    // the initial key came back with the account and is gone at once
    const initial = fake.state.keys.filter(
      (x) => x.initial && x.owner.type === 'service_account' && x.owner.serviceAccountId === id,
    );
    expect(initial).toHaveLength(1);
    expect(initial[0]!.deleted).toBe(true);
    expect(
      fake.state
        .liveKeys()
        .filter((x) => x.owner.type === 'service_account' && x.owner.serviceAccountId === id)
        .map((x) => x.id),
    ).toEqual([k.keyId]);

    // a second run (new issuer, same remembered state) reuses it
    const { issuer: again } = await make({ serviceAccount: undefined }, { state, keyName });
    await again.check();
    const k2 = await again.create(req(keyName));
    expect(fake.calls('serviceAccounts.create')).toHaveLength(1);
    expect(fake.state.keyById(k2.keyId)!.owner).toEqual({ type: 'service_account', serviceAccountId: id });

    // with the state lost, it is found by name instead of created again
    const fresh = memoryState();
    const { issuer: third } = await make({ serviceAccount: undefined }, { state: fresh, keyName });
    await third.create(req(keyName));
    expect(fake.calls('serviceAccounts.create')).toHaveLength(1);
    expect(fresh.data[SERVICE_ACCOUNT_STATE_KEY]).toBe(id);
  });

  it('a lost service-account create is adopted by name and its initial key removed', async () => {
    const keyName = `lostsa${n}`;
    const state = memoryState();
    const { issuer } = await make({ serviceAccount: undefined }, { state, keyName });
    fake.loseResponse('serviceAccounts.create');
    const k = await issuer.create(req(keyName));
    expect(fake.calls('serviceAccounts.create')).toHaveLength(1);
    const id = state.data[SERVICE_ACCOUNT_STATE_KEY]!;
    expect(fake.state.serviceAccount(id)!.name).toBe(`keyrotor-${keyName}`);
    const owned = fake.state
      .liveKeys()
      .filter((x) => x.owner.type === 'service_account' && x.owner.serviceAccountId === id);
    expect(owned.map((x) => x.id)).toEqual([k.keyId]);
  });

  it('check: ok with a valid config; a missing configured service account or project is ISSUER_NOT_FOUND', async () => {
    await (await make()).issuer.check();
    const e1 = await failure((await make({ serviceAccount: 'svc_acct_nope' })).issuer.check());
    expect(e1).toMatchObject({ code: 'ISSUER_NOT_FOUND', stage: 'preflight' });
    expect(e1.message).toContain('svc_acct_nope');
    expect(e1.hint).toBeTruthy();
    const e2 = await failure((await make({ project: 'proj_nope' })).issuer.check());
    expect(e2).toMatchObject({ code: 'ISSUER_NOT_FOUND', stage: 'preflight' });
    expect(e2.message).toContain('proj_nope');
  });
});

describe('openai issuer: identify', () => {
  it('finds the one key whose redacted head and tail fit, scoped to the service account', async () => {
    const { issuer } = await make();
    const mine = fake.state.plantKey({
      name: 'made by hand',
      owner: { type: 'service_account', serviceAccountId: sa.id },
    });
    fake.state.plantKey({ name: 'other', owner: { type: 'service_account', serviceAccountId: sa.id } });
    expect(await issuer.identify(Secret.of(mine.value))).toEqual({ kind: 'found', keyId: mine.id });
    expect(await issuer.identify(Secret.of(`${CANARY}-not-a-key-zzzz`))).toEqual({ kind: 'not_found' });

    // same visible head and tail on two keys of the account: ambiguous
    const twinA = fake.state.plantKey({
      value: `${CANARY}-twin-aaaa-9x9y`,
      owner: { type: 'service_account', serviceAccountId: sa.id },
    });
    const twinB = fake.state.plantKey({
      value: `${CANARY}-twin-bbbb-9x9y`,
      owner: { type: 'service_account', serviceAccountId: sa.id },
    });
    const amb = await issuer.identify(Secret.of(twinA.value));
    expect(amb.kind).toBe('ambiguous');
    if (amb.kind === 'ambiguous') expect(amb.candidates.sort()).toEqual([twinA.id, twinB.id].sort());

    // a key of another owner with the same mask does not count when the account is known
    const elsewhere = fake.state.plantKey({ value: `${CANARY}-user-elsewhere-qq11` });
    expect(await issuer.identify(Secret.of(elsewhere.value))).toEqual({ kind: 'not_found' });
  });

  it('without a known service account it searches every project key; handles `****` masks', async () => {
    fake.state.redact = 'stars';
    try {
      const { issuer } = await make({ serviceAccount: undefined }, { keyName: `noacct${n}` });
      const user = fake.state.plantKey({ name: 'dashboard key' });
      expect(user.redactedValue).toMatch(/^sk-canar\*+.{4}$/);
      expect(await issuer.identify(Secret.of(user.value))).toEqual({ kind: 'found', keyId: user.id });
      expect(fake.calls('serviceAccounts.create')).toHaveLength(0); // identify never creates
    } finally {
      fake.state.redact = 'ellipsis';
    }
  });

  it('matchesRedacted handles the usual masks', () => {
    const v = 'sk-svcacct-AbCdEf0123456789wxyz';
    expect(matchesRedacted('sk-svcacct-...wxyz', v)).toBe(true);
    expect(matchesRedacted('sk-svc...wxyz', v)).toBe(true);
    expect(matchesRedacted('sk-...wxyz', v)).toBe(true);
    expect(matchesRedacted('sk-svcacct-********wxyz', v)).toBe(true);
    expect(matchesRedacted('sk-s…wxyz', v)).toBe(true);
    expect(matchesRedacted('sk-proj-...wxyz', v)).toBe(false);
    expect(matchesRedacted('sk-svcacct-...wxya', v)).toBe(false);
    expect(matchesRedacted('sk-svcacct-...', v)).toBe(false);
    expect(matchesRedacted('', v)).toBe(false);
    expect(matchesRedacted('sk-svcacct-AbCdEf0123456789wxyz', v)).toBe(false);
  });
});

describe('openai issuer: admin key', () => {
  it('missing admin key env var is CONFIG_ENV_MISSING with a hint at construction, before any request', async () => {
    const before = fake.log.length;
    const e = await failure(make({}, { env: {} }));
    expect(e.code).toBe('CONFIG_ENV_MISSING');
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain('KR_OPENAI_ADMIN');
    expect(e.hint).toMatch(/KR_OPENAI_ADMIN/);
    expect((await failure(make({}, { env: { KR_OPENAI_ADMIN: '  ' } }))).code).toBe('CONFIG_ENV_MISSING');
    // the implementation checks again on first use (e.g. the variable was cleared after construction)
    const { issuer, ctx } = await make();
    delete ctx.env.KR_OPENAI_ADMIN;
    expect((await failure(issuer.check())).code).toBe('CONFIG_ENV_MISSING');
    expect(fake.log.length).toBe(before);
  });

  it('a wrong admin key is ISSUER_AUTH; one without scopes is ISSUER_PERMISSION; neither leaks', async () => {
    const wrong = `${CANARY}-admin-wrong`;
    const { issuer } = await make({}, { env: { KR_OPENAI_ADMIN: wrong } });
    const e = await failure(issuer.check());
    expect(e).toMatchObject({ code: 'ISSUER_AUTH', retryable: false, stage: 'preflight' });
    expect(e.hint).toContain('KR_OPENAI_ADMIN');
    const e2 = await failure(issuer.create(req()));
    expect(e2.code).toBe('ISSUER_AUTH');

    const restricted = fake.addRestrictedAdminKey();
    const e3 = await failure((await make({}, { env: { KR_OPENAI_ADMIN: restricted } })).issuer.list());
    expect(e3.code).toBe('ISSUER_PERMISSION');
    expect(e3.message).toMatch(/Missing scopes/);
  });
});

describe('openai issuer: malformed answers (a 200 the SDK cannot use)', () => {
  const KINDS = ['truncated', 'html', 'shape'] as const;

  // a create whose answer cannot be used may have minted a key nobody holds: ambiguous (unparseable)
  // or a bad answer (parsed, fields missing); either way retryable, and the key is removed by name
  it.each(KINDS)(
    'create answered with %s after the key was minted: a retryable error, the key is removed by name, nothing leaks',
    async (kind) => {
      const { issuer } = await make();
      const r = req();
      fake.malformedResponse('serviceAccounts.apiKeys.create', { kind, applied: true });
      const e = await failure(issuer.create(r));
      expect(['CREATE_AMBIGUOUS', 'ISSUER_BAD_RESPONSE']).toContain(e.code);
      expect(e).toMatchObject({ retryable: true, stage: 'issue' });
      expect(posts()).toHaveLength(1); // never re-sent
      expect(posts()[0]!.fault).toBe('malformed');
      expect(fake.state.keys.filter((k) => k.name === r.name)).toHaveLength(1);
      expect(fake.state.keysNamed(r.name)).toHaveLength(0); // minted, then deleted by name
      expect(e.message).not.toContain(CANARY);
      // the same rotation's next attempt gets a working key
      const again = await issuer.create(r);
      expect(fake.state.keysNamed(r.name).map((k) => k.id)).toEqual([again.keyId]);
    },
  );

  it.each(KINDS)(
    'create answered with %s before anything was minted: a retryable error, nothing to remove',
    async (kind) => {
      const { issuer } = await make();
      const r = req();
      fake.malformedResponse('serviceAccounts.apiKeys.create', { kind, applied: false });
      const e = await failure(issuer.create(r));
      expect(['CREATE_AMBIGUOUS', 'ISSUER_BAD_RESPONSE']).toContain(e.code);
      expect(e.retryable).toBe(true);
      expect(fake.state.keys.filter((k) => k.name === r.name)).toHaveLength(0);
    },
  );

  it('a JSON parse error quoting the body (it may hold the new key) is mapped without its text', () => {
    const e = mapOpenAIError(new SyntaxError(`Unexpected token 's', "${CANARY}-sk-proj-cut"... is not valid JSON`), {
      action: 'create key x',
      stage: 'issue',
    });
    seenErrors.push(e);
    expect(e).toMatchObject({ code: 'ISSUER_BAD_RESPONSE', retryable: true, stage: 'issue' });
    expect(e.message).toBe('openai: create key x: malformed answer (not valid JSON)');
    expect(inspect(e, { depth: 8 })).not.toContain(CANARY);
  });

  it.each(KINDS)('a %s answer to list is ISSUER_BAD_RESPONSE, never an empty project', async (kind) => {
    const { issuer } = await make();
    await issuer.create(req());
    fake.malformedResponse('projects.apiKeys.list', { kind, times: 5 });
    const e = await failure(issuer.list());
    expect(e).toMatchObject({ code: 'ISSUER_BAD_RESPONSE', retryable: true });
    expect(e.message).not.toContain(CANARY);
    // an ambiguous create must not trust a garbled list either: it says a key may exist
    const r = req();
    fake.resetFaults();
    fake.loseResponse('serviceAccounts.apiKeys.create');
    const off = fake.onRequest((en) => {
      if (en.route === 'serviceAccounts.apiKeys.create')
        fake.malformedResponse('projects.apiKeys.list', { kind, times: 5 });
    });
    const e2 = await failure(issuer.create(r));
    off();
    expect(e2).toMatchObject({ code: 'CREATE_AMBIGUOUS', retryable: true });
    expect(e2.message).toMatch(/may exist/);
    fake.resetFaults();
    await issuer.create(r); // the next attempt removes the leftover first
    expect(fake.state.keysNamed(r.name)).toHaveLength(1);
  });

  it.each(KINDS)('a %s answer to the verify call is not proof the key works (retryable, not ok)', async (kind) => {
    const { issuer } = await make();
    const made = await issuer.create(req());
    fake.malformedResponse('models.list', { kind });
    const v = await issuer.verify(made.secret);
    expect(v).toMatchObject({ ok: false, retryable: true });
    expect(JSON.stringify(v)).not.toContain(CANARY);
    expect(await issuer.verify(made.secret)).toEqual({ ok: true });
  });

  it.each(KINDS)(
    'a %s answer to an applied revoke: the key is gone, and the issuer says so or asks for a re-check',
    async (kind) => {
      const { issuer } = await make();
      const old = await issuer.create(req());
      fake.malformedResponse('projects.apiKeys.delete', { kind, applied: true });
      const rv = await issuer.revoke(old.keyId).then(
        () => 'ok',
        (e: unknown) => {
          seenErrors.push(e);
          return `${(e as KeyrotorError).code}/${String((e as KeyrotorError).retryable)}`;
        },
      );
      expect(['ok', 'ISSUER_BAD_RESPONSE/true']).toContain(rv);
      expect(fake.state.keysNamed(old.name)).toHaveLength(0);
      expect(await issuer.revoke(old.keyId)).toMatchObject({ alreadyGone: true });
    },
  );

  // a rollback's discard believed such an answer: the new key stayed alive, an orphan (chaos seed
  // 4233257225, scenario 25)
  it.each(KINDS)(
    'a %s answer to a revoke that was NOT applied: never reported as revoked (retryable), the retry deletes the key',
    async (kind) => {
      const { issuer } = await make();
      const k = await issuer.create(req());
      fake.malformedResponse('projects.apiKeys.delete', { kind, applied: false });
      const e = await failure(issuer.revoke(k.keyId));
      expect(e).toMatchObject({ code: 'ISSUER_BAD_RESPONSE', retryable: true });
      expect(e.message).toContain(k.keyId);
      expect(e.message).not.toContain(CANARY);
      expect(fake.state.keyById(k.keyId)!.deleted).toBe(false); // still alive: the caller must not move on
      expect(await issuer.revoke(k.keyId)).toEqual({ alreadyGone: false });
      expect(fake.state.keyById(k.keyId)!.deleted).toBe(true);
    },
  );
});

describe('openai issuer: no secret in any error or log', () => {
  it('every error and log line produced above is free of the canary', () => {
    expect(seenErrors.length).toBeGreaterThan(10);
    for (const e of seenErrors) {
      const ke = e as KeyrotorError;
      const text = [
        ke.message,
        ke.hint ?? '',
        ke.stack ?? '',
        JSON.stringify(ke.toRecord()),
        inspect(ke, { depth: 8 }),
      ].join('\n');
      expect(text).not.toContain(CANARY);
      expect(text).not.toContain(fake.adminKey);
    }
    expect(logLines.length).toBeGreaterThan(0);
    for (const l of logLines) expect(l).not.toContain(CANARY);
  });
});
