/**
 * The GCP Secret Manager store, driven through the official @google-cloud/secret-manager client over
 * real gRPC against the loopback fake in test/fakes/gcp-secret-manager.ts. A fresh secret per test.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { inspect } from 'node:util';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { crc32c, startGcpFake, type GcpFake } from '../fakes/gcp-secret-manager.ts';
import { describeStoreContract, meta, value } from './store-contract.ts';
import { createGcpSecretManagerStore } from '../../providers/stores/gcp-secret-manager/index.ts';
import type { GcpSecretManagerStoreDeps } from '../../providers/stores/gcp-secret-manager/index.ts';
import { gcpSecretManagerStoreSchema } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import type { Logger, ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { CANARY } from '../canary.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { linesLogger } from '../helpers/logger.ts';

const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';
const R3 = 'rot-20261103t000000z-00000003';
const PROJECT = 'p';

let fake: GcpFake;
let raw: SecretManagerServiceClient;
let stateDir: string;
const logLines: string[] = [];
const errorsSeen: string[] = [];
const open: Array<{ close(): Promise<void> }> = [];
let seq = 0;

const logger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);

function ctx(): ProviderContext {
  return {
    keyName: 'demo',
    stateDir,
    configDir: stateDir,
    logger: logger(),
    clock: systemClock,
    env: {},
    providerState: { get: () => undefined, set: async () => {} },
  };
}

const nameOf = (id: string) => `projects/${PROJECT}/secrets/${id}`;
/** the side secret staged values live in (never read by consumers) */
const sideId = (id: string) => `${id}-keyrotor-pending`;
const sideOf = (id: string) => nameOf(sideId(id));
/** `pending-<n>` -> n (the side version a staged value was added as) */
const sideVersion = (versionId: string) => Number(/^pending-(\d+)$/.exec(versionId)?.[1] ?? NaN);

async function freshSecret(): Promise<string> {
  const id = `secret-${++seq}`;
  await raw.createSecret({ parent: `projects/${PROJECT}`, secretId: id, secret: { replication: { automatic: {} } } });
  return id;
}

async function makeStore(secret: string, opts?: GcpSecretManagerStoreDeps, extra: Record<string, unknown> = {}) {
  const cfg = gcpSecretManagerStoreSchema.parse({
    ...extra,
    type: 'gcp-secret-manager',
    project: PROJECT,
    secret,
    apiEndpoint: '127.0.0.1',
    port: fake.port,
    insecure: true,
  });
  const store = await createGcpSecretManagerStore(cfg, ctx(), opts);
  open.push(store);
  return store;
}

async function failure(p: Promise<unknown>): Promise<KeyrotorError> {
  const e = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(KeyrotorError);
  const k = e as KeyrotorError;
  errorsSeen.push(inspect(k, { depth: 6 }), JSON.stringify(k.toRecord()));
  return k;
}

async function bootstrap(store: SecretStore) {
  await store.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
  await store.promote(R1);
}

async function aliasesOf(id: string): Promise<Record<string, string>> {
  const [s] = await raw.getSecret({ name: nameOf(id) });
  return Object.fromEntries(Object.entries(s.versionAliases ?? {}).map(([k, v]) => [k, String(v)]));
}

async function rawRead(id: string, ref: string): Promise<string> {
  const [res] = await raw.accessSecretVersion({ name: `${nameOf(id)}/versions/${ref}` });
  return Buffer.from(res.payload?.data ?? new Uint8Array()).toString('utf8');
}

const count = (method: string, from: number) => fake.log.slice(from).filter((e) => e.method === method).length;

beforeAll(async () => {
  process.env.METADATA_SERVER_DETECTION = 'none';
  stateDir = tempDir('gcp-store');
  fake = await startGcpFake();
  raw = new SecretManagerServiceClient({
    apiEndpoint: '127.0.0.1',
    port: fake.port,
    sslCreds: grpc.credentials.createInsecure(),
    universeDomain: 'googleapis.com',
  });
});

afterEach(async () => {
  fake.resetKnobs();
  await Promise.all(open.splice(0).map((s) => s.close()));
});

