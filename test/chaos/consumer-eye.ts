/**
 * The consumer's eye: readers that read a store the way that store's users read it by default, in a
 * tight bounded loop, and a checker that judges every value read against the issuer fake.
 *
 * Read paths (one reader each, each client with its SDK's default retry policy):
 *   - aws      `GetSecretValue` with VersionStage AWSCURRENT. The default read (no VersionStage) IS
 *              AWSCURRENT on AWS, but moto 5.2.1 ignores `UpdateSecretVersionStage` for the default
 *              read, so the default reader names AWSCURRENT explicitly here.
 *   - gcp      `versions/latest` (what Cloud Run secret env vars/volumes, the GKE add-on and most
 *              client code read) AND `versions/current` (the alias keyrotor moves).
 *   - azure    `getSecret(name)`: the latest enabled version (403 SecretDisabled when latest is disabled).
 *   - file     `keyrotor/consumer` (src/entrypoints/consumer.ts) `refresh()` + `current()`.
 *
 * A read is a violation when it fails, is empty, or yields a value the issuer does not accept at the
 * instant of the read: unknown to the issuer (e.g. a placeholder), revoked before the read was sent,
 * or not working yet (the fake's propagation delay: a key a consumer would get 401 with). A key revoked
 * while the read was on the wire is counted as `raced`, not as a violation (the store may have
 * answered before the revoke). Violations carry where the rotation was (scenario, stage, last provider
 * call, phase) and never a secret value: key ids and fingerprints only.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { SecretClient } from '@azure/keyvault-secrets';
import type { OpenAIFake } from '../fakes/openai-admin.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { createConsumer, type Consumer } from '../../src/entrypoints/consumer.ts';
import { GCP_PROJECT, MASTER_KEY, REGION, type Backends, type StoreKind, type World } from './world.ts';

/** Where a world's rotation is right now (updated from the run's log lines and provider calls). */
export interface Instant {
  /** rotation number within the world (0 = bootstrap) */
  rotation: number;
  /** what this rotation is: plain, fault@verify, leak, crash+resume, SIGKILL+resume, ... */
  scenario: string;
  /** the workflow state last entered (`"msg":"<stage>"` log line); `idle` between rotations */
  stage: string;
  /** the last issuer/store call the run made */
  call: string;
  /** run | dead (crashed, nobody runs it) | resume | idle */
  phase: string;
}

export const describeInstant = (i: Instant) =>
  `rotation #${i.rotation} (${i.scenario}) phase=${i.phase} stage=${i.stage} lastCall=${i.call}`;

/**
 * Key deletion times with sub-millisecond precision (the fake keeps unix seconds): every revoke of
 * the fake's server goes through `state.deleteKey`, which is wrapped here.
 */
export function trackDeletions(openai: OpenAIFake): Map<string, number> {
  const at = new Map<string, number>();
  const state = openai.state;
  const original = state.deleteKey.bind(state);
  state.deleteKey = (k) => {
    at.set(k.id, performance.now());
    original(k);
  };
  return at;
}

export type Verdict =
  { ok: true; keyId: string; raced: boolean } | { ok: false; kind: string; detail: string; keyId?: string | undefined };

/** Judge one value read between `t0` (request sent) and now, against the issuer fake. */
export function judge(openai: OpenAIFake, deletedAt: Map<string, number>, value: string | null, t0: number): Verdict {
  if (value === null || value === '') return { ok: false, kind: 'empty', detail: 'the read returned no value' };
  const k = openai.state.keys.find((x) => x.value === value);
  if (!k)
    return {
      ok: false,
      kind: 'unknown',
      detail: `a value the issuer never issued (fingerprint ${fingerprint(value)})`,
    };
  if (k.deleted) {
    const d = deletedAt.get(k.id) ?? -Infinity;
    if (d < t0)
      return {
        ok: false,
        kind: 'revoked',
        keyId: k.id,
        detail: `key ${k.id} (${k.name}) was revoked ${Math.round(t0 - d)} ms before the read was sent`,
      };
    return { ok: true, keyId: k.id, raced: true };
  }
  // the propagation counter only goes down (keyrotor's own checks), so > 0 now means > 0 at the read
  if ((openai.state.propagation.get(k.id) ?? 0) > 0)
    return {
      ok: false,
      kind: 'not-working-yet',
      keyId: k.id,
      detail: `key ${k.id} (${k.name}) does not work at the issuer yet (a consumer gets 401 invalid_api_key)`,
    };
  if (openai.state.lackingScopes.has(k.id))
    return { ok: false, kind: 'missing-scopes', keyId: k.id, detail: `key ${k.id} (${k.name}) lacks scopes` };
  return { ok: true, keyId: k.id, raced: false };
}

export interface ReadPath {
  store: StoreKind;
  /** e.g. `gcp versions/latest` */
  path: string;
  read(): Promise<string | null>;
  close(): Promise<void>;
}

/** Redact anything that looks like a value from an error message (SDK messages carry none; belt and braces). */
function errText(e: unknown): string {
  const o = e as { name?: string; code?: unknown; statusCode?: unknown; message?: string };
  const tag = [o.name, o.code, o.statusCode].filter((x) => x !== undefined && x !== 'Error').join('/');
  return `${tag ? `${tag}: ` : ''}${String(o.message ?? e)
    .split('\n')[0]!
    .slice(0, 160)}`;
}
export { errText as readErrorText };

