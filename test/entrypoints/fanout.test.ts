/**
 * End to end through the CLI's `main()` (in process): the OpenAI issuer on its loopback fake and one
 * key fanned out to all four stores — AWS Secrets Manager on moto, GCP Secret Manager on the gRPC
 * fake, Azure Key Vault on the HTTPS fake, and the file store — every one over its real SDK.
 * The only substitution: the Azure store is composed with a stub credential and the fake's CA
 * (DefaultAzureCredential cannot reach Entra ID here); its SDK still talks HTTPS to the fake.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { SecretClient } from '@azure/keyvault-secrets';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { startGcpFake, type GcpFake } from '../fakes/gcp-secret-manager.ts';
import { startAzureFake, type AzureFake } from '../fakes/azure-key-vault.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { main as _main } from '../../src/entrypoints/cli.ts';
import { cliInProcess } from './cli-helpers.ts';
import { openFileStore } from '../helpers/file-store.ts';

const azure = vi.hoisted(() => ({ ca: '' }));
vi.mock('../../providers/stores/azure-key-vault/index.ts', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../providers/stores/azure-key-vault/index.ts')>();
  return {
    ...mod,
    createAzureKeyVaultStore: (
      cfg: Parameters<typeof mod.createAzureKeyVaultStore>[0],
      ctx: Parameters<typeof mod.createAzureKeyVaultStore>[1],
    ) =>
      mod.createAzureKeyVaultStore(cfg, ctx, {
        credential: {
          getToken: async () => ({ token: 'loopback-test-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
        },
        clientOptions: {
          tlsOptions: { ca: azure.ca },
          disableChallengeResourceVerification: true,
          retryOptions: { maxRetries: 0 },
        },
      }),
  };
});

const MOTO = motoSupportOrSkip('fan-out end to end (AWS on moto)');
const REGION = 'us-east-1';
const GCP_PROJECT = 'fanout-project';

describe.skipIf(!MOTO)('one key fanned out to AWS, GCP, Azure and file stores', () => {
  let openai: OpenAIFake;
  let moto: Moto;
  let gcp: GcpFake;
  let az: AzureFake;
  let aws: SecretsManagerClient;
  let gcpRaw: SecretManagerServiceClient;
  let azRaw: SecretClient;
  let dir: string;
  const env = () => ({ ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) });

  beforeAll(async () => {
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_EC2_METADATA_DISABLED: 'true',
      METADATA_SERVER_DETECTION: 'none',
    });
    [openai, moto, gcp, az] = await Promise.all([startOpenAIFake(), startMoto(), startGcpFake(), startAzureFake()]);
    azure.ca = az.ca;
    aws = new SecretsManagerClient({
      endpoint: moto.endpoint,
      region: REGION,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    gcpRaw = new SecretManagerServiceClient({
      apiEndpoint: '127.0.0.1',
      port: gcp.port,
      sslCreds: grpc.credentials.createInsecure(),
      universeDomain: 'googleapis.com',
    });
    azRaw = new SecretClient(
      az.vaultUrl,
      { getToken: async () => ({ token: 't', expiresOnTimestamp: Date.now() + 3_600_000 }) },
      { tlsOptions: { ca: az.ca }, disableChallengeResourceVerification: true },
    );
    // the AWS secret holds a JSON object whose other fields must survive; the GCP secret exists, empty
    await aws.send(
      new CreateSecretCommand({ Name: 'prod/openai', SecretString: JSON.stringify({ ORG: 'org-keep-me' }) }),
    );
    await gcpRaw.createSecret({
      parent: `projects/${GCP_PROJECT}`,
      secretId: 'openai-key',
      secret: { replication: { automatic: {} } },
    });
    const sa = openai.state.addServiceAccount('fanout-app');
    dir = tempDir('fanout');
    writeFileSync(
      path.join(dir, 'rotation.config.yaml'),
      `version: 1
defaults:
  verify: { timeout: 3s, interval: 100ms }
  verifyRevoked: { timeout: 3s, interval: 100ms }
keys:
  - name: app
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores:
      - { type: aws-secrets-manager, secretId: prod/openai, region: ${REGION}, endpoint: "${moto.endpoint}", jsonKey: OPENAI_API_KEY }
      - { type: gcp-secret-manager, project: ${GCP_PROJECT}, secret: openai-key, apiEndpoint: 127.0.0.1, port: ${gcp.port}, insecure: true }
      - { type: azure-key-vault, vaultUrl: "${az.vaultUrl}", name: openai-key }
      - { type: file }
    health:
      - { type: issuer-smoke-test, timeout: 3s, interval: 100ms }
  - name: trio
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores:
      - { type: aws-secrets-manager, secretId: prod/trio, region: ${REGION}, endpoint: "${moto.endpoint}" }
      - { type: azure-key-vault, vaultUrl: "${az.vaultUrl}", name: trio-key }
      - { type: file }
`,
    );
    await aws.send(new CreateSecretCommand({ Name: 'prod/trio' }));
  }, 90_000);

  afterAll(async () => {
    aws?.destroy();
    await gcpRaw?.close();
    await Promise.all([openai?.close(), moto?.close(), gcp?.close(), az?.close()]);
  });

  async function cli(...args: string[]) {
    const r = await cliInProcess(['-c', path.join(dir, 'rotation.config.yaml'), '--log-level', 'warn', ...args], {
      env: env(),
      name: 'fanout',
    });
    return {
      ...r,
      result: r.stdout
        ? (JSON.parse(r.stdout) as { results: Array<Record<string, string | null>> }).results[0]!
        : undefined,
    };
  }

  /** the value each store serves to consumers right now */
  async function served() {
    const awsCur = JSON.parse(
      (await aws.send(new GetSecretValueCommand({ SecretId: 'prod/openai', VersionStage: 'AWSCURRENT' })))
        .SecretString!,
    ) as Record<string, string>;
    const awsPrev = await aws
      .send(new GetSecretValueCommand({ SecretId: 'prod/openai', VersionStage: 'AWSPREVIOUS' }))
      .then(
        (r) => (JSON.parse(r.SecretString!) as Record<string, string>).OPENAI_API_KEY,
        () => null,
      );
    const stages = Object.values(
      (await aws.send(new DescribeSecretCommand({ SecretId: 'prod/openai' }))).VersionIdsToStages ?? {},
    ).flat();
    const [g] = await gcpRaw.accessSecretVersion({
      name: `projects/${GCP_PROJECT}/secrets/openai-key/versions/current`,
    });
    const a = await azRaw.getSecret('openai-key');
    const file = await openFileStore(dir, 'app', 'cd'.repeat(32));
    return {
      aws: awsCur.OPENAI_API_KEY,
      awsOrg: awsCur.ORG,
      awsPrev,
      awsPending: stages.includes('AWSPENDING'),
      gcp: Buffer.from(g.payload!.data as Uint8Array).toString('utf8'),
      azure: a.value,
      file: (await file.readCurrent())?.secret.reveal(),
    };
  }

  const valueOf = (keyId: string | null | undefined) => openai.state.keys.find((k) => k.id === keyId)?.value;

  it('rotates all four stores together, twice; AWSPREVIOUS holds the old key, other JSON fields survive', async () => {
    const boot = await cli('rotate', '--now', 'app', '--json');
    expect(boot.code, boot.stderr).toBe(0);
    expect(boot.result).toMatchObject({ outcome: 'rotated', oldKeyId: null });
    const k1 = valueOf(boot.result!.newKeyId)!;
    expect(await served()).toMatchObject({
      aws: k1,
      awsOrg: 'org-keep-me',
      awsPending: false,
      gcp: k1,
      azure: k1,
      file: k1,
    });

    const second = await cli('rotate', '--now', 'app', '--json');
    expect(second.code, second.stderr).toBe(0);
    expect(second.result).toMatchObject({ outcome: 'rotated', oldKeyId: boot.result!.newKeyId });
    const k2 = valueOf(second.result!.newKeyId)!;
    expect(await served()).toEqual({
      aws: k2,
      awsOrg: 'org-keep-me',
      awsPrev: k1,
      awsPending: false,
      gcp: k2,
      azure: k2,
      file: k2,
    });
    expect(openai.state.liveKeys().some((k) => k.value === k1)).toBe(false);

    const third = await cli('rotate', '--now', 'app', '--json');
    expect(third.code, third.stderr).toBe(0);
    const k3 = valueOf(third.result!.newKeyId)!;
    expect(await served()).toEqual({
      aws: k3,
      awsOrg: 'org-keep-me',
      awsPrev: k2,
      awsPending: false,
      gcp: k3,
      azure: k3,
      file: k3,
    });
    expect(second.stdout + second.stderr + third.stdout + third.stderr).not.toContain(CANARY);
  });

  it('a failure in the third store rolls every store back in reverse and deletes the new key (exit 1)', async () => {
    const before = await served();
    const oldId = openai.state.liveKeys().find((k) => k.value === before.aws)!.id;
    az.fault({ op: 'setSecret', name: 'openai-key', status: 503, times: 100 });
    try {
      const r = await cli('rotate', '--now', 'app', '--json');
      expect(r.code, r.stderr).toBe(1);
      expect(r.result).toMatchObject({
        outcome: 'rolled_back',
        oldKeyId: oldId,
        error: { stage: 'promote', code: 'STORE_UNAVAILABLE' },
      });
      const after = await served();
      expect(after).toMatchObject({
        aws: before.aws,
        awsOrg: 'org-keep-me',
        awsPending: false,
        gcp: before.aws,
        azure: before.aws,
        file: before.aws,
      });
      expect(openai.state.liveKeys().some((k) => k.id === r.result!.newKeyId)).toBe(false);
      expect(openai.state.liveKeys().some((k) => k.id === oldId)).toBe(true);
    } finally {
      az.clearFaults();
    }
    // and the next rotation works from the restored state (below)
    const again = await cli('rotate', '--now', 'app', '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(again.result).toMatchObject({ outcome: 'rotated', oldKeyId: oldId });
  });

  /** what the three stores of `trio` serve now */
  async function trio() {
    const a = (await aws.send(new GetSecretValueCommand({ SecretId: 'prod/trio', VersionStage: 'AWSCURRENT' })))
      .SecretString;
    const z = (await azRaw.getSecret('trio-key')).value;
    const f = await openFileStore(dir, 'trio', 'cd'.repeat(32));
    return [a, z, (await f.readCurrent())?.secret.reveal()];
  }

  it.each([
    [
      'stage',
      () => az.fault({ op: 'setSecret', name: 'trio-key--pending', status: 503, times: 100 }),
      'STORE_UNAVAILABLE',
    ],
    ['promote', () => az.fault({ op: 'setSecret', name: 'trio-key', status: 503, times: 100 }), 'STORE_UNAVAILABLE'],
    ['verify', () => void (openai.state.newKeys.propagationChecks = 1_000_000), 'KEY_INVALID'],
  ])(
    'a failure in the 2nd of 3 stores (or of the key) at %s leaves all three on the old key',
    async (stage, inject, code) => {
      if (!(await cli('rotate', '--now', 'trio', '--json')).result) throw new Error('no result');
      const before = await trio();
      expect(new Set(before).size).toBe(1);
      const oldId = openai.state.liveKeys().find((k) => k.value === before[0])!.id;
      inject();
      try {
        const r = await cli('rotate', '--now', 'trio', '--json');
        expect(r.code, r.stderr).toBe(1);
        expect(r.result).toMatchObject({ outcome: 'rolled_back', oldKeyId: oldId, error: { stage, code } });
        expect(await trio()).toEqual(before);
        expect(openai.state.liveKeys().some((k) => k.id === r.result!.newKeyId)).toBe(false);
      } finally {
        az.clearFaults();
        openai.state.newKeys.propagationChecks = 0;
      }
    },
  );
});