afterAll(async () => {
  // everything observable goes to the canary scan: store logs, errors, request log, annotations
  capture('gcp-store-log.jsonl', logLines.join('\n'));
  capture('gcp-store-errors.txt', errorsSeen.join('\n'));
  capture('gcp-fake-requests.json', JSON.stringify(fake?.log ?? []));
  capture(
    'gcp-fake-annotations.json',
    JSON.stringify(
      [...(fake?.state.secrets.values() ?? [])].map((s) => ({
        name: s.name,
        annotations: s.annotations,
        aliases: s.aliases,
      })),
    ),
  );
  await raw?.close();
  await fake?.close();
});

describeStoreContract('gcp-secret-manager (grpc fake), default reader `latest`', async () => {
  const id = await freshSecret();
  return { store: await makeStore(id), defaultRead: () => rawRead(id, 'latest'), reopen: () => makeStore(id) };
});

describeStoreContract('gcp-secret-manager (grpc fake), alias reader `current`', async () => {
  const id = await freshSecret();
  return { store: await makeStore(id), defaultRead: () => rawRead(id, 'current'), reopen: () => makeStore(id) };
});

describe('gcp-secret-manager store', () => {
  it('stages in a side secret: `latest` and `current` serve the old key until promote, the new one after, the old one again after demote', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    // the side secret was created on the first stage, with the main secret's replication
    const [side] = await raw.getSecret({ name: sideOf(id) });
    expect(side.replication?.automatic).toBeTruthy();
    expect(side.annotations?.['keyrotor.pending-of']).toBe(nameOf(id));

    const { versionId } = await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(versionId).toBe('pending-2');
    // int64 alias targets arrive as strings on the client side
    expect(await aliasesOf(id)).toEqual({ current: '1' });
    expect(await aliasesOf(sideId(id))).toEqual({ pending: '2' });
    expect(await rawRead(id, 'current')).toBe(value(1).reveal());
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal()); // the unverified value is not in the main secret
    expect(await rawRead(sideId(id), 'pending')).toBe(value(2).reveal());
    expect(fake.state.secret(nameOf(id)).versions.size).toBe(1);

    await store.promote(R2);
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });
    expect(await rawRead(id, 'current')).toBe(value(2).reveal());
    expect(await rawRead(id, 'latest')).toBe(value(2).reveal());
    expect(await rawRead(id, 'previous')).toBe(value(1).reveal());
    expect(await aliasesOf(sideId(id))).toEqual({});
    expect(fake.state.secret(sideOf(id)).versions.get(2)?.state).toBe('DISABLED'); // the copy lives in main now
    expect(fake.state.secret(sideOf(id)).annotations['keyrotor.pending-rotation']).toBeUndefined();
    expect((await store.readCurrent())?.versionId).toBe(versionId);

    const [secret] = await raw.getSecret({ name: nameOf(id) });
    const annotations = secret.annotations ?? {};
    expect(JSON.parse(annotations['keyrotor.v2']!)).toMatchObject({
      r: R2,
      k: 'key_2',
      f: fingerprint(value(2)),
      o: 1,
      q: null,
      s: 2,
    });
    expect(JSON.stringify(annotations)).not.toContain(CANARY);
    expect(JSON.stringify(fake.state.secret(sideOf(id)).annotations)).not.toContain(CANARY);
    // payloads went up with a CRC32C
    expect(fake.state.secret(nameOf(id)).versions.get(2)?.clientChecksum).toBe(true);

    // rollback: the old value comes back as the NEWEST version, and only then is the bad one disabled
    await store.demote(R2);
    expect(await aliasesOf(id)).toEqual({ current: '3' });
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
    expect(await rawRead(id, 'current')).toBe(value(1).reveal());
    const versions = fake.state.secret(nameOf(id)).versions;
    expect(versions.get(2)?.state).toBe('DISABLED');
    expect(versions.get(1)?.state).toBe('ENABLED');
    const restored = JSON.parse((await raw.getSecret({ name: nameOf(id) }))[0].annotations!['keyrotor.v3']!);
    expect(restored).toMatchObject({ r: R1, k: 'key_1', rb: R2, from: 1 });
    expect((await store.readCurrent())?.meta.issuerKeyId).toBe('key_1');
    const mark = fake.log.length;
    await store.demote(R2);
    await store.unstage(R2);
    expect(count('AddSecretVersion', mark)).toBe(0);
    expect(await aliasesOf(id)).toEqual({ current: '3' });
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
  });

  it('a stage retried after a lost AddSecretVersion response adopts that version instead of adding another', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    const mark = fake.log.length;
    fake.failNext('AddSecretVersion', { code: grpc.status.UNAVAILABLE, afterApply: true, message: 'connection reset' });
    const err = await failure(store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }));
    expect(err.code).toBe('STORE_UNAVAILABLE');
    expect(err.retryable).toBe(true);
    expect(fake.state.enabledVersionsWith(sideOf(id), value(2).reveal())).toEqual([2]); // the add happened
    expect(await aliasesOf(id)).toEqual({ current: '1' });
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());

    // the marker was taken before the add: nobody else can stage meanwhile
    const other = await makeStore(id);
    const locked = await failure(other.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }));
    expect(locked.code).toBe('LOCKED');

    const again = await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(again.versionId).toBe('pending-2');
    expect(count('AddSecretVersion', mark)).toBe(1);
    expect(fake.state.enabledVersionsWith(sideOf(id), value(2).reveal())).toEqual([2]);
    expect((await store.readPending(R2))?.meta.issuerKeyId).toBe('key_2');
    await store.promote(R2);
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });
    expect(fake.state.secret(nameOf(id)).versions.size).toBe(2);
    expect(fake.state.secret(sideOf(id)).versions.size).toBe(2);
  });

  it('extra copies of the value from repeated lost adds are destroyed; only one version is usable (paged listing)', async () => {
    const id = await freshSecret();
    const store = await makeStore(id, { listPageSize: 2 });
    await bootstrap(store);
    fake.failNext('AddSecretVersion', { code: grpc.status.DEADLINE_EXCEEDED, afterApply: true });
    expect((await failure(store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }))).code).toBe(
      'STORE_UNAVAILABLE',
    );
    // two more copies (e.g. from other lost attempts) and one unrelated version someone else added
    const data = Buffer.from(value(2).reveal());
    await raw.addSecretVersion({ parent: sideOf(id), payload: { data } });
    await raw.addSecretVersion({ parent: sideOf(id), payload: { data } });
    await raw.addSecretVersion({ parent: sideOf(id), payload: { data: Buffer.from('unrelated-value') } });

    const mark = fake.log.length;
    const { versionId } = await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(versionId).toBe('pending-2'); // the first copy
    expect(count('AddSecretVersion', mark)).toBe(0);
    expect(count('ListSecretVersions', mark)).toBeGreaterThanOrEqual(2); // crossed pages
    const versions = fake.state.secret(sideOf(id)).versions;
    expect(versions.get(3)?.state).toBe('DESTROYED');
    expect(versions.get(4)?.state).toBe('DESTROYED');
    expect(versions.get(5)?.state).toBe('ENABLED'); // not ours: untouched
    expect(fake.state.enabledVersionsWith(sideOf(id), value(2).reveal())).toEqual([2]);
    expect(await aliasesOf(sideId(id))).toEqual({ pending: '2' });
    expect(await aliasesOf(id)).toEqual({ current: '1' });
  });

  it('a stage retried with a different value (the key was re-issued) retires the abandoned copy', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    fake.failNext('AddSecretVersion', { code: grpc.status.UNAVAILABLE, afterApply: true });
    await failure(store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }));
    const { versionId } = await store.stage({ rotationId: R2, secret: value(22), meta: meta(R2, 22) });
    expect(versionId).toBe('pending-3');
    expect(fake.state.secret(sideOf(id)).versions.get(2)?.state).toBe('DESTROYED');
    expect((await store.readPending(R2))?.secret.reveal()).toBe(value(22).reveal());
  });

  it('unstage after a lost add disables the orphan and releases the lock', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    fake.failNext('AddSecretVersion', { code: grpc.status.UNAVAILABLE, afterApply: true });
    await failure(store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }));
    await store.unstage(R2);
    await store.unstage(R2);
    expect(fake.state.secret(sideOf(id)).versions.get(2)?.state).toBe('DISABLED');
    expect(fake.state.secret(sideOf(id)).annotations['keyrotor.pending-rotation']).toBeUndefined();
    // the disabled orphan is in the side secret: `latest` and `current` of the main secret both work
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
    expect(await rawRead(id, 'current')).toBe(value(1).reveal());
    await store.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
    await store.promote(R3);
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });
    expect(await rawRead(id, 'latest')).toBe(value(3).reveal());
  });

  it('stale etag: a concurrent alias change by another writer is retried and preserved', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const mark = fake.log.length;
    fake.beforeNext('UpdateSecret', async () => {
      const [s] = await raw.getSecret({ name: nameOf(id) });
      await raw.updateSecret({
        secret: { name: nameOf(id), etag: s.etag, versionAliases: { ...s.versionAliases, blue: 1 } },
        updateMask: { paths: ['version_aliases'] },
      });
    });
    await store.promote(R2);
    const updates = fake.log
      .slice(mark)
      .filter((e) => e.method === 'UpdateSecret')
      .map((e) => e.code);
    expect(updates).toContain('ABORTED');
    expect(updates.at(-1)).toBe('OK');
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1', blue: '1' });
  });

  it('a conflict that never clears is a retryable STORE_CONFLICT; the retry adopts the copy; a rolled-back promote is not redone', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    fake.failNext('UpdateSecret', { code: grpc.status.ABORTED, count: 10 });
    const busy = await failure(store.promote(R2));
    expect(busy.code).toBe('STORE_CONFLICT');
    expect(busy.retryable).toBe(true);
    fake.resetKnobs();
    expect(await aliasesOf(id)).toEqual({ current: '1' });
    // the copy was added (the value is verified): `latest` serves the new key, `current` the old one
    expect(await rawRead(id, 'latest')).toBe(value(2).reveal());
    expect(await rawRead(id, 'current')).toBe(value(1).reveal());
    const mark = fake.log.length;
    await store.promote(R2);
    expect(count('AddSecretVersion', mark)).toBe(0); // found again by fingerprint
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });

    await store.demote(R2);
    const moved = await failure(store.promote(R2));
    expect(moved.code).toBe('STORE_CONFLICT');
    expect(moved.retryable).toBe(false);
    expect(await aliasesOf(id)).toEqual({ current: '3' });
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
  });

  it("another rotation's pending stage blocks staging with LOCKED naming it, also when both race", async () => {
    const id = await freshSecret();
    const a = await makeStore(id);
    await bootstrap(a);
    await a.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const b = await makeStore(id);
    const locked = await failure(b.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }));
    expect(locked.code).toBe('LOCKED');
    expect(locked.message).toContain(R2);
    expect(locked.hint).toContain('keyrotor.pending-rotation');
    await a.unstage(R2);
    await b.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
    await b.unstage(R3);

    // two rotations staging at the same moment: the etag lets exactly one take the lock
    fake.setLatency('GetSecret', 30);
    const results = await Promise.allSettled([
      a.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }),
      b.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect((lost.reason as KeyrotorError).code).toBe('LOCKED');
    expect(fake.log.some((e) => e.method === 'UpdateSecret' && e.code === 'ABORTED')).toBe(true);
  });

  it('a stage retried after promote returns the same version even while the next rotation holds the lock', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    await store.promote(R2);
    await store.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
    const mark = fake.log.length;
    expect((await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) })).versionId).toBe('pending-2');
    expect(count('UpdateSecret', mark) + count('AddSecretVersion', mark)).toBe(0);
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });
    expect(await aliasesOf(sideId(id))).toEqual({ pending: '3' });
    // and a retried promote of R2 is a no-op that leaves R3's stage alone
    await store.promote(R2);
    expect(count('UpdateSecret', mark) + count('AddSecretVersion', mark)).toBe(0);
    expect(await aliasesOf(id)).toEqual({ current: '2', previous: '1' });
    expect(await aliasesOf(sideId(id))).toEqual({ pending: '3' });
    expect((await store.readPending(R3))?.secret.reveal()).toBe(value(3).reveal());
  });

  it('the side secret: created once (a race is fine), or pre-created with createPendingSecret: false; a denied create names both ways', async () => {
    // createPendingSecret: false and no side secret: preflight says what to create, and nothing is written
    const id = await freshSecret();
    const strict = await makeStore(id, undefined, { createPendingSecret: false });
    const mark = fake.log.length;
    const missing = await failure(strict.check());
    expect(missing.code).toBe('STORE_NOT_FOUND');
    expect(missing.message).toContain(sideOf(id));
    expect(missing.hint).toContain(`gcloud secrets create ${sideId(id)}`);
    expect(await failure(strict.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }))).toMatchObject({
      code: 'STORE_NOT_FOUND',
    });
    expect(count('CreateSecret', mark) + count('AddSecretVersion', mark)).toBe(0);
    // pre-created under a custom name: used as is
    await raw.createSecret({
      parent: `projects/${PROJECT}`,
      secretId: `${id}-staging`,
      secret: { replication: { automatic: {} } },
    });
    const custom = await makeStore(id, undefined, { createPendingSecret: false, pendingSecret: `${id}-staging` });
    await custom.check();
    await bootstrap(custom);
    expect(fake.state.secret(nameOf(`${id}-staging`)).versions.size).toBe(1);
    expect(fake.state.secrets.has(sideOf(id))).toBe(false);
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
    expect(() =>
      gcpSecretManagerStoreSchema.parse({
        type: 'gcp-secret-manager',
        project: 'p',
        secret: 's',
        pendingSecret: 'a/b',
      }),
    ).toThrow(/secret id/);

    // create denied: STORE_ACCESS_DENIED naming the permission and the way around it
    const id2 = await freshSecret();
    const s2 = await makeStore(id2);
    fake.deny('secretmanager.secrets.create');
    const denied = await failure(s2.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }));
    expect(denied.code).toBe('STORE_ACCESS_DENIED');
    expect(denied.message).toContain('secretmanager.secrets.create');
    expect(denied.hint).toContain('createPendingSecret: false');
    fake.allow('secretmanager.secrets.create');

    // two instances creating it at the same moment: one creates, the other uses it
    const a = await makeStore(id2);
    const b = await makeStore(id2);
    fake.setLatency('GetSecret', 30);
    const results = await Promise.allSettled([
      a.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }),
      b.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }),
    ]);
    expect(
      fake.log.filter((e) => e.method === 'CreateSecret' && e.code === 'ALREADY_EXISTS').length,
    ).toBeLessThanOrEqual(1);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1); // the other is LOCKED
    expect(fake.state.secret(sideOf(id2)).annotations['keyrotor.pending-of']).toBe(nameOf(id2));
  });

  it('a promote that reached the main secret but failed to release the side lock (and a failed rollback) does not block the next stage', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    await store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    // every UpdateSecret after promote's update of the main secret fails (the side release, then demote's)
    const stop = fake.observe((e) => {
      if (e.method === 'UpdateSecret' && e.resource === nameOf(id) && e.code === 'OK')
        fake.failNext('UpdateSecret', { code: grpc.status.INTERNAL, count: 50 });
    });
    expect((await failure(store.promote(R2))).code).toBe('STORE_UNAVAILABLE');
    stop();
    expect(await rawRead(id, 'latest')).toBe(value(2).reveal());
    expect(await rawRead(id, 'current')).toBe(value(2).reveal());
    expect(fake.state.secret(sideOf(id)).annotations['keyrotor.pending-rotation']).toContain(R2);
    await failure(store.demote(R2)); // still failing: needs_attention in the workflow
    fake.resetKnobs();
    // the failed rollback got as far as re-adding the old key as the newest version; nothing was disabled
    expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
    expect(await rawRead(id, 'current')).toBe(value(2).reveal());
    // the operator's repair (or the next rotation) stages: R2's stale lock is released, not LOCKED
    const next = await makeStore(id);
    await next.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
    expect(fake.state.secret(sideOf(id)).annotations['keyrotor.pending-rotation']).toContain(R3);
    await next.promote(R3);
    expect(await rawRead(id, 'latest')).toBe(value(3).reveal());
    expect(await rawRead(id, 'current')).toBe(value(3).reveal());
  });

  it('an unknown secret is STORE_NOT_FOUND with a clear message', async () => {
    const store = await makeStore('nope');
    for (const p of [
      store.check(),
      store.readCurrent(),
      store.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }),
    ]) {
      const err = await failure(p);
      expect(err.code).toBe('STORE_NOT_FOUND');
      expect(err.retryable).toBe(false);
      expect(err.message).toBe('secret projects/p/secrets/nope does not exist; create it first');
    }
    expect(store.label).toBe('gcp-secret-manager:projects/p/secrets/nope');
  });

  it('PERMISSION_DENIED maps to STORE_ACCESS_DENIED naming the permission', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['secretmanager.versions.add', () => store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) })],
      ['secretmanager.secrets.update', () => store.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) })],
      ['secretmanager.versions.access', () => store.readCurrent()],
      ['secretmanager.secrets.get', () => store.check()],
    ];
    for (const [permission, call] of cases) {
      fake.deny(permission);
      const err = await failure(call());
      fake.allow(permission);
      expect(err.code).toBe('STORE_ACCESS_DENIED');
      expect(err.retryable).toBe(false);
      expect(err.message).toContain(permission);
      expect(err.message).toContain(nameOf(id));
      await store.unstage(R2); // the denied add left R2's marker: clean up before the next case
    }
  });

  it('transient gRPC codes are retryable STORE_UNAVAILABLE, and no error ever carries a value', async () => {
    const id = await freshSecret();
    const store = await makeStore(id);
    await bootstrap(store);
    const echo = `backend echoed ${CANARY}-store-value-1 back`;
    for (const code of [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]) {
      fake.failNext('GetSecret', { code, message: echo });
      const err = await failure(store.check());
      expect(err.code).toBe('STORE_UNAVAILABLE');
      expect(err.retryable).toBe(true);
    }
    fake.failNext('AccessSecretVersion', { code: grpc.status.INTERNAL, message: echo });
    expect((await failure(store.readCurrent())).code).toBe('STORE_UNAVAILABLE');
    fake.failNext('AccessSecretVersion', { code: grpc.status.PERMISSION_DENIED, message: echo });
    expect((await failure(store.readCurrent())).code).toBe('STORE_ACCESS_DENIED');
    fake.failNext('UpdateSecret', { code: grpc.status.INVALID_ARGUMENT, message: echo });
    expect((await failure(store.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }))).retryable).toBe(false);
    for (const text of errorsSeen) expect(text).not.toContain(CANARY);
    expect(logLines.join('\n')).not.toContain(CANARY);
  });

  it('insecure is refused for a non-loopback endpoint', async () => {
    const cfg = gcpSecretManagerStoreSchema.parse({
      type: 'gcp-secret-manager',
      project: PROJECT,
      secret: 's',
      apiEndpoint: 'secretmanager.googleapis.com',
      insecure: true,
    });
    const err = await failure(createGcpSecretManagerStore(cfg, ctx()));
    expect(err.code).toBe('CONFIG_INVALID');
  });
});

