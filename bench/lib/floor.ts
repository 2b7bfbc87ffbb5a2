/**
 * The floor of P1: a straight-line script that makes the provider calls a rotation cannot avoid, with
 * the same SDKs and the same client settings keyrotor uses, in the same process, against the same
 * loopback fakes. No workflow, no state file, no lease, no retries, no checks beyond what is needed.
 * Its request counts are the documented minimum of P2 (asserted by the bench, reported beside it).
 *
 * One floor rotation of an existing key:
 *   store   read current            (the old value, to check it is dead at the end, and its key id)
 *   issuer  create                  (same body as keyrotor: name + expires_in_seconds, maxRetries 0)
 *   store   write the new value as pending (not what consumers read)
 *   issuer  verify new              (GET /v1/models with the new key)
 *   store   promote                 (pending -> current, old current -> previous)
 *   issuer  gate check              (one issuer smoke test, as the keyrotor key has one gate)
 *   issuer  delete old
 *   issuer  verify old is rejected  (GET /v1/models with the old key -> 401 invalid_api_key)
 * Clients are built per rotation, as one keyrotor run builds its providers per key.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import OpenAI from 'openai';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import { SecretClient, type SecretClientOptions } from '@azure/keyvault-secrets';
import { createGcpClient } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.store.ts';
import type { GcpSecretManagerStoreConfig } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.schema.ts';
import {
  deriveKeys,
  mac,
  macEquals,
  seal,
  unseal,
  versionAad,
  type Sealed,
} from '../../providers/stores/file/file.crypto.ts';
import { writeFileAtomic } from '../../src/core/fs.ts';

export type StoreKind = 'file' | 'aws' | 'gcp' | 'azure';

export interface FloorIssuer {
  baseURL: string;
  adminKey: string;
  project: string;
  serviceAccount: string;
  expiresInSeconds: number;
  timeoutMs: number;
}

interface Old {
  keyId: string;
  value: string;
}

/** the admin client exactly as the issuer builds it (minus keyrotor's rate-limited fetch) */
function adminClient(i: FloorIssuer): OpenAI {
  return new OpenAI({
    apiKey: null,
    adminAPIKey: i.adminKey,
    baseURL: i.baseURL,
    organization: null,
    project: null,
    webhookSecret: null,
    timeout: i.timeoutMs,
    maxRetries: 2,
    logLevel: 'off',
  });
}

/** the project-key client exactly as the issuer's verify builds it */
async function check(i: FloorIssuer, value: string): Promise<'ok' | 'invalid'> {
  const c = new OpenAI({
    apiKey: value,
    adminAPIKey: null,
    baseURL: i.baseURL,
    organization: null,
    project: null,
    webhookSecret: null,
    timeout: i.timeoutMs,
    maxRetries: 0,
    logLevel: 'off',
  });
  try {
    await c.models.list({ maxRetries: 0 });
    return 'ok';
  } catch (e) {
    if (e instanceof OpenAI.APIError && e.status === 401) return 'invalid';
    throw e;
  }
}

async function create(admin: OpenAI, i: FloorIssuer, name: string): Promise<Old> {
  const r = await admin.admin.organization.projects.serviceAccounts.apiKeys.create(
    i.serviceAccount,
    { project_id: i.project, name, expires_in_seconds: i.expiresInSeconds },
    { maxRetries: 0 },
  );
  if (!r.value) throw new Error('floor: create answered without a value');
  return { keyId: r.id, value: r.value };
}

/** A store driven straight through its SDK in the minimal number of calls for its layout. */
export interface FloorStore {
  readonly kind: StoreKind;
  /** minimal requests per rotation, and what they are */
  readonly minimum: { requests: number; calls: string[] };
  /** put a first key in place (setup, not timed) */
  seed(key: Old): Promise<void>;
  readCurrent(): Promise<Old>;
  stage(key: Old): Promise<void>;
  promote(): Promise<void>;
  close(): Promise<void>;
}

export type FloorStoreFactory = () => Promise<FloorStore>;

/** One rotation of the floor (throws if any step does not give the expected answer). */
export async function floorRotation(
  i: FloorIssuer,
  makeStore: FloorStoreFactory,
  n: number,
  /** called before each step and at the end (9 times: a rotation's transitions), e.g. a durable write */
  transition?: () => Promise<void>,
): Promise<void> {
  const admin = adminClient(i);
  const store = await makeStore();
  const t = transition ?? (() => Promise.resolve());
  try {
    await t();
    const old = await store.readCurrent();
    await t();
    const fresh = await create(admin, i, `floor.${store.kind}.${n}`);
    await t();
    await store.stage(fresh);
    await t();
    if ((await check(i, fresh.value)) !== 'ok') throw new Error('floor: the new key does not work');
    await t();
    await store.promote();
    await t();
    if ((await check(i, fresh.value)) !== 'ok') throw new Error('floor: gate check failed');
    await t();
    await admin.admin.organization.projects.apiKeys.delete(old.keyId, { project_id: i.project });
    await t();
    if ((await check(i, old.value)) !== 'invalid') throw new Error('floor: the old key still works');
    await t();
  } finally {
    await store.close();
  }
}

