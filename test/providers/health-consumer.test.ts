/**
 * `keyrotor/consumer` (src/consumer.ts) over the real file store: cached reads, refresh on an
 * interval and on SIGHUP, the fingerprint handler read by the real `http` gate, and the retry on a
 * 401 invalid_api_key from the OpenAI fake through the real SDK (thrown error and fetch Response).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import OpenAI from 'openai';
import { createConsumer, fingerprint, type Consumer } from '../../src/entrypoints/consumer.ts';
import { createGate, createStore, healthConfigSchema, storeConfigSchema } from '../../providers/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { Issuer, ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { Secret } from '../../src/core/secret.ts';
import { silentLogger } from '../../src/app/log.ts';
import { writeFileSync } from 'node:fs';
import { CANARY } from '../canary.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { gateContext } from '../fakes/consumer.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

const MASTER = 'cd'.repeat(32);
const env = { KEYROTOR_MASTER_KEY: MASTER };
let fake: OpenAIFake;
const open: (Consumer | Server)[] = [];
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  for (const x of open) {
    if ('handler' in x) await x.close();
    else await new Promise<void>((r) => x.close(() => r()));
  }
  await fake?.close();
});

let seq = 0;
/** a file store for key `app` in a fresh state dir, with helpers to make a value current */
async function fileStore() {
  const dir = tempDir('consumer');
  const stateDir = path.join(dir, '.keyrotor');
  const ctx: ProviderContext = {
    keyName: 'app',
    stateDir,
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env,
    providerState: { get: () => undefined, set: async () => {} },
  };
  const store: SecretStore = await createStore(storeConfigSchema.parse({ type: 'file' }), ctx);
  const put = async (value: string) => {
    const rotationId = `rot-20261123t1515${String(10 + (seq % 50)).padStart(2, '0')}z-${(++seq).toString(16).padStart(8, '0')}`;
    await store.stage({ rotationId, secret: Secret.of(value), meta: { rotationId, fingerprint: fingerprint(value) } });
    await store.promote(rotationId);
  };
  return { dir, stateDir, store, put };
}

async function consumerFor(
  s: { dir: string; stateDir: string },
  over: Partial<Parameters<typeof createConsumer>[0]> = {},
): Promise<Consumer> {
  const c = await createConsumer({
    key: 'app',
    store: { type: 'file' },
    stateDir: s.stateDir,
    configDir: s.dir,
    env,
    refreshInterval: false,
    sighup: false,
    ...over,
  });
  open.push(c);
  return c;
}