// ---------------------------------------------------------------- well-formed answers missing fields (issue 5)

describe('gcp-secret-manager store: OK answers missing fields', () => {
  /** never success with missing data: an honest code, one line, no value anywhere in the error */
  async function honest(
    p: Promise<unknown>,
    stage?: string,
    codes = ['STORE_UNAVAILABLE', 'STORE_CORRUPT'],
  ): Promise<KeyrotorError> {
    const e = await failure(p);
    expect(codes).toContain(e.code);
    if (e.code === 'STORE_UNAVAILABLE') expect(e.retryable).toBe(true);
    expect(e.message).not.toMatch(/[\r\n]/);
    if (stage) expect(e.stage).toBe(stage);
    const printed = [
      e.message,
      e.hint ?? '',
      inspect(e, { depth: 10, showHidden: true }),
      JSON.stringify(e.toRecord()),
    ].join('\n');
    expect(printed).not.toContain(CANARY.slice(0, 16));
    return e;
  }
  /** enabled copies of value(n) in the side secret */
  const enabledWith = (id: string, n: number) => fake.state.enabledVersionsWith(sideOf(id), value(n).reveal());
  /** usable copies of value(n) anywhere (side and main secret) */
  const usable = (id: string, n: number) =>
    enabledWith(id, n).length + fake.state.enabledVersionsWith(nameOf(id), value(n).reveal()).length;

  const SECRET_ALTERS: Array<[string, (r: any) => unknown]> = [
    ['no etag', (r) => ({ ...r, etag: '' })],
    ['an empty name', (r) => ({ ...r, name: '' })],
  ];
  for (const [what, alter] of SECRET_ALTERS) {
    it(`GetSecret answered with ${what}: check, reads, stage and promote refuse it, then converge`, async () => {
      const id = await freshSecret();
      const s = await makeStore(id);
      await bootstrap(s);
      fake.alterNext('GetSecret', alter);
      await honest(s.check(), 'preflight');
      fake.alterNext('GetSecret', alter);
      await honest(s.readCurrent());
      fake.alterNext('GetSecret', alter);
      await honest(s.describe());
      const mark = fake.log.length;
      fake.alterNext('GetSecret', alter);
      await honest(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }), 'stage');
      expect(count('UpdateSecret', mark) + count('AddSecretVersion', mark)).toBe(0); // no blind (etag-less) write
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      const t = await makeStore(id);
      fake.alterNext('GetSecret', alter);
      await honest(t.promote(R2), 'promote');
      await t.promote(R2);
      expect(await rawRead(id, 'current')).toBe(value(2).reveal());
      expect(await rawRead(id, 'latest')).toBe(value(2).reveal());
      expect(usable(id, 2)).toBe(1);
    });
  }

  for (const skipApply of [false, true]) {
    it(`UpdateSecret answered without etag (${skipApply ? 'not applied' : 'applied'}): stage and promote refuse it, retries converge`, async () => {
      const id = await freshSecret();
      const s = await makeStore(id);
      await bootstrap(s);
      const alter = (r: any) => (skipApply ? { name: nameOf(id) } : { ...r, etag: '' });
      fake.alterNext('UpdateSecret', alter, { skipApply });
      await honest(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }), 'stage');
      const { versionId } = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      expect(enabledWith(id, 2)).toEqual([sideVersion(versionId)]);
      const t = await makeStore(id);
      fake.alterNext('UpdateSecret', alter, { skipApply });
      await honest(t.promote(R2), 'promote');
      await t.promote(R2);
      expect(await rawRead(id, 'current')).toBe(value(2).reveal());
      expect(await rawRead(id, 'latest')).toBe(value(2).reveal());
      expect(usable(id, 2)).toBe(1);
      expect((await aliasesOf(sideId(id))).pending).toBeUndefined();
      fake.alterNext('UpdateSecret', alter, { skipApply });
      await honest(t.demote(R2), 'demote');
      await t.demote(R2);
      expect(await rawRead(id, 'current')).toBe(value(1).reveal());
      expect(await rawRead(id, 'latest')).toBe(value(1).reveal());
      expect(usable(id, 2)).toBe(0);
    });
  }

  it('AccessSecretVersion answered without payload: reads refuse it (never an empty value), then read the value', async () => {
    const id = await freshSecret();
    const s = await makeStore(id);
    await bootstrap(s);
    fake.alterNext('AccessSecretVersion', (r) => ({ name: r.name }));
    await honest(s.readCurrent());
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
    await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const t = await makeStore(id);
    fake.alterNext('AccessSecretVersion', (r) => ({ name: r.name, payload: null }));
    await honest(t.readPending(R2));
    expect((await t.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
    // a version answered under another name is not this version
    fake.alterNext('AccessSecretVersion', (r) => ({ ...r, name: '' }));
    await honest(t.readCurrent());
  });

  it('AccessSecretVersion without payload while a retried stage looks for its lost add: no second copy is added', async () => {
    const id = await freshSecret();
    const s = await makeStore(id);
    await bootstrap(s);
    const mark = fake.log.length;
    fake.failNext('AddSecretVersion', { code: grpc.status.UNAVAILABLE, afterApply: true, message: 'connection reset' });
    await failure(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }));
    fake.alterNext('AccessSecretVersion', (r) => ({ name: r.name }));
    await honest(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }), 'stage');
    const { versionId } = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(count('AddSecretVersion', mark)).toBe(1);
    expect(enabledWith(id, 2)).toEqual([sideVersion(versionId)]);
  });

  it('AddSecretVersion answered with an empty name (applied): stage refuses it; the retry adopts that version', async () => {
    const id = await freshSecret();
    const s = await makeStore(id);
    await bootstrap(s);
    fake.alterNext('AddSecretVersion', (r) => ({ ...r, name: '' }));
    const e = await honest(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }), 'stage');
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE', retryable: true }); // the add happened: a retry must be allowed
    const { versionId } = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(enabledWith(id, 2)).toEqual([sideVersion(versionId)]);
    await s.promote(R2);
    expect(await rawRead(id, 'current')).toBe(value(2).reveal());
  });

  it('an alias pointing at a version that does not exist is never read as an empty store', async () => {
    const id = await freshSecret();
    const s = await makeStore(id);
    await bootstrap(s);
    const alter = (r: any) => ({ ...r, version_aliases: { ...r.version_aliases, current: '99' } });
    fake.alterNext('GetSecret', alter);
    const e = await honest(s.readCurrent(), undefined, ['STORE_UNAVAILABLE', 'STORE_CORRUPT']);
    expect(e.message).toContain('99');
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
  });
});

