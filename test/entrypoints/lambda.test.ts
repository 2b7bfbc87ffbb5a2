/**
 * The Lambda handler, invoked in process with real event shapes (@types/aws-lambda) against moto (AWS
 * Secrets Manager over the real SDK) and the loopback OpenAI Admin API fake: scheduled runs, direct
 * invokes, the time budget (in_progress, then the next call finishes) and Secrets Manager's native
 * 4-step rotation (each step, retries of a step, a ClientRequestToken mismatch, a rollback).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import type { ScheduledEvent, SecretsManagerRotationEvent } from 'aws-lambda';
import { parseConfig } from '../../src/app/config/load.ts';
import { createLogger } from '../../src/app/log.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import {
  createHandler,
  type LambdaContext,
  type RunResponse,
  type SecretsManagerStepResponse,
} from '../../src/entrypoints/lambda.ts';
import { secretIdMatches } from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.native.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';

const MOTO = motoSupportOrSkip('lambda handler (AWS on moto)');
const REGION = 'us-east-1';

function scheduledEvent(): ScheduledEvent {
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': 'Scheduled Event',
    source: 'aws.events',
    account: '123456789012',
    time: new Date().toISOString(),
    region: REGION,
    resources: [`arn:aws:events:${REGION}:123456789012:rule/keyrotor-schedule`],
    detail: {},
  };
}

function ctx(remainingMs = 600_000): LambdaContext {
  const until = Date.now() + remainingMs;
  return {
    getRemainingTimeInMillis: () => Math.max(0, until - Date.now()),
    awsRequestId: randomUUID(),
    functionName: 'keyrotor',
  };
}

describe('Secrets Manager SecretId matching', () => {
  const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/openai-AbCdEf';
  it.each([
    ['prod/openai', arn, true],
    [arn, arn, true],
    ['arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/openai', arn, true], // partial ARN
    ['prod/openai', 'prod/openai', true],
    ['prod/other', arn, false],
    ['prod', arn, false],
    ['arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/openai', arn, false], // other region
    ['arn:aws:secretsmanager:eu-west-1:999999999999:secret:prod/openai', arn, false], // other account
  ])('%s vs %s -> %s', (configured, fromEvent, want) => {
    expect(secretIdMatches(configured, fromEvent)).toBe(want);
  });
});

describe.skipIf(!MOTO)('Lambda handler', () => {
  let openai: OpenAIFake;
  let moto: Moto;
  let aws: SecretsManagerClient;
  let logText = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logText += chunk.toString();
      cb();
    },
  });
  const env = () => ({
    ...process.env,
    OPENAI_ADMIN_KEY: openai.adminKey,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_EC2_METADATA_DISABLED: 'true',
  });

  beforeAll(async () => {
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    [openai, moto] = await Promise.all([startOpenAIFake(), startMoto()]);
    aws = new SecretsManagerClient({
      endpoint: moto.endpoint,
      region: REGION,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
  }, 60_000);

  afterAll(async () => {
    aws?.destroy();
    await Promise.all([openai?.close(), moto?.close()]);
    capture('lambda.log', logText);
    expect(logText).not.toContain(CANARY);
  });

  /** a fresh secret, key and state dir: returns the handler and helpers */
  async function setup(opts: { safetyMarginMs?: number; health?: string; defaults?: string } = {}) {
    const secret = `prod/openai-${randomUUID().slice(0, 8)}`;
    await aws.send(new CreateSecretCommand({ Name: secret }));
    const arn = (await aws.send(new DescribeSecretCommand({ SecretId: secret }))).ARN!;
    const sa = openai.state.addServiceAccount(`lambda-${secret}`);
    const dir = tempDir('lambda');
    const cfg = parseConfig(
      `version: 1
defaults:
  verify: { timeout: 20s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
${opts.defaults ? `  ${opts.defaults}\n` : ''}keys:
  - name: app
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores:
      - { type: aws-secrets-manager, secretId: "${secret}", region: ${REGION}, endpoint: "${moto.endpoint}" }
    health:
      - ${opts.health ?? '{ type: issuer-smoke-test, timeout: 30s, interval: 50ms }'}
`,
      path.join(dir, 'rotation.config.yaml'),
      {},
    );
    const logger = await createLogger({ pretty: false, level: 'debug', destination: sink });
    const stateStore = createFileStateStore(cfg.stateDir);
    const handler = createHandler({
      config: cfg,
      env: env(),
      logger,
      stateStore,
      ...(opts.safetyMarginMs !== undefined ? { safetyMarginMs: opts.safetyMarginMs } : {}),
    });
    const run = async (event: unknown, c: LambdaContext = ctx()) => {
      const r = await handler(event, c);
      capture('lambda-result.json', JSON.stringify(r));
      expect(JSON.stringify(r)).not.toContain(CANARY);
      return r;
    };
    return { secret, arn, sa, dir, cfg, stateStore, handler, run, stateDir: cfg.stateDir };
  }

  const results = (r: unknown) => (r as RunResponse).results;
  const valueOf = (keyId: string | null | undefined) => openai.state.keys.find((k) => k.id === keyId)?.value;
  async function current(secret: string) {
    return (await aws.send(new GetSecretValueCommand({ SecretId: secret, VersionStage: 'AWSCURRENT' }))).SecretString;
  }
  async function stagesOf(secret: string, versionId: string) {
    return (await aws.send(new DescribeSecretCommand({ SecretId: secret }))).VersionIdsToStages?.[versionId] ?? [];
  }
  async function rejection(p: Promise<unknown>): Promise<KeyrotorError> {
    const e = await p.then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(KeyrotorError);
    capture('lambda-error.txt', JSON.stringify((e as KeyrotorError).toRecord()));
    expect(String((e as Error).message)).not.toContain(CANARY);
    return e as KeyrotorError;
  }

  it('a scheduled event rotates every due key and returns the CLI result JSON; then nothing is due', async () => {
    const { run, secret } = await setup();
    const r1 = results(await run(scheduledEvent()));
    expect(r1).toHaveLength(1);
    expect(r1[0]).toMatchObject({ key: 'app', outcome: 'rotated', bootstrap: true, oldKeyId: null });
    expect(await current(secret)).toBe(valueOf(r1[0]!.newKeyId));
    // EventBridge Scheduler's empty input is a scheduled run too; nothing is due now
    const r2 = results(await run({}));
    expect(r2[0]).toMatchObject({ key: 'app', outcome: 'skipped' });
  });

  it('durable waits: an invocation parks a rotation at its gate (waiting); a later one continues it', async () => {
    const { run, secret, stateStore, stateDir } = await setup({
      health: '{ type: manual, name: ops, timeout: 60s, interval: 20s }',
      defaults: 'park: { after: 1s }',
    });
    // the first invocation bootstraps the key; it waits at the gate like any rotation, and is parked
    const r1 = results(await run({ key: 'app', now: true }))[0]!;
    expect(r1).toMatchObject({ outcome: 'waiting', stage: 'confirm' });
    expect(Date.parse(r1.wakeAt!)).toBeGreaterThan(Date.now() + 10_000);
    expect((await stateStore.read('app'))?.active).toMatchObject({ rotationId: r1.rotationId, wakeAt: r1.wakeAt });
    // the next scheduled invocation leaves it alone: its wake time has not come
    const r2 = results(await run(scheduledEvent()))[0]!;
    expect(r2).toMatchObject({ outcome: 'waiting', untouched: true, rotationId: r1.rotationId });
    // a person confirms from a laptop (the decision, then the wake `keyrotor confirm` does)
    const { decisionFile, DECISION_FORMAT } = await import('../../providers/health/manual/manual.decision.ts');
    const { wakeParked } = await import('../../src/app/run/wake.ts');
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const file = decisionFile(stateDir, 'app', r1.rotationId!);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(
      file,
      JSON.stringify({
        format: DECISION_FORMAT,
        key: 'app',
        rotationId: r1.rotationId,
        decision: 'confirm',
        at: new Date().toISOString(),
        by: 'ops@laptop',
      }),
    );
    expect(await wakeParked(stateStore, 'app', r1.rotationId!, Date.now())).toBe('woken');
    // the next scheduled invocation continues it and finishes it
    const r3 = results(await run(scheduledEvent()))[0]!;
    expect(r3).toMatchObject({ outcome: 'rotated', rotationId: r1.rotationId, bootstrap: true });
    expect(await current(secret)).toBe(valueOf(r3.newKeyId));
  });

  it('a direct invoke rotates one key now; unknown keys and malformed events are clear errors', async () => {
    const { run, secret } = await setup();
    const boot = results(await run({ key: 'app', now: true }))[0]!;
    const r = results(await run({ key: 'app', now: true, leaked: false }))[0]!;
    expect(r).toMatchObject({ outcome: 'rotated', oldKeyId: boot.newKeyId });
    expect(await current(secret)).toBe(valueOf(r.newKeyId));
    expect(openai.state.keyById(boot.newKeyId!)?.deleted).toBe(true);

    expect((await rejection(run({ key: 'nope', now: true }))).code).toBe('UNKNOWN_KEY');
    expect((await rejection(run({ key: 'app', leaked: true }))).code).toBe('USAGE');
    expect((await rejection(run({ key: 'app', now: 'yes' }))).code).toBe('USAGE');
    expect((await rejection(run({ hello: 'world' }))).code).toBe('USAGE');
    expect((await rejection(run({ 'detail-type': 'Object Created', source: 'aws.s3' }))).code).toBe('USAGE');
    expect((await rejection(run([1, 2]))).code).toBe('USAGE');
  });

  it('a tiny remaining-time budget stops cleanly with in_progress; the next invocation finishes the same rotation', async () => {
    const { run, stateStore, secret } = await setup({ safetyMarginMs: 1_000 });
    results(await run({ key: 'app', now: true })); // bootstrap
    const before = await current(secret);
    openai.setNewKeyPropagation(1_000_000); // the new key does not work yet: verify keeps polling
    const r1 = results(await run({ key: 'app', now: true }, ctx(1_600)))[0]!;
    openai.setNewKeyPropagation(0);
    expect(r1).toMatchObject({ outcome: 'in_progress', stage: 'verify' });
    expect((await stateStore.read('app'))?.active?.rotationId).toBe(r1.rotationId);
    expect(await current(secret)).toBe(before); // nothing promoted; the old key still serves
    openai.delayPropagation(r1.newKeyId!, 0); // now it works
    // the next scheduled invocation resumes the unfinished rotation first
    const r2 = results(await run(scheduledEvent()))[0]!;
    expect(r2).toMatchObject({ outcome: 'rotated', rotationId: r1.rotationId, newKeyId: r1.newKeyId });
    expect(await current(secret)).toBe(valueOf(r1.newKeyId));
    expect((await stateStore.read('app'))?.active).toBeNull();
  });

  describe('Secrets Manager native rotation', () => {
    const step = (
      s: SecretsManagerRotationEvent['Step'],
      SecretId: string,
      ClientRequestToken: string,
    ): SecretsManagerRotationEvent => ({
      Step: s,
      SecretId,
      ClientRequestToken,
    });

    it('the four steps drive a full rotation; every step can be retried; the new version is the token', async () => {
      const { run, arn, secret, stateStore } = await setup();
      const boot = results(await run({ key: 'app', now: true }))[0]!;
      const oldValue = await current(secret);
      const token = randomUUID();
      const created = () => openai.state.keys.filter((k) => k.name.startsWith('keyrotor.app.')).length;
      const keysBefore = created();

      const c1 = (await run(step('createSecret', arn, token))) as SecretsManagerStepResponse;
      expect(c1).toMatchObject({ step: 'createSecret', key: 'app', token, status: 'done', stage: 'verify' });
      const stages = await stagesOf(secret, token);
      expect(stages).toContain('AWSPENDING');
      expect(stages.some((l) => l.startsWith(`kr:${c1.rotationId}`))).toBe(true);
      expect(await current(secret)).toBe(oldValue); // consumers still read the old key
      expect(created()).toBe(keysBefore + 1);

      // a retried createSecret changes nothing
      expect(await run(step('createSecret', arn, token))).toMatchObject({
        status: 'done',
        rotationId: c1.rotationId,
        stage: 'verify',
      });
      expect(created()).toBe(keysBefore + 1);

      expect(await run(step('setSecret', arn, token))).toMatchObject({ status: 'done', rotationId: c1.rotationId });
      expect(await run(step('setSecret', arn, token))).toMatchObject({ status: 'done' });

      const t = (await run(step('testSecret', arn, token))) as SecretsManagerStepResponse;
      expect(t).toMatchObject({ status: 'done', rotationId: c1.rotationId, stage: 'promote' });
      expect(await current(secret)).toBe(oldValue); // testSecret does not promote
      expect(await run(step('testSecret', arn, token))).toMatchObject({ status: 'done', stage: 'promote' });

      const f = (await run(step('finishSecret', arn, token))) as SecretsManagerStepResponse;
      expect(f).toMatchObject({ status: 'done', rotationId: c1.rotationId, stage: 'rotated' });
      expect(await stagesOf(secret, token)).toContain('AWSCURRENT');
      expect(await stagesOf(secret, token)).not.toContain('AWSPENDING');
      const rec = await stateStore.read('app');
      expect(rec?.last).toMatchObject({ rotationId: c1.rotationId, outcome: 'rotated', oldKeyId: boot.newKeyId });
      expect(await current(secret)).toBe(valueOf(rec!.last!.newKeyId));
      expect(openai.state.keyById(boot.newKeyId!)?.deleted).toBe(true);

      // retries after the end: every step reports done, nothing new is created
      for (const s of ['finishSecret', 'testSecret', 'createSecret'] as const) {
        expect(await run(step(s, arn, token))).toMatchObject({ status: 'done' });
      }
      expect(created()).toBe(keysBefore + 1);
      // the secret name works as SecretId too
      expect(await run(step('finishSecret', secret, token))).toMatchObject({ status: 'done' });
    });

    it('a ClientRequestToken mismatch is a clear error and changes nothing', async () => {
      const { run, arn, secret } = await setup();
      results(await run({ key: 'app', now: true }));
      const t1 = randomUUID();
      const t2 = randomUUID();
      const c1 = (await run(step('createSecret', arn, t1))) as SecretsManagerStepResponse;
      const before = await current(secret);

      const mismatch = await rejection(run(step('testSecret', arn, t2)));
      expect(mismatch.code).toBe('STORE_CONFLICT');
      expect(mismatch.message).toContain('ClientRequestToken mismatch');
      expect(mismatch.message).toContain(t1);
      expect(mismatch.message).toContain(t2);
      const busy = await rejection(run(step('createSecret', arn, t2)));
      expect(busy.code).toBe('LOCKED');
      expect(busy.message).toContain(c1.rotationId!);
      expect(await stagesOf(secret, t2)).toEqual([]);
      expect(await current(secret)).toBe(before);

      // the rotation of t1 is unaffected and finishes
      for (const s of ['setSecret', 'testSecret', 'finishSecret'] as const)
        expect(await run(step(s, arn, t1))).toMatchObject({ status: 'done' });
      expect(await stagesOf(secret, t1)).toContain('AWSCURRENT');
      // a step for a token that never had a createSecret
      expect((await rejection(run(step('finishSecret', arn, randomUUID())))).message).toContain(
        'ClientRequestToken mismatch',
      );
      // a secret no key is configured with
      expect((await rejection(run(step('createSecret', `${arn}-other`, randomUUID())))).code).toBe('UNKNOWN_KEY');
      expect((await rejection(run({ Step: 'createSecret', SecretId: arn, ClientRequestToken: 'short' }))).code).toBe(
        'USAGE',
      );
    });

    it('finishSecret past its time: AWSCURRENT moved, the health gate continues on the next (scheduled) invocation', async () => {
      const { run, arn, secret, stateStore } = await setup({ safetyMarginMs: 0 });
      const boot = results(await run({ key: 'app', now: true }))[0]!;
      const token = randomUUID();
      for (const s of ['createSecret', 'setSecret', 'testSecret'] as const) await run(step(s, arn, token));
      openai.failNext('models.list', { status: 503, times: 1_000_000 }); // the health gate cannot pass yet
      const f = (await run(step('finishSecret', arn, token), ctx(2_500))) as SecretsManagerStepResponse;
      openai.resetFaults();
      expect(f).toMatchObject({ status: 'in_progress', stage: 'confirm' });
      expect(await stagesOf(secret, token)).toContain('AWSCURRENT');
      expect(openai.state.keyById(boot.newKeyId!)?.deleted).toBe(false); // not revoked before the gate passed
      // the follow-up invocation (the EventBridge schedule) finishes confirm -> revoke
      const r = results(await run(scheduledEvent()))[0]!;
      expect(r).toMatchObject({ outcome: 'rotated', rotationId: f.rotationId });
      expect(openai.state.keyById(boot.newKeyId!)?.deleted).toBe(true);
      expect((await stateStore.read('app'))?.active).toBeNull();
      expect(await run(step('finishSecret', arn, token))).toMatchObject({ status: 'done' });
    });

    it('testSecret that fails rolls back (AWSPENDING cleared, new key deleted) and the token is not reused', async () => {
      const { run, arn, secret } = await setup();
      results(await run({ key: 'app', now: true }));
      const before = await current(secret);
      const token = randomUUID();
      openai.state.newKeys.lackScopes = true;
      try {
        const c = (await run(step('createSecret', arn, token))) as SecretsManagerStepResponse;
        const err = await rejection(run(step('testSecret', arn, token)));
        expect(err.code).toBe('KEY_MISSING_SCOPES');
        expect(err.message).toContain('rolled_back');
        expect(await stagesOf(secret, token)).toEqual([]);
        expect(await current(secret)).toBe(before);
        const newKey = openai.state.keys.find((k) => k.name === `keyrotor.app.${c.rotationId}`);
        expect(newKey?.deleted).toBe(true);
        const again = await rejection(run(step('createSecret', arn, token)));
        expect(again.message).toContain('already ended');
      } finally {
        openai.state.newKeys.lackScopes = false;
      }
    });
  });
});