/** Put a first key into the floor's store (not timed). */
export async function floorSeed(i: FloorIssuer, makeStore: FloorStoreFactory): Promise<void> {
  const store = await makeStore();
  try {
    await store.seed(await create(adminClient(i), i, `floor.${store.kind}.seed`));
  } finally {
    await store.close();
  }
}

// ------------------------------------------------------------------ file: keyrotor's own primitives

/** the same crypto (AES-256-GCM per value, HMAC over the envelope) and atomic write the file store uses */
export function fileFloor(dir: string, keyName: string, masterHex: string): FloorStoreFactory {
  const file = path.join(dir, `${keyName}.json`);
  const keys = deriveKeys(Buffer.from(masterHex, 'hex'));
  interface V extends Sealed {
    id: string;
    keyId: string;
  }
  interface Doc {
    format: string;
    keyName: string;
    seq: number;
    slots: { current?: string; previous?: string; pending?: string };
    versions: V[];
  }
  let doc: Doc | undefined;
  const write = async (d: Doc) => {
    const body = JSON.stringify(d);
    await writeFileAtomic(file, JSON.stringify({ ...d, mac: mac(keys.mac, body) }, null, 2) + '\n');
  };
  const add = (d: Doc, k: Old): string => {
    const id = `v${++d.seq}`;
    d.versions.push({ id, keyId: k.keyId, ...seal(keys.enc, k.value, versionAad(keyName, id)) });
    d.versions = d.versions.slice(-5);
    return id;
  };
  return async () => ({
    kind: 'file',
    minimum: { requests: 3, calls: ['read the file (current)', 'atomic write (pending)', 'atomic write (promoted)'] },
    async seed(k) {
      const d: Doc = { format: 'bench-floor/1', keyName, seq: 0, slots: {}, versions: [] };
      d.slots.current = add(d, k);
      await write(d);
    },
    async readCurrent() {
      const { mac: m, ...rest } = JSON.parse(await readFile(file, 'utf8')) as Doc & { mac: string };
      if (!macEquals(mac(keys.mac, JSON.stringify(rest)), m)) throw new Error('floor: file mac mismatch');
      doc = rest;
      const v = doc.versions.find((x) => x.id === doc!.slots.current)!;
      const value = unseal(keys.enc, v, versionAad(keyName, v.id));
      if (!value) throw new Error('floor: cannot decrypt');
      return { keyId: v.keyId, value };
    },
    async stage(k) {
      doc!.slots.pending = add(doc!, k);
      await write(doc!);
    },
    async promote() {
      const d = doc!;
      d.slots = { current: d.slots.pending!, ...(d.slots.current ? { previous: d.slots.current } : {}) };
      await write(d);
    },
    async close() {},
  });
}

// ------------------------------------------------------------------ AWS Secrets Manager (labels)

export interface AwsFloorConfig {
  endpoint: string;
  region: string;
  secretId: string;
}

