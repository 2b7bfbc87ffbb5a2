/**
 * Chaos worlds: one configured key per world, rotated by the OpenAI issuer (loopback Admin API fake)
 * into one or more real stores (file, AWS Secrets Manager on moto, GCP Secret Manager on its gRPC
 * fake, Azure Key Vault on its HTTPS fake). The invariant is checked against what the fakes hold —
 * the value a consumer of each store would read, and the keys alive at the issuer — never against
 * keyrotor's logs or results.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CreateSecretCommand, GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { startOpenAIFake, type FakeKey, type OpenAIFake } from '../fakes/openai-admin.ts';
import { startMoto, type Moto } from '../fakes/moto.ts';
import { startGcpFake, type GcpFake } from '../fakes/gcp-secret-manager.ts';
import { startAzureFake, type AzureFake } from '../fakes/azure-key-vault.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { openFileStore } from '../helpers/file-store.ts';
import { PLACEHOLDER_TEXT } from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.labels.ts';
import { parseIssuedKeyName } from '../../src/core/ids.ts';

export type StoreKind = 'file' | 'aws' | 'gcp' | 'azure';

export const REGION = 'us-east-1';
export const GCP_PROJECT = 'chaos-project';
export const MASTER_KEY = 'c4'.repeat(32);

export interface Backends {
  openai: OpenAIFake;
  moto?: Moto;
  aws?: SecretsManagerClient;
  gcp?: GcpFake;
  gcpRaw?: SecretManagerServiceClient;
  azure?: AzureFake;
}

/**
 * Start the fakes for these store kinds (plus the OpenAI fake). `moto` may be shared: it is a separate
 * Python process that takes seconds to start and has no fault knobs, so several worlds can use it.
 */