export async function readPaths(
  b: Backends,
  w: World,
  o: { configFile: string; azureCa?: string | undefined },
): Promise<ReadPath[]> {
  const out: ReadPath[] = [];
  for (const kind of w.spec.stores) {
    if (kind === 'aws') {
      const client = new SecretsManagerClient({
        endpoint: b.moto!.endpoint,
        region: REGION,
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
        // the SDK's default retry policy, as an application has it (no faults are injected on reads)
      });
      out.push({
        store: 'aws',
        path: 'aws GetSecretValue AWSCURRENT',
        read: async () => {
          // The default read (no VersionStage) is AWSCURRENT; moto 5.2.1 ignores UpdateSecretVersionStage
          // for the default read, so name the stage explicitly to read what AWS's default reader gets.
          const r = await client.send(new GetSecretValueCommand({ SecretId: w.awsSecret, VersionStage: 'AWSCURRENT' }));
          return r.SecretString ?? null;
        },
        close: async () => client.destroy(),
      });
    } else if (kind === 'gcp') {
      const client = new SecretManagerServiceClient({
        apiEndpoint: '127.0.0.1',
        port: b.gcp!.port,
        sslCreds: grpc.credentials.createInsecure(),
        universeDomain: 'googleapis.com',
      });
      const secret = `projects/${GCP_PROJECT}/secrets/${w.gcpSecret}`;
      let open = 2;
      const close = async () => {
        if (--open === 0) await client.close().catch(() => undefined);
      };
      for (const v of ['latest', 'current']) {
        out.push({
          store: 'gcp',
          path: `gcp versions/${v}`,
          read: async () => {
            const [r] = await client.accessSecretVersion({ name: `${secret}/versions/${v}` });
            const d = r.payload?.data;
            if (d === null || d === undefined) return null;
            return typeof d === 'string' ? d : Buffer.from(d).toString('utf8');
          },
          close,
        });
      }
    } else if (kind === 'azure') {
      const client = new SecretClient(
        b.azure!.vaultUrl,
        { getToken: async () => ({ token: 'loopback-reader-token', expiresOnTimestamp: Date.now() + 3_600_000 }) },
        {
          tlsOptions: { ca: o.azureCa ?? b.azure!.ca },
          disableChallengeResourceVerification: true,
        },
      );
      out.push({
        store: 'azure',
        path: 'azure getSecret(name)',
        read: async () => (await client.getSecret(w.azureName)).value ?? null,
        close: async () => {},
      });
    } else {
      let consumer: Consumer | undefined;
      out.push({
        store: 'file',
        path: 'file keyrotor/consumer',
        read: async () => {
          // KEYROTOR_EYE_READER: the chaos registry mock gives readers the real, unwrapped store
          consumer ??= await createConsumer({
            config: o.configFile,
            key: w.key,
            refreshInterval: false,
            sighup: false,
            env: { KEYROTOR_MASTER_KEY: MASTER_KEY, KEYROTOR_EYE_READER: '1' },
          });
          await consumer.refresh();
          return (await consumer.current()).reveal();
        },
        close: async () => consumer?.close(),
      });
    }
  }
  return out;
}

export interface PathStats {
  reads: number;
  ok: number;
  raced: number;
  /** distinct keys seen */
  keys: Set<string>;
  violations: number;
  /** per kind@stage: count and the first instance (precise) */
  byKind: Map<string, { count: number; first: string }>;
}

export const newStats = (): PathStats => ({
  reads: 0,
  ok: 0,
  raced: 0,
  keys: new Set(),
  violations: 0,
  byKind: new Map(),
});

/**
 * Poll one read path until `stop()` says so: every few ms (bounded: one read in flight at a time,
 * `gapMs` between reads). Violations are only counted while `armed()` (after the bootstrap rotation).
 */
export async function pollLoop(
  p: ReadPath,
  o: {
    openai: OpenAIFake;
    deletedAt: Map<string, number>;
    instant: () => Instant;
    armed: () => boolean;
    stop: () => boolean;
    gapMs: number;
    stats: PathStats;
    onViolation: (line: string) => void;
  },
): Promise<void> {
  while (!o.stop()) {
    const before = { ...o.instant() };
    const t0 = performance.now();
    let value: string | null = null;
    let error: string | undefined;
    try {
      value = await p.read();
    } catch (e) {
      error = errText(e);
    }
    if (o.armed()) {
      o.stats.reads++;
      const v: Verdict =
        error !== undefined
          ? { ok: false, kind: 'read-error', detail: error }
          : judge(o.openai, o.deletedAt, value, t0);
      if (v.ok) {
        o.stats.ok++;
        if (v.raced) o.stats.raced++;
        o.stats.keys.add(v.keyId);
      } else {
        o.stats.violations++;
        const after = o.instant();
        const where =
          before.rotation === after.rotation && before.stage === after.stage && before.phase === after.phase
            ? describeInstant(after)
            : `${describeInstant(before)} -> ${describeInstant(after)}`;
        const line = `${p.path}: ${v.kind}: ${v.detail} at ${where}`;
        const k = `${v.kind}@${after.stage}`;
        const e = o.stats.byKind.get(k);
        if (e) e.count++;
        else o.stats.byKind.set(k, { count: 1, first: line });
        o.onViolation(line);
      }
    }
    await new Promise((r) => setTimeout(r, o.gapMs));
  }
}
