/**
 * AWS Secrets Manager store: malformed 200 answers (issue 5). The real @aws-sdk/client-secrets-manager
 * talks to moto through test/fakes/aws-fault-proxy.ts, which garbles the answer of one operation:
 * forwarded first (`applied`: the change took effect) or not forwarded at all. A garbled answer is never
 * success with missing data: it is a retryable STORE_UNAVAILABLE (or STORE_CORRUPT) in one line with no
 * value in it, and a retry converges on the same end state.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { randomBytes } from 'node:crypto';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { Logger, ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { systemClock } from '../../src/core/clock.ts';
import { awsSecretsManagerStoreSchema } from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.schema.ts';
import { createAwsSecretsManagerStore } from '../../providers/stores/aws-secrets-manager/index.ts';
import { meta, value } from './store-contract.ts';
import { CANARY } from '../canary.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { startAwsFaultProxy, type AwsFaultProxy } from '../fakes/aws-fault-proxy.ts';
import { linesLogger } from '../helpers/logger.ts';

const REGION = 'eu-west-1';
const CREDS = { AWS_ACCESS_KEY_ID: 'testing-access-key', AWS_SECRET_ACCESS_KEY: 'testing-secret-key' };
const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';
const R3 = 'rot-20261103t000000z-00000003';
const KINDS = ['truncated', 'html', 'shape'] as const;

const MOTO = motoSupportOrSkip('aws-secrets-manager malformed-answer tests');

const logLines: string[] = [];
const testLogger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);

describe.skipIf(!MOTO)('aws-secrets-manager store: malformed 200 answers (moto behind a fault proxy)', () => {
  let moto: Moto;
  let proxy: AwsFaultProxy;
  let raw: SecretsManagerClient;
  const opened: SecretStore[] = [];
  const seen: KeyrotorError[] = [];

  beforeAll(async () => {
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    moto = await startMoto();
    proxy = await startAwsFaultProxy(moto.endpoint);
    raw = new SecretsManagerClient({
      endpoint: moto.endpoint,
      region: REGION,
      credentials: { accessKeyId: CREDS.AWS_ACCESS_KEY_ID, secretAccessKey: CREDS.AWS_SECRET_ACCESS_KEY },
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(opened.map(async (s) => s.close?.()));
    raw?.destroy();
    await proxy?.close();
    await moto?.close();
    capture('aws-malformed-store.log', logLines.join('\n'));
    capture('aws-malformed-proxy.json', JSON.stringify(proxy?.log ?? []));
  });

  async function store(secretId: string): Promise<SecretStore> {
    const dir = tempDir('aws-malformed');
    const ctx: ProviderContext = {
      keyName: 'app',
      stateDir: dir,
      configDir: dir,
      logger: testLogger(),
      clock: systemClock,
      env: { ...CREDS, AWS_EC2_METADATA_DISABLED: 'true' },
      providerState: { get: () => undefined, set: async () => {} },
    };
    const cfg = awsSecretsManagerStoreSchema.parse({
      type: 'aws-secrets-manager',
      secretId,
      region: REGION,
      endpoint: proxy.endpoint,
    });
    const s = await createAwsSecretsManagerStore(cfg, ctx);
    opened.push(s);
    return s;
  }

  /** a store whose secret has R1 current (value 1) */
  async function promoted(): Promise<{ name: string; s: SecretStore }> {
    const name = `keyrotor/test/${randomBytes(6).toString('hex')}`;
    await raw.send(new CreateSecretCommand({ Name: name }));
    const s = await store(name);
    await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
    await s.promote(R1);
    return { name, s };
  }

  async function labels(name: string): Promise<Record<string, string[]>> {
    const d = await raw.send(new DescribeSecretCommand({ SecretId: name }));
    return Object.fromEntries(Object.entries(d.VersionIdsToStages ?? {}).filter(([, l]) => l.length > 0));
  }
  const holder = (m: Record<string, string[]>, label: string) =>
    Object.entries(m)
      .filter(([, l]) => l.includes(label))
      .map(([id]) => id);
  async function consumerRead(name: string): Promise<string> {
    return (await raw.send(new GetSecretValueCommand({ SecretId: name, VersionStage: 'AWSCURRENT' }))).SecretString!;
  }

  /** a garbled 200 is never success: an honest code, one line, no value anywhere in the error */
  async function honest(p: Promise<unknown>, stage?: string): Promise<KeyrotorError> {
    const e = await p.then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(KeyrotorError);
    const err = e as KeyrotorError;
    seen.push(err);
    expect(['STORE_UNAVAILABLE', 'STORE_CORRUPT']).toContain(err.code);
    if (err.code === 'STORE_UNAVAILABLE') expect(err.retryable).toBe(true);
    expect(err.message).not.toMatch(/[\r\n]/);
    expect(err.message).toMatch(/malformed/);
    if (stage) expect(err.stage).toBe(stage);
    const printed = [
      err.message,
      err.hint ?? '',
      inspect(err, { depth: 10, showHidden: true }),
      JSON.stringify(err.toRecord()),
    ].join('\n');
    expect(printed).not.toContain(CANARY.slice(0, 16)); // not even the half a cut answer carried
    return err;
  }

  for (const kind of KINDS) {
    it(`GetSecretValue answered ${kind}: check, readCurrent, readPrevious, readPending fail honestly, then read the value`, async () => {
      const { s } = await promoted();
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      proxy.fault({ op: 'GetSecretValue', kind });
      await honest(s.check(), 'preflight');
      proxy.fault({ op: 'GetSecretValue', kind });
      await honest(s.readCurrent());
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      proxy.fault({ op: 'GetSecretValue', kind });
      await honest(s.readPending(R2));
      expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
      await s.promote(R2);
      proxy.fault({ op: 'GetSecretValue', kind });
      await honest(s.readPrevious());
      expect((await s.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
    });

    it(`DescribeSecret answered ${kind}: never an empty secret (no bootstrap, no missing lock)`, async () => {
      const { name, s } = await promoted();
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.check(), 'preflight');
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.readCurrent());
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.describe());
      // another rotation must still see R2's pending version and be LOCKED, not write past it
      const before = await labels(name);
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }), 'stage');
      expect(await labels(name)).toEqual(before);
      await expect(s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) })).rejects.toMatchObject({
        code: 'LOCKED',
      });
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.unstage(R2), 'unstage');
      expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal()); // unstage did not pretend
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.promote(R2), 'promote');
      await s.promote(R2);
      expect(await consumerRead(name)).toBe(value(2).reveal());
      proxy.fault({ op: 'DescribeSecret', kind });
      await honest(s.demote(R2), 'demote');
      await s.demote(R2);
      expect(await consumerRead(name)).toBe(value(1).reveal());
    });

    for (const applied of [false, true]) {
      it(`PutSecretValue answered ${kind} (${applied ? 'applied' : 'not applied'}): stage fails honestly and converges on retry`, async () => {
        const { name, s } = await promoted();
        const before = Object.keys(await labels(name)).length;
        proxy.fault({ op: 'PutSecretValue', kind, applied });
        await honest(s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) }), 'stage');
        const { versionId } = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        const m = await labels(name);
        expect(holder(m, 'AWSPENDING')).toEqual([versionId]);
        expect(Object.keys(m)).toHaveLength(before + 1); // one version for R2, no second copy
        expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
        await s.promote(R2);
        expect(await consumerRead(name)).toBe(value(2).reveal());
      });

      it(`UpdateSecretVersionStage answered ${kind} (${applied ? 'applied' : 'not applied'}): promote, demote, unstage never pretend`, async () => {
        const { name, s } = await promoted();
        await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        proxy.fault({ op: 'UpdateSecretVersionStage', kind, applied });
        await honest(s.promote(R2), 'promote');
        await s.promote(R2);
        expect(await consumerRead(name)).toBe(value(2).reveal());
        expect(holder(await labels(name), 'AWSPENDING')).toEqual([]);

        proxy.fault({ op: 'UpdateSecretVersionStage', kind, applied });
        await honest(s.demote(R2), 'demote');
        await s.demote(R2);
        expect(await consumerRead(name)).toBe(value(1).reveal());
        expect((await s.readCurrent())?.meta.rotationId).toBe(R1);

        await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
        proxy.fault({ op: 'UpdateSecretVersionStage', kind, applied });
        await honest(s.unstage(R3), 'unstage');
        await s.unstage(R3);
        expect(await s.readPending(R3)).toBeNull();
        expect(holder(await labels(name), 'AWSPENDING')).toEqual([]);
        expect(await consumerRead(name)).toBe(value(1).reveal());
      });
    }
  }

  it('no malformed-answer error or log line carries a value', () => {
    expect(seen.length).toBeGreaterThanOrEqual(40);
    const printed = seen
      .map((e) =>
        [
          inspect(e, { depth: 10, showHidden: true }),
          JSON.stringify(e.toRecord()),
          String(e),
          inspect(e.cause, { depth: 10 }),
        ].join('\n'),
      )
      .join('\n');
    capture('aws-malformed-errors.txt', printed);
    expect(printed).not.toContain(CANARY.slice(0, 16));
    expect(logLines.join('\n')).not.toContain(CANARY.slice(0, 16));
    expect(proxy.log.filter((e) => e.fault).length).toBeGreaterThanOrEqual(40);
  });
});