export async function startBackends(kinds: readonly StoreKind[], shared: { moto?: Moto } = {}): Promise<Backends> {
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_EC2_METADATA_DISABLED: 'true',
    METADATA_SERVER_DETECTION: 'none',
  });
  const want = new Set(kinds);
  const [openai, moto, gcp, azure] = await Promise.all([
    startOpenAIFake(),
    want.has('aws') ? (shared.moto ?? startMoto()) : undefined,
    want.has('gcp') ? startGcpFake() : undefined,
    want.has('azure') ? startAzureFake({ lifetimeMs: 10 * 60_000 }) : undefined,
  ]);
  const b: Backends = { openai };
  if (moto) {
    b.moto = moto;
    b.aws = new SecretsManagerClient({
      endpoint: moto.endpoint,
      region: REGION,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
  }
  if (gcp) {
    b.gcp = gcp;
    b.gcpRaw = new SecretManagerServiceClient({
      apiEndpoint: '127.0.0.1',
      port: gcp.port,
      sslCreds: grpc.credentials.createInsecure(),
      universeDomain: 'googleapis.com',
    });
  }
  if (azure) b.azure = azure;
  return b;
}

export async function closeBackends(b: Backends | undefined, o: { keepMoto?: boolean } = {}): Promise<void> {
  if (!b) return;
  b.aws?.destroy();
  await b.gcpRaw?.close().catch(() => undefined);
  await Promise.allSettled([
    b.openai.close(),
    o.keepMoto ? undefined : b.moto?.close(),
    b.gcp?.close(),
    b.azure?.close(),
  ]);
}

export interface WorldSpec {
  /** the configured key name (also names the cloud secrets) */
  key: string;
  stores: StoreKind[];
  /** an issuer-smoke-test health gate (adds the confirm stage) */
  gate?: boolean;
}

/** What the invariant checker remembers about one world between observations. */
export class World {
  readonly spec: WorldSpec;
  saId = '';
  /** a rotation finished `rotated` at least once: every store must serve a key from now on */
  bootstrapped = false;
  /** leak mode: the leaked value and, per store, whether it was ever seen switched away from it */
  leak: { value: string; keyId: string; switched: boolean[] } | null = null;
  /** key ids a needs_attention result named in its leftovers (allowed to outlive their rotation) */
  readonly reported = new Set<string>();
  /** needs_attention results whose leftovers an operator has not acted on yet */
  readonly followUps: { rotationId: string; leftovers: readonly string[] }[] = [];
  /** results already taken into account (`rotationId@finishedAt`) */
  readonly seenResults = new Set<string>();
  /** simulated crashes so far */
  crashes = 0;
  /** the last finished rotation needed a human (stores may serve different keys until one succeeds) */
  needsAttention = false;
  constructor(spec: WorldSpec) {
    this.spec = spec;
  }
  get key(): string {
    return this.spec.key;
  }
  get awsSecret(): string {
    return `chaos/${this.spec.key}`;
  }
  get gcpSecret(): string {
    return `chaos-${this.spec.key}`;
  }
  get azureName(): string {
    return `chaos-${this.spec.key}`;
  }
  get markerPrefix(): string {
    return `keyrotor.${this.spec.key}.`;
  }
}

/** Create what must exist before the first rotation: the service account, the AWS and GCP secrets. */
export async function prepareWorld(b: Backends, w: World): Promise<void> {
  w.saId = b.openai.state.addServiceAccount(`chaos-${w.key}`).id;
  if (w.spec.stores.includes('aws'))
    await b.aws!.send(new CreateSecretCommand({ Name: w.awsSecret, Description: 'keyrotor chaos' }));
  if (w.spec.stores.includes('gcp')) {
    await b.gcpRaw!.createSecret({
      parent: `projects/${GCP_PROJECT}`,
      secretId: w.gcpSecret,
      secret: { replication: { automatic: {} } },
    });
  }
}

export interface ConfigOptions {
  /** issuer request timeout */
  issuerTimeout?: string;
  leaseTtl?: string;
  verifyTimeout?: string;
  /** a top-level `state:` line (the state backend); none: the file state backend */
  state?: string;
}

function storeYaml(b: Backends, w: World, kind: StoreKind): string {
  switch (kind) {
    case 'file':
      return '{ type: file }';
    case 'aws':
      return `{ type: aws-secrets-manager, secretId: ${w.awsSecret}, region: ${REGION}, endpoint: "${b.moto!.endpoint}" }`;
    case 'gcp':
      return `{ type: gcp-secret-manager, project: ${GCP_PROJECT}, secret: ${w.gcpSecret}, apiEndpoint: 127.0.0.1, port: ${b.gcp!.port}, insecure: true }`;
    case 'azure':
      return `{ type: azure-key-vault, vaultUrl: "${b.azure!.vaultUrl}", name: ${w.azureName} }`;
  }
}

/** A config holding every world's key, with small timeouts; `backends(w)` gives the fakes of a world. */
export function configText(backends: (w: World) => Backends, worlds: World[], o: ConfigOptions = {}): string {
  const keys = worlds.map((w) => {
    const b = backends(w);
    return `  - name: ${w.key}
    issuer: { type: openai, project: ${b.openai.project}, serviceAccount: ${w.saId}, baseURL: "${b.openai.baseURL}", timeout: ${o.issuerTimeout ?? '2s'} }
    stores:
${w.spec.stores.map((k) => `      - ${storeYaml(b, w, k)}`).join('\n')}
${w.spec.gate ? '    health:\n      - { type: issuer-smoke-test, timeout: 2s, interval: 20ms }\n' : ''}`;
  });
  return `version: 1
${o.state ? `${o.state}\n` : ''}defaults:
  verify: { timeout: ${o.verifyTimeout ?? '2s'}, interval: 20ms }
  verifyRevoked: { timeout: 2s, interval: 20ms }
  revoke: { attempts: 3, backoff: 20ms }
  lease: { ttl: ${o.leaseTtl ?? '60s'} }
keys:
${keys.join('')}`;
}

export function writeWorkspace(
  backends: (w: World) => Backends,
  worlds: World[],
  name: string,
  o: ConfigOptions = {},
): { dir: string; configFile: string; stateDir: string } {
  const dir = tempDir(name);
  const configFile = path.join(dir, 'rotation.config.yaml');
  writeFileSync(configFile, configText(backends, worlds, o));
  return { dir, configFile, stateDir: path.join(dir, '.keyrotor') };
}

// ------------------------------------------------------------------ what consumers see

export interface Served {
  store: StoreKind;
  /** the value a consumer reads now (null: nothing yet) */
  value: string | null;
  /** a consumer's read fails (disabled version, broken alias, unreadable file) */
  problem?: string | undefined;
}

/** The value each store of the world serves to consumers right now, read from the backend itself. */
export async function served(b: Backends, w: World, stateDir: string): Promise<Served[]> {
  const out: Served[] = [];
  for (const kind of w.spec.stores) {
    try {
      out.push({ store: kind, value: await consumerRead(b, w, kind, stateDir) });
    } catch (e) {
      out.push({ store: kind, value: null, problem: e instanceof Error ? e.message.slice(0, 200) : String(e) });
    }
  }
  return out;
}

async function consumerRead(b: Backends, w: World, kind: StoreKind, stateDir: string): Promise<string | null> {
  switch (kind) {
    case 'file': {
      const store = await openFileStore(path.dirname(stateDir), w.key, MASTER_KEY, stateDir);
      return (await store.readCurrent())?.secret.reveal() ?? null;
    }
    case 'aws': {
      try {
        const r = await b.aws!.send(new GetSecretValueCommand({ SecretId: w.awsSecret, VersionStage: 'AWSCURRENT' }));
        return r.SecretString === PLACEHOLDER_TEXT ? null : (r.SecretString ?? null);
      } catch (e) {
        if ((e as { name?: string }).name === 'ResourceNotFoundException') return null; // no version yet
        throw e;
      }
    }
    case 'gcp': {
      const s = b.gcp!.state.secret(`projects/${GCP_PROJECT}/secrets/${w.gcpSecret}`);
      const n = s.aliases.current;
      if (n === undefined) return null;
      const v = s.versions.get(n);
      if (!v) throw new Error(`alias current points at missing version ${n}`);
      if (v.state !== 'ENABLED') throw new Error(`alias current points at ${v.state} version ${n}`);
      return v.data.toString('utf8');
    }
    case 'azure': {
      const l = b.azure!.state.latest(w.azureName);
      if (!l) return null;
      if (!l.enabled) throw new Error(`the latest version ${l.version} is disabled (consumers get 403 SecretDisabled)`);
      return l.value;
    }
  }
}

// ------------------------------------------------------------------ the invariant

/** Does this value work at the issuer now (live and unexpired key)? */
export function workingKey(b: Backends, value: string): FakeKey | undefined {
  const now = b.openai.state.now();
  return b.openai.state.liveKeys().find((k) => k.value === value && (k.expiresAt === null || k.expiresAt > now));
}

export interface ActiveRef {
  rotationId: string;
  oldKeyId: string | null;
  newKeyId: string | null;
}

export interface CheckContext {
  /** 'instant': right after a crash (a rotation may be half done); 'rest': after a finished run */
  phase: 'instant' | 'rest';
  /** the unfinished rotation in the state store, if any (only used to allow its own keys) */
  active: ActiveRef | null;
  /** the last result was needs_attention: stores may serve different (working) keys */
  allowSplit?: boolean;
}

/**
 * The rotation invariant, checked against the fakes:
 *  1. every consumer-facing slot holds a key that works at the issuer (and, once the key was
 *     bootstrapped, no slot is empty or unreadable);
 *  2. every key keyrotor created (name `keyrotor.<key>.<rotationId>`) is current in a store, or deleted,
 *     or named in a needs_attention result's leftovers — at an instant during a rotation, the only other
 *     live keys allowed are the running rotation's own (its new key, and its old key until revoked);
 *  3. a leaked key is never current again in a store that was switched away from it;
 *  4. at most one rotation per key: non-current keyrotor keys never belong to two rotations;
 *  at rest: every store serves the same key (unless a needs_attention result says otherwise) and no
 *  keyrotor key other than the served one is alive (unless a needs_attention result names it).
 */
export async function checkInvariant(b: Backends, w: World, stateDir: string, c: CheckContext): Promise<string[]> {
  const v: string[] = [];
  const s = await served(b, w, stateDir);
  const servedIds = new Set<string>();
  for (const [i, x] of s.entries()) {
    const where = `${x.store}#${i}`;
    if (x.problem) {
      v.push(`${where}: consumers cannot read it: ${x.problem}`);
      continue;
    }
    if (x.value === null) {
      if (w.bootstrapped) v.push(`${where} serves nothing after the key was bootstrapped`);
      continue;
    }
    const k = workingKey(b, x.value);
    if (!k) {
      v.push(`${where} serves a key that does not work at the issuer`);
      continue;
    }
    servedIds.add(k.id);
    if (w.leak) {
      if (x.value !== w.leak.value) w.leak.switched[i] = true;
      else if (w.leak.switched[i])
        v.push(`${where} serves the LEAKED key ${w.leak.keyId} again after it was switched away`);
    }
  }

  const marked = b.openai.state.liveKeys().filter((k) => k.name.startsWith(w.markerPrefix));
  const notServed = marked.filter((k) => !servedIds.has(k.id) && !w.reported.has(k.id));
  if (c.phase === 'instant') {
    const foreign = notServed.filter((k) => {
      if (!c.active) return true;
      if (parseIssuedKeyName(k.name)?.rotationId === c.active.rotationId) return false;
      return k.id !== c.active.oldKeyId;
    });
    for (const k of foreign)
      v.push(
        `orphan key ${k.id} (${k.name}) is alive, not current and not part of the unfinished rotation ${c.active?.rotationId ?? '(none)'}`,
      );
    const rotations = new Set(
      notServed.filter((k) => k.id !== c.active?.oldKeyId).map((k) => parseIssuedKeyName(k.name)?.rotationId),
    );
    if (rotations.size > 1)
      v.push(`keys of ${rotations.size} rotations are alive and not current: ${[...rotations].join(', ')}`);
  } else {
    for (const k of notServed) v.push(`orphan key ${k.id} (${k.name}) is alive but current in no store`);
    // one live key for all slots (a needs_attention result may leave them split, by design: leak mode
    // never restores the leaked key where the new one could not be promoted)
    const values = new Set(s.map((x) => x.value));
    if (w.bootstrapped && values.size !== 1 && !c.allowSplit) {
      v.push(
        `stores disagree at rest: ${s.map((x) => `${x.store}=${x.value ? (workingKey(b, x.value)?.id ?? 'dead') : 'empty'}`).join(', ')}`,
      );
    }
  }
  return v;
}

/** Remember the keys a needs_attention result names (they may outlive their rotation, by design). */
export function noteLeftovers(b: Backends, w: World, leftovers: readonly string[] | undefined): void {
  for (const l of leftovers ?? [])
    for (const k of b.openai.state.keys) if (l.includes(k.id) || l.includes(k.name)) w.reported.add(k.id);
}
