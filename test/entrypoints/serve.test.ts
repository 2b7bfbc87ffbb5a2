/**
 * `keyrotor serve` (the Cloud Run HTTP server) on 127.0.0.1, in process, with a locally generated
 * RS256 signing key and its JWKS served on loopback (jose). The OpenAI issuer runs on its loopback fake
 * and the GCP store on the gRPC fake, both over their real SDKs.
 *
 * Every bad request in the tables is rejected and changes nothing (issuer keys, store writes, state);
 * good requests rotate; a Pub/Sub SECRET_ROTATE envelope rotates exactly the mapped key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { parseConfig } from '../../src/app/config/load.ts';
import type { LoadedConfig } from '../../src/app/config/load.ts';
import { createLogger } from '../../src/app/log.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import type { StateStore } from '../../src/core/ports.ts';
import { Secret } from '../../src/core/secret.ts';
import { createAuthenticator, constantTimeEquals } from '../../src/entrypoints/auth/index.ts';
import { startServer, type KeyrotorServer } from '../../src/entrypoints/cloud-run.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { startGcpFake, type GcpFake } from '../fakes/gcp-secret-manager.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';

const AUD = 'https://keyrotor-abc123-ew.a.run.app';
const CALLER = 'scheduler@my-project.iam.gserviceaccount.com';
const GCP_PROJECT = 'serve-project';
const SECRET = `projects/${GCP_PROJECT}/secrets/openai-key`;
const BEARER = `${'b'.repeat(20)}-static-bearer-token-0123456789`;
const MAX_BODY = 4096;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
  text: string;
}

describe('keyrotor serve (Cloud Run HTTP entry point)', () => {
  let openai: OpenAIFake;
  let gcp: GcpFake;
  let gcpRaw: SecretManagerServiceClient;
  let jwks: Server;
  let jwksUrl: string;
  let signKey: CryptoKey;
  let otherKey: CryptoKey;
  let srv: KeyrotorServer;
  let cfg: LoadedConfig;
  let stateStore: StateStore;
  let logText = '';
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      logText += chunk.toString();
      cb();
    },
  });

  beforeAll(async () => {
    process.env.METADATA_SERVER_DETECTION = 'none';
    [openai, gcp] = await Promise.all([startOpenAIFake(), startGcpFake()]);
    gcpRaw = new SecretManagerServiceClient({
      apiEndpoint: '127.0.0.1',
      port: gcp.port,
      sslCreds: grpc.credentials.createInsecure(),
      universeDomain: 'googleapis.com',
    });
    await gcpRaw.createSecret({
      parent: `projects/${GCP_PROJECT}`,
      secretId: 'openai-key',
      secret: { replication: { automatic: {} } },
    });

    // a local "Google": an RS256 key pair and its JWKS on loopback
    const pair = await generateKeyPair('RS256', { extractable: true });
    signKey = pair.privateKey;
    otherKey = (await generateKeyPair('RS256')).privateKey;
    const jwk: JWK = { ...(await exportJWK(pair.publicKey)), kid: 'test-kid-1', alg: 'RS256', use: 'sig' };
    jwks = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/oauth2/v3/certs`;

    const sa = openai.state.addServiceAccount('serve-app');
    const dir = tempDir('serve');
    cfg = parseConfig(
      `version: 1
defaults:
  verify: { timeout: 20s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
keys:
  - name: local-app
    issuer: { type: local }
    stores: [ { type: file } ]
  - name: gcp-app
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores:
      - { type: gcp-secret-manager, project: ${GCP_PROJECT}, secret: openai-key, apiEndpoint: 127.0.0.1, port: ${gcp.port}, insecure: true }
    health:
      - { type: issuer-smoke-test, timeout: 30s, interval: 50ms }
`,
      path.join(dir, 'rotation.config.yaml'),
      {},
    );
    stateStore = createFileStateStore(cfg.stateDir);
    srv = await start({});
  }, 60_000);

  async function start(extra: { requestTimeoutMs?: number; safetyMarginMs?: number }) {
    return startServer({
      config: cfg,
      stateStore,
      auth: createAuthenticator({ oidc: { audiences: [AUD], emails: [CALLER], jwksUrl }, bearer: Secret.of(BEARER) }),
      logger: await createLogger({ pretty: false, level: 'debug', destination: sink }),
      env: { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'ab'.repeat(32) },
      host: '127.0.0.1',
      port: 0,
      maxBodyBytes: MAX_BODY,
      ...extra,
    });
  }

  afterAll(async () => {
    await srv?.close();
    await gcpRaw?.close();
    await new Promise<void>((r) => (jwks ? jwks.close(() => r()) : r()));
    await Promise.all([openai?.close(), gcp?.close()]);
    capture('serve.log', logText);
    expect(logText).not.toContain(CANARY);
    expect(logText).not.toContain(BEARER);
  });

  // ------------------------------------------------------------------ helpers

  async function token(
    o: {
      aud?: string;
      email?: string;
      verified?: boolean;
      iss?: string;
      exp?: number;
      iat?: number;
      key?: CryptoKey;
      kid?: string;
    } = {},
  ) {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ email: o.email ?? CALLER, email_verified: o.verified ?? true })
      .setProtectedHeader({ alg: 'RS256', kid: o.kid ?? 'test-kid-1', typ: 'JWT' })
      .setIssuer(o.iss ?? 'https://accounts.google.com')
      .setAudience(o.aud ?? AUD)
      .setSubject('110000000000000000001')
      .setIssuedAt(o.iat ?? now)
      .setExpirationTime(o.exp ?? now + 300)
      .sign(o.key ?? signKey);
  }

  /** one raw HTTP request (no client-side normalisation), captured for the canary scan */
  function call(
    method: string,
    p: string,
    o: {
      body?: string | Buffer;
      auth?: string;
      headers?: Record<string, string>;
      chunked?: boolean;
      on?: KeyrotorServer;
    } = {},
  ): Promise<Reply> {
    const target = o.on ?? srv;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...(o.auth ? { authorization: o.auth } : {}), ...o.headers };
      if (o.body !== undefined && !o.chunked) headers['content-length'] = String(Buffer.byteLength(o.body));
      if (o.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
      const req = request(`${target.url}${p}`, { method, headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          capture('serve-response.json', text);
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text });
        });
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        // the server may close the socket right after a 413 while we still write
        if (e.code === 'EPIPE' || e.code === 'ECONNRESET')
          resolve({ status: -1, headers: {}, json: undefined, text: '' });
        else reject(e);
      });
      if (o.body !== undefined) {
        if (o.chunked) {
          const buf = Buffer.from(o.body);
          for (let i = 0; i < buf.length; i += 1024) req.write(buf.subarray(i, i + 1024));
        } else req.write(o.body);
      }
      req.end();
    });
  }

  const bearer = (t: string) => `Bearer ${t}`;
  const good = async () => bearer(await token());

  function envelope(o: { eventType?: string; secretId?: string; publishTime?: string; data?: string } = {}) {
    return JSON.stringify({
      message: {
        attributes: {
          eventType: o.eventType ?? 'SECRET_ROTATE',
          secretId: o.secretId ?? SECRET,
          dataFormat: 'JSON_API_V1',
        },
        data: o.data ?? Buffer.from(JSON.stringify({ name: SECRET })).toString('base64'),
        messageId: randomUUID(),
        publishTime: o.publishTime ?? new Date().toISOString(),
      },
      subscription: 'projects/serve-project/subscriptions/keyrotor-push',
    });
  }

  /** everything a request could change: issuer keys, GCP writes, state records */
  async function world() {
    return JSON.stringify({
      openaiKeys: openai.state.keys.map((k) => [k.id, k.deleted]),
      gcpWrites: gcp.log.filter((e) =>
        ['AddSecretVersion', 'UpdateSecret', 'DisableSecretVersion', 'DestroySecretVersion'].includes(e.method),
      ).length,
      gcpAliases: gcp.state.secret(SECRET).aliases,
      local: await stateStore.read('local-app'),
      gcpApp: await stateStore.read('gcp-app'),
    });
  }

  // ------------------------------------------------------------------ tests

  it('GET /healthz answers without authentication; unknown routes 404, wrong methods 405', async () => {
    expect(await call('GET', '/healthz')).toMatchObject({ status: 200, json: { status: 'ok' } });
    expect((await call('GET', '/nope', { auth: await good() })).status).toBe(404);
    expect((await call('GET', '/rotate', { auth: await good() })).status).toBe(405);
    expect((await call('POST', '/healthz')).status).toBe(405);
  });

  it('rejects every unauthenticated or badly authenticated request and changes nothing', async () => {
    const now = Math.floor(Date.now() / 1000);
    const hs256 = await new SignJWT({ email: CALLER, email_verified: true })
      .setProtectedHeader({ alg: 'HS256', kid: 'test-kid-1' })
      .setIssuer('https://accounts.google.com')
      .setAudience(AUD)
      .setSubject('x')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('a-shared-secret-that-is-long-enough-for-hs256'));
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'https://accounts.google.com', aud: AUD, email: CALLER, email_verified: true, exp: now + 300, iat: now, sub: 'x' })).toString('base64url')}.`;
    const cases: Array<[string, string | undefined]> = [
      ['no Authorization header', undefined],
      ['Basic auth', `Basic ${Buffer.from('user:pass').toString('base64')}`],
      ['empty bearer', 'Bearer '],
      ['wrong static token', bearer(`${BEARER.slice(0, -1)}X`)],
      ['static token prefix', bearer(BEARER.slice(0, 20))],
      ['wrong audience', bearer(await token({ aud: 'https://someone-else.a.run.app' }))],
      ['expired', bearer(await token({ iat: now - 7200, exp: now - 3600 }))],
      ['issued in the future', bearer(await token({ iat: now + 3600, exp: now + 7200 }))],
      ['wrong issuer', bearer(await token({ iss: 'https://evil.example.com' }))],
      ['caller not allowed', bearer(await token({ email: 'intruder@evil.iam.gserviceaccount.com' }))],
      ['email not verified', bearer(await token({ verified: false }))],
      ['signed by another key (same kid)', bearer(await token({ key: otherKey }))],
      ['signed by an unknown kid', bearer(await token({ key: otherKey, kid: 'unknown-kid' }))],
      ['HS256 (algorithm confusion)', bearer(hs256)],
      ['alg none', bearer(unsigned)],
      ['garbage token', bearer('not.a.jwt')],
    ];
    const before = await world();
    for (const [name, auth] of cases) {
      for (const [p, body] of [
        ['/rotate', JSON.stringify({ keys: ['local-app', 'gcp-app'], now: true })],
        ['/pubsub', envelope()],
      ] as const) {
        const r = await call('POST', p, { body, ...(auth ? { auth } : {}) });
        expect(r.status, `${name} ${p}`).toBe(401);
        expect(r.json?.error?.code, name).toBe('UNAUTHENTICATED');
        expect(r.headers['www-authenticate']).toContain('Bearer');
        expect(r.text).not.toContain(BEARER);
      }
    }
    expect(await world()).toBe(before);
  });

  it('rejects oversized bodies (declared or streamed) with 413 before doing anything', async () => {
    const before = await world();
    const huge = JSON.stringify({ keys: ['local-app'], now: true, pad: 'x'.repeat(MAX_BODY * 4) });
    expect((await call('POST', '/rotate', { body: huge, auth: await good() })).status).toBe(413);
    expect((await call('POST', '/rotate', { body: huge })).status).toBe(413); // size is checked before auth
    expect((await call('POST', '/pubsub', { body: huge, auth: await good(), chunked: true })).status).toBe(413);
    expect(await world()).toBe(before);
    expect((await call('GET', '/healthz')).status).toBe(200); // still serving
  });

  it('rejects malformed /rotate bodies with 400 and changes nothing', async () => {
    const before = await world();
    for (const body of [
      '{',
      'not json',
      '[]',
      '"x"',
      '{"keys":"local-app"}',
      '{"keys":["nope"],"now":true}',
      '{"leaked":true}',
      '{"keys":["local-app"],"leaked":true}',
      '{"now":true,"extra":1}',
    ]) {
      const r = await call('POST', '/rotate', { body, auth: await good() });
      expect(r.status, body).toBe(400);
      expect(r.text).not.toContain('not json'); // the body is never echoed
    }
    expect(await world()).toBe(before);
  });

  it('garbage Pub/Sub envelopes get 400 and nothing changes', async () => {
    const before = await world();
    const msg = (m: object) =>
      JSON.stringify({
        message: { messageId: '1', publishTime: new Date().toISOString(), ...m },
        subscription: 'projects/p/subscriptions/s',
      });
    const garbage = [
      'not json',
      '{}',
      '[]',
      'null',
      '{"message":null,"subscription":"s"}',
      JSON.stringify({ message: { attributes: { eventType: 'SECRET_ROTATE', secretId: SECRET }, messageId: '1' } }), // no subscription
      msg({}), // no attributes
      msg({ attributes: { eventType: 1, secretId: SECRET } }),
      msg({ attributes: { secretId: SECRET } }),
      msg({ attributes: { eventType: 'SECRET_EXPLODE', secretId: SECRET } }),
      msg({ attributes: { eventType: 'SECRET_ROTATE' } }),
      msg({ attributes: { eventType: 'SECRET_ROTATE', secretId: 'openai-key' } }),
      msg({ attributes: { eventType: 'SECRET_ROTATE', secretId: 'projects/p/secrets/../../x' } }),
      msg({ attributes: { eventType: 'SECRET_ROTATE', secretId: SECRET }, data: '!!!not base64!!!' }),
      msg({ attributes: { eventType: 'SECRET_ROTATE', secretId: SECRET }, publishTime: 'yesterday' }),
      JSON.stringify({ message: { attributes: { eventType: 'SECRET_ROTATE', secretId: SECRET } }, subscription: 's' }), // no messageId
    ];
    for (const body of garbage) {
      const r = await call('POST', '/pubsub', { body, auth: await good() });
      expect(r.status, body).toBe(400);
    }
    expect(await world()).toBe(before);
  });

  it('a valid OIDC request rotates; the bearer token works too; the result is the CLI JSON', async () => {
    const r1 = await call('POST', '/rotate', {
      body: JSON.stringify({ keys: ['local-app'], now: true }),
      auth: await good(),
    });
    expect(r1.status).toBe(200);
    expect(r1.json.results).toHaveLength(1);
    expect(r1.json.results[0]).toMatchObject({ key: 'local-app', outcome: 'rotated', bootstrap: true });
    const r2 = await call('POST', '/rotate', {
      body: JSON.stringify({ keys: ['local-app'], now: true }),
      auth: bearer(BEARER),
    });
    expect(r2.status).toBe(200);
    expect(r2.json.results[0]).toMatchObject({
      key: 'local-app',
      outcome: 'rotated',
      oldKeyId: r1.json.results[0].newKeyId,
    });
    // Cloud Scheduler's empty body: every due key (local-app is not due any more)
    const before = await stateStore.read('local-app');
    const r3 = await call('POST', '/rotate', {
      body: '',
      auth: await good(),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r3.status).toBe(200);
    expect(r3.json.results.find((x: { key: string }) => x.key === 'local-app')).toMatchObject({ outcome: 'skipped' });
    expect((await stateStore.read('local-app'))?.lastRotatedAt).toBe(before?.lastRotatedAt);
  });

  it('GET /metrics needs authentication and serves Prometheus text that counts the rotations', async () => {
    expect((await call('GET', '/metrics')).status).toBe(401);
    await call('POST', '/rotate', { body: JSON.stringify({ keys: ['local-app'], now: true }), auth: bearer(BEARER) });
    const m = await call('GET', '/metrics', { auth: bearer(BEARER) });
    expect(m.status).toBe(200);
    expect(m.text).toMatch(/^# HELP keyrotor_/m);
    expect(m.text).toMatch(/^keyrotor_rotations_total\{[^}]*outcome="rotated"[^}]*\} [1-9]/m);
    expect(m.text).not.toContain(BEARER);
  });

  it('a Pub/Sub SECRET_ROTATE envelope rotates exactly the mapped key; duplicates and other events do not', async () => {
    const localBefore = await stateStore.read('local-app');
    const r1 = await call('POST', '/pubsub', { body: envelope(), auth: await good() });
    expect(r1.status).toBe(200);
    expect(r1.json.results[0]).toMatchObject({ key: 'gcp-app', outcome: 'rotated' });
    const publishTime = new Date().toISOString();
    const r2 = await call('POST', '/pubsub', { body: envelope({ publishTime }), auth: await good() });
    expect(r2.json.results[0]).toMatchObject({
      key: 'gcp-app',
      outcome: 'rotated',
      oldKeyId: r1.json.results[0].newKeyId,
    });
    const served = async () => {
      const [v] = await gcpRaw.accessSecretVersion({ name: `${SECRET}/versions/current` });
      return Buffer.from(v.payload!.data as Uint8Array).toString('utf8');
    };
    expect(await served()).toBe(openai.state.keyById(r2.json.results[0].newKeyId)!.value);
    expect(openai.state.keyById(r1.json.results[0].newKeyId)!.deleted).toBe(true);

    // at-least-once delivery: the same notification again rotates nothing
    const dup = await call('POST', '/pubsub', { body: envelope({ publishTime }), auth: await good() });
    expect(dup.status).toBe(200);
    expect(dup.json.results[0]).toMatchObject({ key: 'gcp-app', outcome: 'skipped' });
    // other Secret Manager events and secrets no key holds are acknowledged, nothing rotates
    const before = await world();
    for (const body of [
      envelope({ eventType: 'SECRET_VERSION_ADD' }),
      envelope({ eventType: 'SECRET_UPDATE' }),
      envelope({ secretId: `projects/${GCP_PROJECT}/secrets/someone-elses` }),
    ]) {
      const r = await call('POST', '/pubsub', { body, auth: await good() });
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ results: [] });
    }
    expect(await world()).toBe(before);
    // a notification naming the project by number maps by the (unique) secret name
    const r3 = await call('POST', '/pubsub', {
      body: envelope({ secretId: 'projects/123456789012/secrets/openai-key' }),
      auth: bearer(BEARER),
    });
    expect(r3.json.results[0]).toMatchObject({ key: 'gcp-app', outcome: 'rotated' });
    // the other key was never touched
    expect(await stateStore.read('local-app')).toEqual(localBefore);
  });

  it('a request past its deadline stops with in_progress (503 for Pub/Sub: redelivered); the next delivery finishes', async () => {
    const short = await start({ requestTimeoutMs: 1_500, safetyMarginMs: 1_000 });
    try {
      openai.setNewKeyPropagation(1_000_000);
      const r1 = await call('POST', '/pubsub', { body: envelope(), auth: await good(), on: short });
      openai.setNewKeyPropagation(0);
      expect(r1.status).toBe(503);
      expect(r1.json.results[0]).toMatchObject({ key: 'gcp-app', outcome: 'in_progress', stage: 'verify' });
      openai.delayPropagation(r1.json.results[0].newKeyId, 0);
      const r2 = await call('POST', '/pubsub', { body: envelope(), auth: await good() });
      expect(r2.status).toBe(200);
      expect(r2.json.results[0]).toMatchObject({ outcome: 'rotated', rotationId: r1.json.results[0].rotationId });
    } finally {
      await short.close();
    }
  });

  it('shutdown (SIGTERM) during a rotation: the request answers in_progress, the next request resumes it', async () => {
    const other = await start({});
    try {
      openai.setNewKeyPropagation(1_000_000);
      const pending = call('POST', '/rotate', {
        body: JSON.stringify({ keys: ['gcp-app'], now: true }),
        auth: bearer(BEARER),
        on: other,
      });
      // wait until the rotation sits in verify
      for (let i = 0; i < 200; i++) {
        const v = ((await stateStore.read('gcp-app'))?.active?.snapshot as { value?: string } | undefined)?.value;
        if (v === 'verify') break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await other.close();
      const r = await pending;
      openai.setNewKeyPropagation(0);
      expect(r.status).toBe(202);
      expect(r.json.results[0]).toMatchObject({ key: 'gcp-app', outcome: 'in_progress', stage: 'verify' });
      openai.delayPropagation(r.json.results[0].newKeyId, 0);
      const again = await call('POST', '/rotate', { body: '{}', auth: bearer(BEARER) });
      expect(again.json.results.find((x: { key: string }) => x.key === 'gcp-app')).toMatchObject({
        outcome: 'rotated',
        rotationId: r.json.results[0].rotationId,
      });
    } finally {
      openai.setNewKeyPropagation(0);
      await other.close();
    }
  });

  it('durable waits: /rotate parks a rotation at its gate (202, waiting); a later /rotate continues it', async () => {
    const dir = tempDir('serve-park');
    const parkCfg = parseConfig(
      `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  park: { after: 200ms }