describe('gcp fake (raw client)', () => {
  it('checks data_crc32c, paginates versions, resolves aliases and answers NOT_FOUND as a gRPC status', async () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283); // the CRC-32C check value
    const id = await freshSecret();
    const bad = await raw
      .addSecretVersion({ parent: nameOf(id), payload: { data: Buffer.from('abc'), dataCrc32c: 1 } })
      .then(
        () => null,
        (e: { code?: number }) => e.code,
      );
    expect(bad).toBe(grpc.status.INVALID_ARGUMENT);
    for (let i = 0; i < 5; i++)
      await raw.addSecretVersion({ parent: nameOf(id), payload: { data: Buffer.from(`v${i}`) } });
    const seen: string[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const [versions, , res] = await raw.listSecretVersions(
        { parent: nameOf(id), pageSize: 2, pageToken },
        { autoPaginate: false },
      );
      seen.push(...versions.map((v) => v.name?.split('/').pop() ?? '?'));
      pageToken = res?.nextPageToken ?? '';
      pages++;
    } while (pageToken);
    expect(seen).toEqual(['5', '4', '3', '2', '1']); // newest first
    expect(pages).toBe(3);
    const [s] = await raw.getSecret({ name: nameOf(id) });
    await raw.updateSecret({
      secret: { name: nameOf(id), etag: s.etag, versionAliases: { current: 3 } },
      updateMask: { paths: ['version_aliases'] },
    });
    expect(await rawRead(id, 'current')).toBe('v2');
    expect(await rawRead(id, 'latest')).toBe('v4');
    const stale = await raw
      .updateSecret({
        secret: { name: nameOf(id), etag: s.etag, annotations: { a: 'b' } },
        updateMask: { paths: ['annotations'] },
      })
      .then(
        () => null,
        (e: { code?: number }) => e.code,
      );
    expect(stale).toBe(grpc.status.ABORTED);
    const missing = await raw.getSecret({ name: nameOf('missing') }).then(
      () => null,
      (e: { code?: number }) => e.code,
    );
    expect(missing).toBe(grpc.status.NOT_FOUND);
  });
});
