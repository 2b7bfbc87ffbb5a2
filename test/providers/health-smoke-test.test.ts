/**
 * The `issuer-smoke-test` gate with its optional declared cheap call (`model`): the real OpenAI
 * issuer (real SDK) retrieves that model with the new key from the loopback fake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { createGate, createIssuer, healthConfigSchema, issuerConfigSchema } from '../../providers/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { HealthGate, Issuer, ProviderContext } from '../../src/core/ports.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { Secret } from '../../src/core/secret.ts';
import { silentLogger } from '../../src/app/log.ts';
import { CANARY } from '../canary.ts';
import { startOpenAIFake, type FakeKey, type OpenAIFake } from '../fakes/openai-admin.ts';
import { gateContext, pollGate } from '../fakes/consumer.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
  fake.state.models.push('gpt-app-model');
});
afterAll(async () => {
  await fake?.close();
});

function providerCtx(): ProviderContext {
  const dir = tempDir('smoke');
  return {
    keyName: 'app',
    stateDir: path.join(dir, '.keyrotor'),
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env: { OPENAI_ADMIN_KEY: fake.adminKey },
    providerState: { get: () => undefined, set: async () => {} },
  };
}

async function setup(gateCfg: Record<string, unknown>): Promise<{ gate: HealthGate; key: FakeKey; issuer: Issuer }> {
  const ctx = providerCtx();
  const sa = fake.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`);
  const key = fake.state.plantKey({ owner: { type: 'service_account', serviceAccountId: sa.id } });
  const issuer = await createIssuer(
    issuerConfigSchema.parse({
      type: 'openai',
      project: fake.project,
      serviceAccount: sa.id,
      baseURL: fake.baseURL,
      timeout: '5s',
    }),
    ctx,
  );
  const gate = await createGate(
    healthConfigSchema.parse({ type: 'issuer-smoke-test', interval: '50ms', timeout: '2s', ...gateCfg }),
    ctx,
    { issuer, index: 0 },
  );
  return { gate, key, issuer };
}

const ctxFor = (key: FakeKey) =>
  gateContext({
    newKeyId: key.id,
    newFingerprint: fingerprint(key.value),
    readNewSecret: async () => Secret.of(key.value),
  });

describe('issuer-smoke-test gate with a declared model', () => {
  it('retrieves the declared model with the new key', async () => {
    const { gate, key } = await setup({ model: 'gpt-app-model' });
    fake.resetFaults();
    const o = await gate.check(ctxFor(key));
    expect(o).toEqual({ pass: true, observation: `issuer accepts model gpt-app-model with ${fingerprint(key.value)}` });
    expect(fake.log.map((e) => `${e.method} ${e.path} ${e.status}`)).toEqual(['GET /v1/models/gpt-app-model 200']);
  });

  it('a model the key cannot use ends the wait at once (final), so the rotation rolls back', async () => {
    const { gate, key } = await setup({ model: 'gpt-not-in-this-project' });
    const o = await gate.check(ctxFor(key));
    capture('health-smoke-model.txt', o.observation);
    expect(o).toMatchObject({ pass: false, final: true });
    expect(o.observation).toContain('404 model_not_found');
    expect(o.observation).not.toContain(CANARY);
  });

  it('missing scopes end the wait at once; a key still propagating is retried until it works', async () => {
    const scoped = await setup({ model: 'gpt-app-model' });
    fake.lackScopes(scoped.key.id);
    expect(await scoped.gate.check(ctxFor(scoped.key))).toMatchObject({
      pass: false,
      final: true,
      observation: expect.stringContaining('missing_scopes'),
    });
    const slow = await setup({ model: 'gpt-app-model' });
    fake.delayPropagation(slow.key.id, 3);
    const r = await pollGate(slow.gate, ctxFor(slow.key));
    capture('health-smoke-propagation.txt', r.observations.join('\n'));
    expect(r.outcome).toBe('pass');
    expect(r.observations.slice(0, 3).every((x) => x.includes('invalid'))).toBe(true);
    expect(r.observations.join('\n')).not.toContain(CANARY);
  });

  it('without `model` it lists models as before; an issuer that cannot probe refuses `model`', async () => {
    const { gate, key } = await setup({});
    fake.resetFaults();
    expect((await gate.check(ctxFor(key))).pass).toBe(true);
    expect(fake.log.map((e) => e.route)).toEqual(['models.list']);
    const ctx = providerCtx();
    const local = await createIssuer(issuerConfigSchema.parse({ type: 'local' }), ctx);
    await expect(
      createGate(healthConfigSchema.parse({ type: 'issuer-smoke-test', model: 'x' }), ctx, { issuer: local, index: 0 }),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining('the local issuer cannot check a model'),
    });
  });
});