/** AWSCURRENT/AWSPENDING as keyrotor uses them; the issuer key id rides on a `fk:<id>` label */
export function awsFloor(c: AwsFloorConfig): FloorStoreFactory {
  const LABEL = 'fk:';
  let current: { versionId: string } | undefined;
  let pending: { versionId: string } | undefined;
  return async () => {
    const client = new SecretsManagerClient({
      region: c.region,
      endpoint: c.endpoint,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    return {
      kind: 'aws',
      minimum: {
        requests: 4,
        calls: [
          'GetSecretValue AWSCURRENT',
          'PutSecretValue [AWSPENDING]',
          'UpdateSecretVersionStage AWSCURRENT',
          'UpdateSecretVersionStage remove AWSPENDING',
        ],
      },
      async seed(k) {
        const token = randomUUID();
        await client.send(
          new CreateSecretCommand({ Name: c.secretId, SecretString: k.value, ClientRequestToken: token }),
        );
        await client.send(
          new UpdateSecretVersionStageCommand({
            SecretId: c.secretId,
            VersionStage: `${LABEL}${k.keyId}`,
            MoveToVersionId: token,
          }),
        );
      },
      async readCurrent() {
        const out = await client.send(new GetSecretValueCommand({ SecretId: c.secretId, VersionStage: 'AWSCURRENT' }));
        const label = (out.VersionStages ?? []).find((l) => l.startsWith(LABEL));
        if (!out.SecretString || !out.VersionId || !label)
          throw new Error('floor: AWSCURRENT lacks value or key label');
        current = { versionId: out.VersionId };
        return { keyId: label.slice(LABEL.length), value: out.SecretString };
      },
      async stage(k) {
        const token = randomUUID();
        const out = await client.send(
          new PutSecretValueCommand({
            SecretId: c.secretId,
            SecretString: k.value,
            ClientRequestToken: token,
            VersionStages: ['AWSPENDING', `${LABEL}${k.keyId}`],
          }),
        );
        pending = { versionId: out.VersionId ?? token };
      },
      async promote() {
        await client.send(
          new UpdateSecretVersionStageCommand({
            SecretId: c.secretId,
            VersionStage: 'AWSCURRENT',
            MoveToVersionId: pending!.versionId,
            RemoveFromVersionId: current!.versionId,
          }),
        );
        await client.send(
          new UpdateSecretVersionStageCommand({
            SecretId: c.secretId,
            VersionStage: 'AWSPENDING',
            RemoveFromVersionId: pending!.versionId,
          }),
        );
      },
      async close() {
        client.destroy();
      },
    };
  };
}

// ------------------------------------------------------------------ GCP Secret Manager (aliases)

/** versions + the `current`/`previous` aliases; the issuer key id in a secret annotation */
export function gcpFloor(cfg: GcpSecretManagerStoreConfig): FloorStoreFactory {
  const name = `projects/${cfg.project}/secrets/${cfg.secret}`;
  const ann = (n: number) => `floor.v${n}`;
  let seen: { etag: string; current: number; annotations: Record<string, string> } | undefined;
  let added: { n: number; keyId: string } | undefined;
  const num = (v: unknown) => Number(typeof v === 'object' && v !== null ? String(v) : v);
  return async () => {
    const client = await createGcpClient(cfg);
    return {
      kind: 'gcp',
      minimum: {
        requests: 4,
        calls: [
          'GetSecret (aliases, annotations, etag)',
          'AccessSecretVersion current',
          'AddSecretVersion',
          'UpdateSecret version_aliases + annotations',
        ],
      },
      async seed(k) {
        await client.createSecret({
          parent: `projects/${cfg.project}`,
          secretId: cfg.secret,
          secret: { replication: { automatic: {} } },
        });
        const [v] = await client.addSecretVersion({ parent: name, payload: { data: Buffer.from(k.value, 'utf8') } });
        const n = Number(String(v.name).split('/').pop());
        await client.updateSecret({
          secret: { name, versionAliases: { current: n }, annotations: { [ann(n)]: k.keyId } },
          updateMask: { paths: ['version_aliases', 'annotations'] },
        });
      },
      async readCurrent() {
        const [s] = await client.getSecret({ name });
        const current = num(s.versionAliases?.current);
        const annotations = { ...(s.annotations ?? {}) } as Record<string, string>;
        seen = { etag: String(s.etag ?? ''), current, annotations };
        const [a] = await client.accessSecretVersion({ name: `${name}/versions/current` });
        const value = Buffer.from(a.payload!.data as Uint8Array).toString('utf8');
        return { keyId: annotations[ann(current)]!, value };
      },
      async stage(k) {
        const [v] = await client.addSecretVersion({ parent: name, payload: { data: Buffer.from(k.value, 'utf8') } });
        added = { n: Number(String(v.name).split('/').pop()), keyId: k.keyId };
      },
      async promote() {
        const s = seen!;
        const annotations = { ...s.annotations, [ann(added!.n)]: added!.keyId };
        // keep the annotation map bounded like keyrotor does (only what an alias points at)
        for (const k of Object.keys(annotations))
          if (k !== ann(added!.n) && k !== ann(s.current)) delete annotations[k];
        await client.updateSecret({
          secret: { name, etag: s.etag, versionAliases: { current: added!.n, previous: s.current }, annotations },
          updateMask: { paths: ['version_aliases', 'annotations'] },
        });
      },
      async close() {
        await client.close();
      },
    };
  };
}

// ------------------------------------------------------------------ Azure Key Vault (side secret)

export interface AzureFloorConfig {
  vaultUrl: string;
  name: string;
  credential: ConstructorParameters<typeof SecretClient>[1];
  clientOptions: SecretClientOptions;
}

/** Key Vault has no staging: the pending value waits in `<name>--pending`, as in keyrotor's store */
export function azureFloor(c: AzureFloorConfig): FloorStoreFactory {
  const side = `${c.name}--pending`;
  let pending: { version: string; value: string; keyId: string } | undefined;
  return async () => {
    const client = new SecretClient(c.vaultUrl, c.credential, c.clientOptions);
    return {
      kind: 'azure',
      minimum: {
        requests: 4,
        calls: [
          'GetSecret <name> (latest)',
          'SetSecret <name>--pending',
          'SetSecret <name>',
          'UpdateSecretProperties <name>--pending enabled=false',
        ],
      },
      async seed(k) {
        await client.setSecret(c.name, k.value, { tags: { 'floor-key-id': k.keyId } });
      },
      async readCurrent() {
        const s = await client.getSecret(c.name);
        return { keyId: s.properties.tags?.['floor-key-id'] ?? '', value: s.value ?? '' };
      },
      async stage(k) {
        const s = await client.setSecret(side, k.value, { tags: { 'floor-key-id': k.keyId } });
        pending = { version: s.properties.version ?? '', value: k.value, keyId: k.keyId };
      },
      async promote() {
        await client.setSecret(c.name, pending!.value, { tags: { 'floor-key-id': pending!.keyId } });
        await client.updateSecretProperties(side, pending!.version, { enabled: false });
      },
      async close() {},
    };
  };
}