keys:
  - name: gated
    issuer: { type: local }
    stores: [ { type: file } ]
    health:
      - { type: manual, name: ops, timeout: 60s, interval: 20s }
`,
      path.join(dir, 'rotation.config.yaml'),
      {},
    );
    const parkStore = createFileStateStore(parkCfg.stateDir);
    const server = await startServer({
      config: parkCfg,
      stateStore: parkStore,
      auth: createAuthenticator({ oidc: { audiences: [AUD], emails: [CALLER], jwksUrl }, bearer: Secret.of(BEARER) }),
      logger: await createLogger({ pretty: false, level: 'debug', destination: sink }),
      env: { ...process.env, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) },
      host: '127.0.0.1',
      port: 0,
    });
    try {
      const body = JSON.stringify({ keys: ['gated'], now: true });
      const r1 = await call('POST', '/rotate', { body, auth: bearer(BEARER), on: server });
      expect(r1.status).toBe(202);
      const parked = r1.json.results[0];
      expect(parked).toMatchObject({ key: 'gated', outcome: 'waiting', stage: 'confirm' });
      // the scheduled /rotate before its wake time leaves it alone (still 202: not finished)
      const r2 = await call('POST', '/rotate', { body: '{}', auth: bearer(BEARER), on: server });
      expect(r2.status).toBe(202);
      expect(r2.json.results[0]).toMatchObject({ outcome: 'waiting', untouched: true, rotationId: parked.rotationId });
      // confirmed (the decision and the wake that `keyrotor confirm` makes): the next /rotate finishes it
      const { decisionFile, DECISION_FORMAT } = await import('../../providers/health/manual/manual.decision.ts');
      const { wakeParked } = await import('../../src/app/run/wake.ts');
      const { mkdirSync, writeFileSync } = await import('node:fs');
      const file = decisionFile(parkCfg.stateDir, 'gated', parked.rotationId);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(
        file,
        JSON.stringify({
          format: DECISION_FORMAT,
          key: 'gated',
          rotationId: parked.rotationId,
          decision: 'confirm',
          at: new Date().toISOString(),
          by: 'ops@laptop',
        }),
      );
      expect(await wakeParked(parkStore, 'gated', parked.rotationId, Date.now())).toBe('woken');
      const r3 = await call('POST', '/rotate', { body: '{}', auth: bearer(BEARER), on: server });
      expect(r3.status).toBe(200);
      expect(r3.json.results[0]).toMatchObject({ outcome: 'rotated', rotationId: parked.rotationId });
    } finally {
      await server.close();
    }
  });

  it('compares bearer tokens in constant time over digests (any length)', () => {
    expect(constantTimeEquals('abc', 'abc')).toBe(true);
    expect(constantTimeEquals('abc', 'abd')).toBe(false);
    expect(constantTimeEquals('abc', 'abcd')).toBe(false);
    expect(constantTimeEquals('', 'x')).toBe(false);
    expect(() => createAuthenticator({})).toThrow(/no authentication configured/);
  });
});
