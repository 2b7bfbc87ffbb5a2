/**
 * AWS Secrets Manager store against moto (python3 -m moto.server on 127.0.0.1), with the real
 * @aws-sdk/client-secrets-manager over its real JSON wire protocol. Raw SDK calls check what a
 * consumer would see (GetSecretValue without a stage = AWSCURRENT) and the staging labels.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { randomBytes } from 'node:crypto';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  SecretsManagerServiceException,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { Logger, ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { systemClock } from '../../src/core/clock.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { awsSecretsManagerStoreSchema } from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.schema.ts';
import { createAwsSecretsManagerStore } from '../../providers/stores/aws-secrets-manager/index.ts';
import {
  PLACEHOLDER_LABEL,
  PLACEHOLDER_TEXT,
  metaLabel,
  parseMetaLabel,
  requestToken,
} from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.labels.ts';
import { mapAwsError } from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.errors.ts';
import { describeStoreContract, meta, value } from './store-contract.ts';
import { CANARY } from '../canary.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { linesLogger } from '../helpers/logger.ts';

const REGION = 'eu-west-1';
const CREDS = { AWS_ACCESS_KEY_ID: 'testing-access-key', AWS_SECRET_ACCESS_KEY: 'testing-secret-key' };
const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';
const R3 = 'rot-20261103t000000z-00000003';
const R4 = 'rot-20261104t000000z-00000004';

const MOTO = motoSupportOrSkip('aws-secrets-manager store tests');

// --- a logger that keeps every line, written to the artifacts dir for the global canary scan
const logLines: string[] = [];
const testLogger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);

describe.skipIf(!MOTO)('aws-secrets-manager store (moto)', () => {
  let moto: Moto;
  let raw: SecretsManagerClient;
  const opened: SecretStore[] = [];

  beforeAll(async () => {
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    moto = await startMoto();
    raw = new SecretsManagerClient({
      endpoint: moto.endpoint,
      region: REGION,
      credentials: { accessKeyId: CREDS.AWS_ACCESS_KEY_ID, secretAccessKey: CREDS.AWS_SECRET_ACCESS_KEY },
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(opened.map(async (s) => s.close?.()));
    raw?.destroy();
    await moto?.close();
    capture('aws-secrets-manager-store.log', logLines.join('\n'));
  });

  function ctx(): ProviderContext {
    const dir = tempDir('aws-sm');
    return {
      keyName: 'app',
      stateDir: dir,
      configDir: dir,
      logger: testLogger(),
      clock: systemClock,
      env: { ...CREDS, AWS_EC2_METADATA_DISABLED: 'true' },
      providerState: { get: () => undefined, set: async () => {} },
    };
  }

  async function store(secretId: string, extra: { jsonKey?: string; endpoint?: string } = {}): Promise<SecretStore> {
    const cfg = awsSecretsManagerStoreSchema.parse({
      type: 'aws-secrets-manager',
      secretId,
      region: REGION,
      endpoint: extra.endpoint ?? moto.endpoint,
      ...(extra.jsonKey ? { jsonKey: extra.jsonKey } : {}),
    });
    const s = await createAwsSecretsManagerStore(cfg, ctx());
    opened.push(s);
    return s;
  }

  async function newSecret(initial?: string): Promise<string> {
    const name = `keyrotor/test/${randomBytes(6).toString('hex')}`;
    await raw.send(
      new CreateSecretCommand({ Name: name, ...(initial !== undefined ? { SecretString: initial } : {}) }),
    );
    return name;
  }
  async function dropSecret(name: string) {
    await raw.send(new DeleteSecretCommand({ SecretId: name, ForceDeleteWithoutRecovery: true })).catch(() => {});
  }
  /** labels per version, deprecated (label-less) versions left out */
  async function labels(name: string): Promise<Record<string, string[]>> {
    const d = await raw.send(new DescribeSecretCommand({ SecretId: name }));
    return Object.fromEntries(Object.entries(d.VersionIdsToStages ?? {}).filter(([, l]) => l.length > 0));
  }
  function holder(map: Record<string, string[]>, label: string): string | undefined {
    return Object.entries(map).find(([, l]) => l.includes(label))?.[0];
  }
  /**
   * What a consumer reads: AWSCURRENT. Asked for explicitly, because of a moto quirk: GetSecretValue
   * without VersionStage returns moto's "default version" (the last one written with AWSCURRENT by
   * CreateSecret/PutSecretValue), which UpdateSecretVersionStage never moves. AWS follows the label.
   */
  async function consumerRead(name: string, stage = 'AWSCURRENT'): Promise<string> {
    const r = await raw.send(new GetSecretValueCommand({ SecretId: name, VersionStage: stage }));
    return r.SecretString!;
  }
  /**
   * A person writes a new current value by hand. Done as PutSecretValue with a custom label, then
   * UpdateSecretVersionStage: moto's plain PutSecretValue (implicit AWSCURRENT) relabels its stale
   * "default version" as AWSPREVIOUS (wiping that version's labels) and leaves AWSCURRENT on the real
   * holder, so two versions would be AWSCURRENT. AWS does not do that.
   */
  async function handWrite(name: string, secretString: string): Promise<string> {
    const token = `${randomBytes(16).toString('hex')}`;
    await raw.send(
      new PutSecretValueCommand({
        SecretId: name,
        SecretString: secretString,
        ClientRequestToken: token,
        VersionStages: ['hand-written'],
      }),
    );
    const cur = holder(await labels(name), 'AWSCURRENT');
    await raw.send(
      new UpdateSecretVersionStageCommand({
        SecretId: name,
        VersionStage: 'AWSCURRENT',
        MoveToVersionId: token,
        ...(cur ? { RemoveFromVersionId: cur } : {}),
      }),
    );
    await raw.send(
      new UpdateSecretVersionStageCommand({ SecretId: name, VersionStage: 'hand-written', RemoveFromVersionId: token }),
    );
    return token;
  }
  async function allVersions(name: string) {
    // moto quirk: this response carries the secret Name in its ARN field; we only use Versions
    const r = await raw.send(new ListSecretVersionIdsCommand({ SecretId: name, IncludeDeprecated: true }));
    return r.Versions ?? [];
  }
  async function bootstrap(s: SecretStore) {
    await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
    await s.promote(R1);
  }
  async function rotate(s: SecretStore, r: string, n: number) {
    await s.stage({ rotationId: r, secret: value(n), meta: meta(r, n) });
    await s.promote(r);
  }
  async function errorOf(p: Promise<unknown>): Promise<KeyrotorError> {
    const e = await p.then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(KeyrotorError);
    const err = e as KeyrotorError;
    capture('aws-sm-error.txt', `${inspect(err, { depth: 10 })}\n${JSON.stringify(err.toRecord())}`);
    expect(inspect(err, { depth: 10 })).not.toContain(CANARY);
    expect(JSON.stringify(err.toRecord())).not.toContain(CANARY);
    return err;
  }

  // ------------------------------------------------------------------ the shared contract, twice

  describeStoreContract('aws-secrets-manager (moto, plain value)', async () => {
    const name = await newSecret();
    return {
      store: await store(name),
      cleanup: () => dropSecret(name),
      defaultRead: () => consumerRead(name),
      reopen: () => store(name),
    };
  });

  const OTHER = { db_password: 'not-a-key-but-keep-me', region: 'eu', nested: { a: 1 } };
  describeStoreContract('aws-secrets-manager (moto, jsonKey with other fields)', async () => {
    const name = await newSecret(JSON.stringify(OTHER));
    return {
      store: await store(name, { jsonKey: 'openai_api_key' }),
      reopen: () => store(name, { jsonKey: 'openai_api_key' }),
      cleanup: () => dropSecret(name),
      defaultRead: async () => (JSON.parse(await consumerRead(name)) as { openai_api_key: string }).openai_api_key,
    };
  });

  // ------------------------------------------------------------------ AWS specifics

  it('promote leaves AWSCURRENT on the new version, AWSPREVIOUS on the old one, no AWSPENDING (raw SDK view)', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    const { versionId: v2 } = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    let l = await labels(name);
    expect(l[v2]).toContain('AWSPENDING');
    expect(await consumerRead(name)).toBe(value(1).reveal()); // staged, invisible to consumers
    await s.promote(R2);
    l = await labels(name);
    const v1 = (await s.readPrevious())!.versionId;
    expect(holder(l, 'AWSCURRENT')).toBe(v2);
    expect(holder(l, 'AWSPREVIOUS')).toBe(v1);
    expect(holder(l, 'AWSPENDING')).toBeUndefined();
    expect(await consumerRead(name)).toBe(value(2).reveal());
    expect(await consumerRead(name, 'AWSPREVIOUS')).toBe(value(1).reveal());
    // per-version metadata is one staging label on the version
    const metaLabels = l[v2]!.filter((x) => x.startsWith('kr:'));
    expect(metaLabels).toHaveLength(1);
    expect(parseMetaLabel(metaLabels[0]!)).toEqual({
      rotationId: R2,
      issuerKeyId: 'key_2',
      fingerprint: fingerprint(value(2)),
      createdAt: meta(R2, 2).createdAt,
    });
    // the version id is the deterministic ClientRequestToken of the rotation
    expect(v2).toBe(requestToken('stage', R2));
    expect(v2.length).toBeGreaterThanOrEqual(32);
    await dropSecret(name);
  });

  it('bootstrap: consumers read a placeholder (never the unverified key) until promote, and again after demote', async () => {
    const name = await newSecret();
    const s = await store(name);
    await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
    let l = await labels(name);
    const placeholder = holder(l, PLACEHOLDER_LABEL)!;
    expect(holder(l, 'AWSCURRENT')).toBe(placeholder);
    expect(await consumerRead(name)).toBe(PLACEHOLDER_TEXT);
    expect(await s.readCurrent()).toBeNull();
    await s.promote(R1);
    expect(await consumerRead(name)).toBe(value(1).reveal());
    expect(await s.readPrevious()).toBeNull(); // the placeholder is "no value"
    await s.demote(R1);
    l = await labels(name);
    expect(holder(l, 'AWSCURRENT')).toBe(placeholder);
    expect(holder(l, 'AWSPREVIOUS')).toBeUndefined(); // not left on the rejected key
    expect(await consumerRead(name)).toBe(PLACEHOLDER_TEXT);
    expect(await s.readCurrent()).toBeNull();
    await dropSecret(name);
  });

  it('demote restores both AWSCURRENT and the AWSPREVIOUS that was there before promote', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await rotate(s, R2, 2);
    const before = await labels(name);
    await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
    await s.promote(R3);
    await s.demote(R3);
    await s.demote(R3);
    const after = await labels(name);
    expect(holder(after, 'AWSCURRENT')).toBe(holder(before, 'AWSCURRENT'));
    expect(holder(after, 'AWSPREVIOUS')).toBe(holder(before, 'AWSPREVIOUS'));
    expect((await s.readPrevious())?.meta.rotationId).toBe(R1);
    expect(Object.keys(after).some((v) => after[v]!.some((x) => x.startsWith('kr-prev:')))).toBe(false);
    await s.unstage(R3);
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
    await dropSecret(name);
  });

  it('a retried stage is a no-op: one version, same id, also when the version lost its labels', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    const n0 = (await allVersions(name)).length;
    const a = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const b = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(b.versionId).toBe(a.versionId);
    expect((await allVersions(name)).length).toBe(n0 + 1);
    // simulate a crash after PutSecretValue whose labels were later removed: the token makes the
    // repeated PutSecretValue a no-op and stage puts the labels back
    for (const label of ['AWSPENDING', metaLabel(R2, meta(R2, 2))]) {
      await raw.send(
        new UpdateSecretVersionStageCommand({ SecretId: name, VersionStage: label, RemoveFromVersionId: a.versionId }),
      );
    }
    const c = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    expect(c.versionId).toBe(a.versionId);
    expect((await allVersions(name)).length).toBe(n0 + 1);
    expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
    await dropSecret(name);
  });

  it('two promotes racing (a retry overlapping the first call) converge: the loser sees its goal reached', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    await Promise.all([s.promote(R2), s.promote(R2), s.promote(R2)]);
    const l = await labels(name);
    expect(await consumerRead(name)).toBe(value(2).reveal());
    expect(await consumerRead(name, 'AWSPREVIOUS')).toBe(value(1).reveal());
    expect(holder(l, 'AWSPENDING')).toBeUndefined();
    expect(
      Object.values(l)
        .flat()
        .filter((x) => x === 'AWSCURRENT'),
    ).toHaveLength(1);
    await Promise.all([s.demote(R2), s.demote(R2)]);
    expect(await consumerRead(name)).toBe(value(1).reveal());
    await dropSecret(name);
  });

  it('token reuse with a different value is STORE_CONFLICT (ResourceExistsException), value not in the error', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    await s.unstage(R2);
    const err = await errorOf(s.stage({ rotationId: R2, secret: value(3), meta: meta(R2, 3) }));
    expect(err.code).toBe('STORE_CONFLICT');
    expect(err.retryable).toBe(false);
    expect(err.stage).toBe('stage');
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
    await dropSecret(name);
  });

  it('a version pending for another rotation blocks stage with LOCKED naming that rotation', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const err = await errorOf(s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }));
    expect(err.code).toBe('LOCKED');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(R2);
    expect(err.message).toContain(name);
    // R2's pending version is untouched
    expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
    expect((await s.describe()).pending?.meta.rotationId).toBe(R2);
    // once R2 is unstaged, R3 may stage
    await s.unstage(R2);
    await rotate(s, R3, 3);
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(3).reveal());
    await dropSecret(name);
  });

  it('an AWSPENDING keyrotor did not write (e.g. a native rotation) also blocks stage', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await raw.send(
      new PutSecretValueCommand({
        SecretId: name,
        SecretString: 'foreign-pending',
        ClientRequestToken: '99999999-9999-4999-8999-999999999999',
        VersionStages: ['AWSPENDING'],
      }),
    );
    const err = await errorOf(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }));
    expect(err.code).toBe('LOCKED');
    expect(err.message).toContain('did not stage');
    expect(err.hint).toContain('update-secret-version-stage');
    await dropSecret(name);
  });

  it('unknown secret: STORE_NOT_FOUND naming secret and region, for reads, stage and check', async () => {
    const s = await store('keyrotor/test/does-not-exist');
    for (const call of [
      () => s.check(),
      () => s.readCurrent(),
      () => s.describe(),
      () => s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }),
    ]) {
      const err = await errorOf(call());
      expect(err.code).toBe('STORE_NOT_FOUND');
      expect(err.retryable).toBe(false);
      expect(err.message).toBe(
        `secret keyrotor/test/does-not-exist does not exist in region ${REGION}; create it first`,
      );
      expect(err.hint).toContain('create-secret');
    }
  });

  it('region comes from a full secret ARN when the store config has none', async () => {
    const arn = 'arn:aws:secretsmanager:ap-south-1:123456789012:secret:keyrotor/test/by-arn-AbCdEf';
    const cfg = awsSecretsManagerStoreSchema.parse({
      type: 'aws-secrets-manager',
      secretId: arn,
      endpoint: moto.endpoint,
    });
    const s = await createAwsSecretsManagerStore(cfg, ctx());
    opened.push(s);
    const err = await errorOf(s.readCurrent());
    expect(err.code).toBe('STORE_NOT_FOUND');
    expect(err.message).toBe(`secret ${arn} does not exist in region ap-south-1; create it first`);
  });

  it('a secret scheduled for deletion is STORE_NOT_FOUND with a restore hint', async () => {
    const name = await newSecret();
    const s = await store(name);
    await raw.send(new DeleteSecretCommand({ SecretId: name, RecoveryWindowInDays: 7 }));
    const err = await errorOf(s.check());
    expect(err.code).toBe('STORE_NOT_FOUND');
    expect(err.hint).toContain('restore-secret');
    await dropSecret(name);
  });

  it('unreachable endpoint: STORE_UNAVAILABLE, retryable', async () => {
    const name = 'keyrotor/test/unreachable';
    const s = await store(name, { endpoint: 'http://127.0.0.1:9' });
    const err = await errorOf(s.check());
    expect(err.code).toBe('STORE_UNAVAILABLE');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain(name);
  });

  it('unstage refuses to touch a version that is current', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await rotate(s, R2, 2);
    const err = await errorOf(s.unstage(R2));
    expect(err.code).toBe('STORE_CONFLICT');
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
    await dropSecret(name);
  });

  it('labels stay bounded over many rotations (old keyrotor labels are swept)', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await rotate(s, R2, 2);
    await rotate(s, R3, 3);
    await rotate(s, R4, 4);
    const l = await labels(name);
    // left: current (AWSCURRENT, kr:R4), previous (AWSPREVIOUS, kr:R3) and the version that was
    // previous before R4 promoted (kr:R2, kr-prev:R4, kept for demote). The placeholder and R1's
    // version lost all labels (deprecated).
    expect(Object.values(l).flat().length).toBeLessThanOrEqual(6);
    expect(Object.keys(l)).toHaveLength(3);
    expect(
      Object.values(l)
        .flat()
        .filter((x) => x === PLACEHOLDER_LABEL || x.includes(R1)),
    ).toEqual([]);
    expect((await s.readPrevious())?.meta.rotationId).toBe(R3);
    // ...and demote of the latest still restores the previous it replaced
    await s.demote(R4);
    expect((await s.readCurrent())?.meta.rotationId).toBe(R3);
    expect((await s.readPrevious())?.meta.rotationId).toBe(R2);
    await dropSecret(name);
  });

  // ------------------------------------------------------------------ JSON field mode

  it('jsonKey: other fields survive a rotation and a demote; reads return only the field', async () => {
    const name = await newSecret(JSON.stringify(OTHER));
    const s = await store(name, { jsonKey: 'openai_api_key' });
    expect(await s.readCurrent()).toBeNull(); // the object exists but holds no key yet
    await bootstrap(s);
    await rotate(s, R2, 2);
    const cur = JSON.parse(await consumerRead(name));
    expect(cur).toEqual({ ...OTHER, openai_api_key: value(2).reveal() });
    const prev = JSON.parse(await consumerRead(name, 'AWSPREVIOUS'));
    expect(prev).toEqual({ ...OTHER, openai_api_key: value(1).reveal() });
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
    // a person edits another field between rotations: the next stage keeps the edit
    await handWrite(name, JSON.stringify({ ...cur, region: 'us' }));
    await rotate(s, R3, 3);
    expect(JSON.parse(await consumerRead(name))).toEqual({ ...OTHER, region: 'us', openai_api_key: value(3).reveal() });
    await s.demote(R3);
    expect(JSON.parse(await consumerRead(name))).toEqual({ ...OTHER, region: 'us', openai_api_key: value(2).reveal() });
    await dropSecret(name);
  });

  it('jsonKey bootstrap into a secret with no value: placeholder is {} and demote leaves no key', async () => {
    const name = await newSecret();
    const s = await store(name, { jsonKey: 'k' });
    await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
    expect(await consumerRead(name)).toBe('{}');
    await s.promote(R1);
    expect(JSON.parse(await consumerRead(name))).toEqual({ k: value(1).reveal() });
    await s.demote(R1);
    expect(await consumerRead(name)).toBe('{}');
    expect(await s.readCurrent()).toBeNull();
    await dropSecret(name);
  });

  it('jsonKey: a current value that is not a JSON object is STORE_CORRUPT, without quoting it', async () => {
    const name = await newSecret(`${CANARY}-not-json`);
    const s = await store(name, { jsonKey: 'k' });
    for (const call of [
      () => s.check(),
      () => s.readCurrent(),
      () => s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) }),
    ]) {
      const err = await errorOf(call());
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toContain('is not JSON');
    }
    await handWrite(name, JSON.stringify([CANARY]));
    expect((await errorOf(s.readCurrent())).message).toContain('not a JSON object');
    await handWrite(name, JSON.stringify({ k: 42 }));
    expect((await errorOf(s.readCurrent())).code).toBe('STORE_CORRUPT');
    await dropSecret(name);
  });

  it('jsonKey: a keyrotor-written version that lost its field is STORE_CORRUPT', async () => {
    const name = await newSecret();
    const s = await store(name, { jsonKey: 'k' });
    await bootstrap(s);
    // someone writes a new version by hand but copies our metadata label onto it
    const l = await labels(name);
    const cur = holder(l, 'AWSCURRENT')!;
    const ml = l[cur]!.find((x) => x.startsWith('kr:'))!;
    const hand = await handWrite(name, JSON.stringify({ other: 1 }));
    await raw.send(
      new UpdateSecretVersionStageCommand({
        SecretId: name,
        VersionStage: ml,
        MoveToVersionId: hand,
        RemoveFromVersionId: cur,
      }),
    );
    const err = await errorOf(s.readCurrent());
    expect(err.code).toBe('STORE_CORRUPT');
    expect(err.message).toContain('no "k" field');
    await dropSecret(name);
  });

  it('nothing printable carries the value: describe, label, versions, errors, logs', async () => {
    const name = await newSecret();
    const s = await store(name);
    await bootstrap(s);
    await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
    const printed = [
      JSON.stringify(await s.describe()),
      s.label,
      inspect(await s.readPending(R2), { depth: 10 }),
      inspect(await s.readCurrent(), { depth: 10 }),
      JSON.stringify(await s.readPrevious()),
      JSON.stringify(await labels(name)),
      logLines.join('\n'),
    ].join('\n');
    capture('aws-sm-printed.txt', printed);
    expect(printed).not.toContain(CANARY);
    expect(s.label).toBe(`aws-secrets-manager:${name}`);
    await dropSecret(name);
  });
});

