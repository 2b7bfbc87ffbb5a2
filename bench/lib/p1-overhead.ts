/**
 * P1 (overhead per rotation vs. the floor) and P2 (provider requests per rotation vs. a documented
 * minimum), measured in one pass: for every store, keyrotor rotations and floor rotations run
 * interleaved against the same loopback fakes, and every rotation's requests are counted from the
 * fakes' logs (moto through a counting proxy; the file store through a file-operation counter).
 *
 * keyrotor runs as the CLI runs it (`rotateKey` with the file state store, JSON logs at info level to
 * a file, the default observers), one key per store, one `issuer-smoke-test` gate that passes at once.
 * A third variant runs the same rotation with an in-memory state store: the difference is the cost of
 * persisting a snapshot per transition.
 */
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { startOpenAIFake, type OpenAIFake } from '../../test/fakes/openai-admin.ts';
import { motoSupport, startMoto, type Moto } from '../../test/fakes/moto.ts';
import { startGcpFake, type GcpFake } from '../../test/fakes/gcp-secret-manager.ts';
import { startAzureFake, type AzureFake } from '../../test/fakes/azure-key-vault.ts';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import type { ResolvedKey } from '../../src/app/config/schema.ts';
import type { Logger, StateStore } from '../../src/core/ports.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { rotateKey } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { createGcpClient } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.store.ts';
import { resetSharedLimiters } from '../../providers/issuers/openai/openai.ratelimit.ts';
import { setBenchAzure } from './azure-shim.ts';
import { startCountingProxy, type CountingProxy } from './counting-proxy.ts';
import { installFsCounter } from './fs-counter.ts';
import { memoryStateStore } from './memory-state.ts';
import {
  awsFloor,
  azureFloor,
  fileFloor,
  floorRotation,
  floorSeed,
  gcpFloor,
  type FloorIssuer,
  type FloorStoreFactory,
  type StoreKind,
} from './floor.ts';
import { fileLogger, median, p1Yaml, percentile, progress, ratio, round } from './util.ts';

const REGION = 'us-east-1';
const GCP_PROJECT = 'bench-project';
const MASTER_HEX = 'ab'.repeat(32);
/** the issuer's unavoidable requests per rotation: create, verify new, gate check, delete old, verify old is rejected */
export const ISSUER_MINIMUM = {
  requests: 5,
  calls: [
    'POST service_accounts/{sa}/api_keys (create)',
    'GET /models with the new key (verify)',
    'GET /models with the new key (the gate)',
    'DELETE api_keys/{old} (revoke)',
    'GET /models with the old key -> 401 (verifyRevoked)',
  ],
};

/**
 * keyrotor: as the CLI runs it (file state store + the default observers: audit trail, metrics, ...);
 * keyrotorNoObservers: file state store, no observers; keyrotorMemState: in-memory state store and no
 * observers (nothing persisted at all); floor: the straight-line script.
 */
type Variant = 'keyrotor' | 'floor' | 'keyrotorNoObservers' | 'keyrotorMemState';
const VARIANTS: Variant[] = ['keyrotor', 'floor', 'keyrotorNoObservers', 'keyrotorMemState'];

interface Counts {
  issuer: Record<string, number>;
  store: Record<string, number>;
  stateWrites: number;
  stateReads: number;
  auditWrites: number;
}

interface Sample {
  ms: number;
  counts: Counts;
}

export interface P1Options {
  tmp: string;
  pairs: number;
  warmup: number;
  kinds?: StoreKind[];
}

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
const group = <T>(xs: T[], key: (x: T) => string) => {
  const out: Record<string, number> = {};
  for (const x of xs) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
};