async function serve(c: Consumer): Promise<string> {
  const server = createServer((req, res) =>
    req.url === '/keyrotor/fingerprint' ? c.handler(req, res) : (res.writeHead(404), res.end()),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  server.unref();
  open.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/keyrotor/fingerprint`;
}

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return cond();
};

describe('keyrotor/consumer', () => {
  it('reads and caches the current key, serves its fingerprint, and the http gate reads it', async () => {
    const s = await fileStore();
    const v1 = `${CANARY}-consumer-v1`;
    await s.put(v1);
    const c = await consumerFor(s);
    expect((await c.current()).reveal()).toBe(v1);
    expect(c.fingerprint()).toBe(fingerprint(v1));
    expect(c.source).toContain('file:');
    const url = await serve(c);
    const res = await fetch(url);
    const text = await res.text();
    capture('consumer-served.json', text);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(text)).toEqual({
      format: 'keyrotor-fingerprint/1',
      fingerprint: fingerprint(v1),
      loadedAt: c.loadedAt(),
    });
    expect(text).not.toContain(CANARY);
    expect((await fetch(url, { method: 'POST' })).status).toBe(405);
    expect((await fetch(url, { method: 'HEAD' })).status).toBe(200);

    const gate = await createGate(
      healthConfigSchema.parse({ type: 'http', urls: [url], consecutive: 1 }),
      {
        keyName: 'app',
        stateDir: s.stateDir,
        configDir: s.dir,
        logger: silentLogger(),
        clock: systemClock,
        env: {},
        providerState: { get: () => undefined, set: async () => {} },
      },
      { issuer: { type: 'none' } as unknown as Issuer, index: 0 },
    );
    expect(await gate.check(gateContext({ newFingerprint: fingerprint(v1) }))).toMatchObject({ pass: true });

    // a rotation promotes another value: the cache keeps the old one until a refresh
    const v2 = `${CANARY}-consumer-v2`;
    await s.put(v2);
    expect(c.fingerprint()).toBe(fingerprint(v1));
    expect(await c.refresh()).toEqual({ fingerprint: fingerprint(v2), previous: fingerprint(v1), changed: true });
    expect(await (await fetch(url)).json()).toMatchObject({ fingerprint: fingerprint(v2) });
  });

  it('refreshes on its interval and on SIGHUP; a failing refresh keeps the loaded key', async () => {
    const s = await fileStore();
    await s.put(`${CANARY}-consumer-a`);
    const changes: string[] = [];
    const ticking = await consumerFor(s, {
      refreshInterval: '100ms',
      onChange: (e) => changes.push(`${e.previous}->${e.fingerprint}`),
    });
    const hup = await consumerFor(s, { sighup: true });
    await s.put(`${CANARY}-consumer-b`);
    const b = fingerprint(`${CANARY}-consumer-b`);
    expect(await until(() => ticking.fingerprint() === b)).toBe(true);
    expect(changes).toEqual([`${fingerprint(`${CANARY}-consumer-a`)}->${b}`]);
    expect(hup.fingerprint()).not.toBe(b);
    process.kill(process.pid, 'SIGHUP');
    expect(await until(() => hup.fingerprint() === b)).toBe(true);

    const errors: string[] = [];
    const broken = await consumerFor(s, { refreshInterval: '50ms', onError: (e) => errors.push(e.code) });
    writeFileSync(path.join(s.stateDir, 'secrets', 'app.json'), '{ torn');
    expect(await until(() => errors.length > 0)).toBe(true);
    expect(errors[0]).toBe('STORE_CORRUPT');
    expect(broken.fingerprint()).toBe(b);
    expect((await broken.current()).reveal()).toBe(`${CANARY}-consumer-b`);
  });

  it('withKey: a 401 invalid_api_key from OpenAI reloads the key once and retries once (SDK error)', async () => {
    const s = await fileStore();
    const sa = fake.state.addServiceAccount('consumer-app');
    const owner = { type: 'service_account' as const, serviceAccountId: sa.id };
    const a = fake.state.plantKey({ owner });
    await s.put(a.value);
    const c = await consumerFor(s);
    const call = (apiKey: string) => new OpenAI({ apiKey, baseURL: fake.baseURL, maxRetries: 0 }).models.list();
    fake.resetFaults();
    expect((await c.withKey(call)).data[0]?.id).toBe('gpt-fake-1');
    // rotation: B becomes current in the store and A is revoked; the consumer still holds A
    const b = fake.state.plantKey({ owner });
    await s.put(b.value);
    fake.state.deleteKey(a);
    fake.resetFaults();
    expect((await c.withKey(call)).data[0]?.id).toBe('gpt-fake-1');
    expect(fake.calls('models.list').map((e) => e.status)).toEqual([401, 200]);
    expect(c.fingerprint()).toBe(fingerprint(b.value));

    // revoked and nothing new in the store: the 401 is rethrown after one reload, no second call
    fake.state.deleteKey(b);
    fake.resetFaults();
    const err = await c.withKey(call).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 401, code: 'invalid_api_key' });
    expect(fake.calls('models.list')).toHaveLength(1);
  });

  it('withKey: the same for a fetch Response; other failures are not retried', async () => {
    const s = await fileStore();
    const sa = fake.state.addServiceAccount('consumer-fetch');
    const owner = { type: 'service_account' as const, serviceAccountId: sa.id };
    const a = fake.state.plantKey({ owner });
    await s.put(a.value);
    const c = await consumerFor(s);
    const b = fake.state.plantKey({ owner });
    await s.put(b.value);
    fake.state.deleteKey(a);
    fake.resetFaults();
    const res = await c.withKey((apiKey) =>
      fetch(`${fake.baseURL}/models`, { headers: { authorization: `Bearer ${apiKey}` } }),
    );
    expect(res.status).toBe(200);
    expect(fake.calls('models.list').map((e) => e.status)).toEqual([401, 200]);
    fake.resetFaults();
    let calls = 0;
    await expect(
      c.withKey(async () => {
        calls++;
        throw Object.assign(new Error('rate limited'), { status: 429, code: 'rate_limit_exceeded' });
      }),
    ).rejects.toMatchObject({ status: 429 });
    expect(calls).toBe(1);
  });

  it('reads the key named in a keyrotor config; refuses an empty store and bad options', async () => {
    const s = await fileStore();
    writeFileSync(
      path.join(s.dir, 'rotation.config.yaml'),
      'version: 1\nkeys:\n  - name: app\n    issuer: { type: local }\n    stores: [ { type: file } ]\n',
    );
    await expect(
      createConsumer({ key: 'app', config: path.join(s.dir, 'rotation.config.yaml'), env, sighup: false }),
    ).rejects.toMatchObject({ code: 'SECRET_UNAVAILABLE' });
    await s.put(`${CANARY}-consumer-cfg`);
    const c = await createConsumer({
      key: 'app',
      config: path.join(s.dir, 'rotation.config.yaml'),
      env,
      sighup: false,
      refreshInterval: 0,
    });
    open.push(c);
    expect(c.fingerprint()).toBe(fingerprint(`${CANARY}-consumer-cfg`));
    await expect(
      createConsumer({ key: 'nope', config: path.join(s.dir, 'rotation.config.yaml'), env }),
    ).rejects.toMatchObject({ code: 'UNKNOWN_KEY' });
    await expect(createConsumer({ key: 'app', env })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(
      createConsumer({ key: 'app', store: { type: 'file' }, refreshInterval: 'soon', env }),
    ).rejects.toMatchObject({ code: 'USAGE' });
    await expect(createConsumer({ key: 'app', store: { type: 'nope' } as never, env })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
    });
  });
});
