import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createLocalIssuer } from '../../providers/issuers/local/index.ts';
import { localIssuerSchema } from '../../providers/issuers/local/local.schema.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import { Secret } from '../../src/core/secret.ts';
import { issuedKeyName } from '../../src/core/ids.ts';
import { silentLogger } from '../../src/app/log.ts';
import { systemClock } from '../../src/core/clock.ts';
import { tempDir } from '../helpers/artifacts.ts';

async function make() {
  const dir = tempDir('local-issuer');
  const issuer = await createLocalIssuer(localIssuerSchema.parse({ type: 'local' }), {
    keyName: 'demo',
    stateDir: dir,
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env: {},
    providerState: { get: () => undefined, set: async () => {} },
  });
  return { issuer, registry: path.join(dir, 'local-issuer', 'demo.json') };
}
const R = 'rot-20261123t000000z-0000abcd';

describe('local issuer', () => {
  it('creates random keys it can verify, list, identify and revoke; the registry holds no value', async () => {
    const { issuer, registry } = await make();
    const a = await issuer.create({ name: issuedKeyName('demo', R), rotationId: R });
    expect(a.secret.reveal()).toMatch(/^kr-local-[A-Za-z0-9_-]{43}$/);
    expect(await issuer.verify(a.secret)).toEqual({ ok: true });
    expect(await issuer.identify(a.secret)).toEqual({ kind: 'found', keyId: a.keyId });
    expect((await issuer.list()).map((k) => k.keyId)).toEqual([a.keyId]);
    expect(readFileSync(registry, 'utf8')).not.toContain(a.secret.reveal());
    expect(await issuer.revoke(a.keyId)).toEqual({ alreadyGone: false });
    expect(await issuer.revoke(a.keyId)).toEqual({ alreadyGone: true });
    expect(await issuer.verify(a.secret)).toMatchObject({ ok: false, reason: 'invalid' });
    expect(await issuer.identify(Secret.of('kr-local-unknown'))).toEqual({ kind: 'not_found' });
  });

  it('a retried create of the same rotation replaces the leftover (whose value is lost) with one new key', async () => {
    const { issuer } = await make();
    const first = await issuer.create({ name: issuedKeyName('demo', R), rotationId: R });
    const second = await issuer.create({ name: issuedKeyName('demo', R), rotationId: R });
    expect((await issuer.list()).map((k) => k.keyId)).toEqual([second.keyId]);
    expect(await issuer.verify(first.secret)).toMatchObject({ ok: false, reason: 'invalid' });
  });

  it('a corrupt registry is a clear error naming the file, never a silent reset', async () => {
    const { issuer, registry } = await make();
    await issuer.create({ name: issuedKeyName('demo', R), rotationId: R });
    writeFileSync(registry, '{"format":"keyrotor-local-issuer/1","keys":[');
    const e = await issuer.list().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KeyrotorError);
    expect((e as KeyrotorError).message).toContain(registry);
  });
});