export async function runP1(o: P1Options) {
  const dir = path.join(o.tmp, 'p1');
  const stateDir = path.join(dir, 'state');
  const floorDir = path.join(dir, 'floor');
  mkdirSync(floorDir, { recursive: true });
  const fsCounter = installFsCounter({
    secrets: path.join(stateDir, 'secrets'),
    state: path.join(stateDir, 'state'),
    floor: floorDir,
    audit: path.join(stateDir, 'audit'),
  });
  resetSharedLimiters();

  const notes: string[] = [];
  const wanted = o.kinds ?? ['file', 'aws', 'gcp', 'azure'];
  const moto = wanted.includes('aws') ? motoSupport() : { available: false, reason: 'not requested' };
  if (wanted.includes('aws') && !moto.available) notes.push(`AWS skipped: moto unavailable (${moto.reason})`);
  const kinds = wanted.filter((k) => k !== 'aws' || moto.available);

  const openai: OpenAIFake = await startOpenAIFake({ projects: ['proj_bench'] });
  let motoServer: Moto | undefined;
  let proxy: CountingProxy | undefined;
  let gcp: GcpFake | undefined;
  let azure: AzureFake | undefined;
  const closers: Array<() => Promise<unknown>> = [() => openai.close()];
  try {
    if (kinds.includes('aws')) {
      motoServer = await startMoto();
      proxy = await startCountingProxy(motoServer.endpoint);
      closers.push(
        () => proxy!.close(),
        () => motoServer!.close(),
      );
    }
    if (kinds.includes('gcp')) {
      gcp = await startGcpFake();
      closers.push(() => gcp!.close());
    }
    const azureCredential = {
      getToken: async () => ({ token: 'bench-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
    };
    let azureOptions = {};
    if (kinds.includes('azure')) {
      azure = await startAzureFake({ lifetimeMs: 30 * 60_000 });
      closers.push(() => azure!.close());
      azureOptions = {
        tlsOptions: { ca: azure.ca },
        disableChallengeResourceVerification: true,
        retryOptions: { maxRetries: 0 },
      };
      setBenchAzure({ credential: azureCredential, clientOptions: azureOptions });
    }

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      OPENAI_ADMIN_KEY: openai.adminKey,
      KEYROTOR_MASTER_KEY: MASTER_HEX,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    };

    // ---------------------------------------------------------------- keyrotor keys (one per store)
    const storeYaml: Record<StoreKind, string> = {
      file: '{ type: file }',
      aws: proxy
        ? `{ type: aws-secrets-manager, secretId: p1/keyrotor, region: ${REGION}, endpoint: "${proxy.endpoint}" }`
        : '',
      gcp: gcp
        ? `{ type: gcp-secret-manager, project: ${GCP_PROJECT}, secret: p1-keyrotor, apiEndpoint: 127.0.0.1, port: ${gcp.port}, insecure: true }`
        : '',
      azure: azure ? `{ type: azure-key-vault, vaultUrl: "${azure.vaultUrl}", name: p1-keyrotor }` : '',
    };
    const sas = Object.fromEntries(
      kinds.map((k) => [
        k,
        {
          kr: openai.state.addServiceAccount(`bench-kr-${k}`).id,
          floor: openai.state.addServiceAccount(`bench-floor-${k}`).id,
        },
      ]),
    );
    const yaml = p1Yaml({
      baseURL: openai.baseURL,
      head: `stateDir: ${JSON.stringify(stateDir)}`,
      keys: kinds.map((k) => ({ name: `p1-${k}`, serviceAccount: sas[k]!.kr, store: storeYaml[k] })),
    });
    const cfgFile = path.join(dir, 'rotation.config.yaml');
    writeFileSync(cfgFile, yaml);
    const config: LoadedConfig = parseConfig(yaml, cfgFile, env);
    const logger: Logger = await fileLogger(path.join(dir, 'keyrotor.log.jsonl'));
    const fileState = createFileStateStore(stateDir);
    const memState = memoryStateStore();

    // the AWS and GCP secrets must exist (keyrotor never creates a secret); Azure and file create on write
    if (proxy) {
      const c = new SecretsManagerClient({
        region: REGION,
        endpoint: motoServer!.endpoint,
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      });
      await c.send(new CreateSecretCommand({ Name: 'p1/keyrotor', Description: 'keyrotor bench' }));
      c.destroy();
    }
    if (gcp) {
      const c = await createGcpClient({
        type: 'gcp-secret-manager',
        project: GCP_PROJECT,
        secret: 'x',
        apiEndpoint: '127.0.0.1',
        port: gcp.port,
        insecure: true,
      });
      await c.createSecret({
        parent: `projects/${GCP_PROJECT}`,
        secretId: 'p1-keyrotor',
        secret: { replication: { automatic: {} } },
      });
      await c.close();
    }

    // ---------------------------------------------------------------- floors
    const floorIssuer = (k: StoreKind): FloorIssuer => ({
      baseURL: openai.baseURL,
      adminKey: openai.adminKey,
      project: 'proj_bench',
      serviceAccount: sas[k]!.floor,
      expiresInSeconds: Math.ceil((config.keys[0]!.schedule.every + config.keys[0]!.grace) / 1000),
      timeoutMs: 10_000,
    });
    const floors: Partial<Record<StoreKind, FloorStoreFactory>> = {
      file: fileFloor(floorDir, 'p1-floor', MASTER_HEX),
      ...(proxy ? { aws: awsFloor({ endpoint: proxy.endpoint, region: REGION, secretId: 'p1/floor' }) } : {}),
      ...(gcp
        ? {
            gcp: gcpFloor({
              type: 'gcp-secret-manager',
              project: GCP_PROJECT,
              secret: 'p1-floor',
              createPendingSecret: true,
              apiEndpoint: '127.0.0.1',
              port: gcp.port,
              insecure: true,
            }),
          }
        : {}),
      ...(azure
        ? {
            azure: azureFloor({
              vaultUrl: azure.vaultUrl,
              name: 'p1-floor',
              credential: azureCredential,
              clientOptions: azureOptions,
            }),
          }
        : {}),
    };

    // ---------------------------------------------------------------- counting
    const marks = () => ({
      issuer: openai.log.length,
      moto: proxy?.log.length ?? 0,
      gcp: gcp?.log.length ?? 0,
      azure: azure?.log.length ?? 0,
      fs: fsCounter.counts(),
    });
    const countsSince = (k: StoreKind, m: ReturnType<typeof marks>, variant: Variant): Counts => {
      const fsNow = fsCounter.counts();
      const issuer = group(openai.log.slice(m.issuer), (e) => (e.status === 429 ? `${e.route} (429)` : e.route));
      let store: Record<string, number> = {};
      if (k === 'aws') store = group(proxy!.log.slice(m.moto), (e) => e.op);
      if (k === 'gcp') store = group(gcp!.log.slice(m.gcp), (e) => e.method);
      if (k === 'azure')
        store = group(azure!.log.slice(m.azure), (e) => (e.authorized ? `${e.op}` : `${e.op} (auth challenge)`));
      if (k === 'file') {
        const which = variant === 'floor' ? 'floor' : 'secrets';
        store = {
          'file reads': fsNow[which]!.reads - m.fs[which]!.reads,
          'atomic writes': fsNow[which]!.writes - m.fs[which]!.writes,
        };
        for (const x of Object.keys(store)) if (store[x] === 0) delete store[x];
      }
      return {
        issuer,
        store,
        stateWrites: fsNow.state!.writes - m.fs.state!.writes,
        stateReads: fsNow.state!.reads - m.fs.state!.reads,
        auditWrites: fsNow.audit!.writes - m.fs.audit!.writes,
      };
    };

    const keyOf = (k: StoreKind): ResolvedKey => config.keys.find((x) => x.name === `p1-${k}`)!;
    let floorN = 0;
    const runOne = async (k: StoreKind, v: Variant): Promise<Sample> => {
      const m = marks();
      const t0 = performance.now();
      if (v === 'floor') {
        await floorRotation(floorIssuer(k), floors[k]!, ++floorN);
      } else {
        const stateStore: StateStore = v === 'keyrotorMemState' ? memState : fileState;
        const observers = v === 'keyrotor' ? defaultObservers({ config, logger, actor: 'bench', env }) : [];
        const r = await rotateKey(keyOf(k), { config, stateStore, logger, observers, env, now: true, actor: 'bench' });
        if (r.outcome !== 'rotated' || r.bootstrap)
          throw new Error(
            `P1 ${k}: keyrotor rotation ended ${r.outcome}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`,
          );
      }
      const ms = performance.now() - t0;
      return { ms, counts: countsSince(k, m, v) };
    };

    // ---------------------------------------------------------------- setup, warm-up, measurement
    const samples = new Map<string, Sample[]>();
    for (const k of kinds) {
      progress(`P1/P2: ${k}: bootstrap and warm-up`);
      const boot = await rotateKey(keyOf(k), { config, stateStore: fileState, logger, env, now: true, actor: 'bench' });
      if (boot.outcome !== 'rotated')
        throw new Error(
          `P1 ${k}: bootstrap rotation ended ${boot.outcome}${boot.error ? ` (${boot.error.code}: ${boot.error.message})` : ''}`,
        );
      await floorSeed(floorIssuer(k), floors[k]!);
      for (let i = 0; i < o.warmup; i++) for (const v of VARIANTS) await runOne(k, v);
      for (const v of VARIANTS) samples.set(`${k}/${v}`, []);
    }
    progress(`P1/P2: ${o.pairs} interleaved rounds over ${kinds.join(', ')}`);
    for (let i = 0; i < o.pairs; i++) {
      for (const k of kinds) {
        for (let j = 0; j < VARIANTS.length; j++) {
          const v = VARIANTS[(i + j) % VARIANTS.length]!;
          samples.get(`${k}/${v}`)!.push(await runOne(k, v));
        }
      }
    }

    // ---------------------------------------------------------------- results
    const perStore = kinds.map((k) => {
      const s = (v: Variant) => samples.get(`${k}/${v}`)!;
      const ms = (v: Variant) => s(v).map((x) => x.ms);
      const typical = (v: Variant, f: (c: Counts) => number) => median(s(v).map((x) => f(x.counts)));
      const last = (v: Variant) => s(v).at(-1)!.counts;
      const floorFactory = floors[k]!;
      return {
        store: k,
        rotations: s('keyrotor').length,
        keyrotorMs: round(median(ms('keyrotor')), 1),
        floorMs: round(median(ms('floor')), 1),
        ratio: ratio(median(ms('keyrotor')), median(ms('floor'))),
        keyrotorP90Ms: round(percentile(ms('keyrotor'), 90), 1),
        floorP90Ms: round(percentile(ms('floor'), 90), 1),
        keyrotorNoObserversMs: round(median(ms('keyrotorNoObservers')), 1),
        ratioNoObservers: ratio(median(ms('keyrotorNoObservers')), median(ms('floor'))),
        keyrotorMemStateMs: round(median(ms('keyrotorMemState')), 1),
        ratioMemState: ratio(median(ms('keyrotorMemState')), median(ms('floor'))),
        /** what the default observers (audit trail, metrics, notifications) add per rotation */
        observersMs: round(median(ms('keyrotor')) - median(ms('keyrotorNoObservers')), 1),
        /** what the file state store (a snapshot per transition, fsync'd) adds per rotation */
        persistenceMs: round(median(ms('keyrotorNoObservers')) - median(ms('keyrotorMemState')), 1),
        auditFileWrites: typical('keyrotor', (c) => c.auditWrites),
        stateFileWrites: typical('keyrotor', (c) => c.stateWrites),
        stateFileReads: typical('keyrotor', (c) => c.stateReads),
        requests: {
          store: {
            minimum: undefined as unknown as { requests: number; calls: string[] },
            floor: typical('floor', (c) => sum(c.store)),
            keyrotor: typical('keyrotor', (c) => sum(c.store)),
            keyrotorByOp: last('keyrotor').store,
            floorByOp: last('floor').store,
          },
          issuer: {
            minimum: ISSUER_MINIMUM.requests,
            floor: typical('floor', (c) => sum(c.issuer)),
            keyrotor: typical('keyrotor', (c) => sum(c.issuer)),
            keyrotorByRoute: last('keyrotor').issuer,
            floorByRoute: last('floor').issuer,
          },
        },
        _floorFactory: floorFactory,
      };
    });
    // the documented minimum per store comes from the floor's own description
    for (const p of perStore) {
      const f = await p._floorFactory();
      p.requests.store.minimum = f.minimum;
      await f.close();
    }
    return {
      notes,
      rounds: o.pairs,
      warmup: o.warmup,
      issuerMinimum: ISSUER_MINIMUM,
      perStore: perStore.map(({ _floorFactory, ...rest }) => rest),
    };
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}