// ------------------------------------------------------------------ error mapping (no server needed)

describe('aws-secrets-manager error mapping', () => {
  const base = { secretId: 'prod/openai', region: 'eu-west-1' } as const;
  const sdkError = (name: string, status: number, message = 'x') =>
    new SecretsManagerServiceException({
      name,
      $fault: status >= 500 ? 'server' : 'client',
      $metadata: { httpStatusCode: status, requestId: 'req-1' },
      message,
    });

  it('AccessDeniedException names the IAM action of the failed call', () => {
    const e = mapAwsError(
      sdkError('AccessDeniedException', 400, `User arn:aws:iam::1:user/x is not authorized; ${CANARY}`),
      { ...base, op: 'PutSecretValue', stage: 'stage' },
    );
    expect(e.code).toBe('STORE_ACCESS_DENIED');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain('secretsmanager:PutSecretValue');
    expect(e.message).toContain('prod/openai');
    expect(e.hint).toContain('secretsmanager:PutSecretValue');
    expect(e.stage).toBe('stage');
    expect(inspect(e, { depth: 10 })).not.toContain(CANARY);
  });

  it('throttling and 5xx are STORE_UNAVAILABLE retryable; 4xx conflicts are not', () => {
    expect(mapAwsError(sdkError('ThrottlingException', 400), { ...base, op: 'DescribeSecret' })).toMatchObject({
      code: 'STORE_UNAVAILABLE',
      retryable: true,
    });
    expect(mapAwsError(sdkError('InternalServiceError', 500), { ...base, op: 'GetSecretValue' })).toMatchObject({
      code: 'STORE_UNAVAILABLE',
      retryable: true,
    });
    expect(mapAwsError(sdkError('SomethingNew', 503), { ...base, op: 'GetSecretValue' })).toMatchObject({
      code: 'STORE_UNAVAILABLE',
      retryable: true,
    });
    expect(
      mapAwsError(sdkError('ResourceExistsException', 400), { ...base, op: 'PutSecretValue', versionId: 'v' }),
    ).toMatchObject({ code: 'STORE_CONFLICT', retryable: false });
    expect(mapAwsError(sdkError('DecryptionFailure', 400), { ...base, op: 'GetSecretValue' })).toMatchObject({
      code: 'STORE_ACCESS_DENIED',
    });
    expect(mapAwsError(sdkError('UnrecognizedClientException', 400), { ...base, op: 'DescribeSecret' })).toMatchObject({
      code: 'STORE_ACCESS_DENIED',
    });
    const net = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    expect(mapAwsError(net, { ...base, op: 'DescribeSecret' })).toMatchObject({
      code: 'STORE_UNAVAILABLE',
      retryable: true,
    });
  });

  it('scrubs the value being written and never keeps the raw SDK error', () => {
    const secretValue = `${CANARY}-written`;
    const e = mapAwsError(sdkError('InvalidParameterException', 400, `bad value ${secretValue}`), {
      ...base,
      op: 'PutSecretValue',
      scrub: [secretValue],
    });
    expect(inspect(e, { depth: 10 })).not.toContain(secretValue);
    expect(e.cause).not.toBeInstanceOf(SecretsManagerServiceException);
  });
});
