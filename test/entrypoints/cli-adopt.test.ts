/**
 * Adopting a key a person created by hand (no keyrotor metadata in the store): identified at the
 * issuer by its redacted form; when that is ambiguous keyrotor stops (exit 4) until
 * `keyrotor adopt <key> --key-id <id>`; it never revokes a key it has not positively identified.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, workspace } from './cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { Secret } from '../../src/core/secret.ts';
import { keyConfig, openaiIssuer } from '../helpers/config.ts';
import { openFileStore } from '../helpers/file-store.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

const MASTER = 'ef'.repeat(32);
const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER });
const config = (sa: string) =>
  keyConfig({ issuer: openaiIssuer(fake, sa), timeout: '2s', interval: '100ms', revoke: null });

/** put a value into the file store as current, the way a person would: no keyrotor metadata */
async function handPlace(dir: string, value: string) {
  const store = await openFileStore(dir, 'app', MASTER);
  const rot = 'rot-20260101t000000z-00000000';
  await store.stage({ rotationId: rot, secret: Secret.of(value), meta: {} });
  await store.promote(rot);
}
const results = (s: string) => (JSON.parse(s) as { results: Array<Record<string, unknown>> }).results;
const alive = (id: string) => fake.state.liveKeys().some((k) => k.id === id);

describe('adopting a hand-made key', () => {
  it('a unique match among the service account keys is adopted and revoked after rotation', async () => {
    const sa = fake.state.addServiceAccount('adopt-unique');
    const hand = fake.state.plantKey({
      owner: { type: 'service_account', serviceAccountId: sa.id },
      name: 'made by hand',
    });
    const dir = workspace(config(sa.id), 'adopt-unique');
    await handPlace(dir, hand.value);
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'adopt-unique' });
    expect(r.code, r.stderr).toBe(0);
    expect(results(r.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: hand.id });
    expect(alive(hand.id)).toBe(false);
  });

  it('an ambiguous match stops with needs_attention (exit 4) and revokes nothing; `adopt` resolves it', async () => {
    const sa = fake.state.addServiceAccount('adopt-ambiguous');
    const owner = { type: 'service_account' as const, serviceAccountId: sa.id };
    const hand = fake.state.plantKey({ owner, name: 'made by hand' });
    const twin = fake.state.plantKey({ owner, name: 'look-alike', redactedValue: hand.redactedValue });
    const dir = workspace(config(sa.id), 'adopt-ambiguous');
    await handPlace(dir, hand.value);
    const liveBefore = fake.state.liveKeys().length;
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'adopt-ambiguous' });
    expect(r.code).toBe(4);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'needs_attention', newKeyId: null, error: { code: 'ADOPT_REQUIRED' } });
    expect((res.error as { hint: string }).hint).toMatch(/keyrotor adopt app --key-id/);
    expect((res.error as { message: string }).message).toContain(hand.id);
    expect((res.error as { message: string }).message).toContain(twin.id);
    expect(fake.state.liveKeys().length).toBe(liveBefore); // nothing created, nothing revoked

    const bad = await runCli(['adopt', 'app', '--key-id', 'key_does_not_exist'], {
      cwd: dir,
      env: env(),
      name: 'adopt-bad',
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/the issuer has no key with id key_does_not_exist/);
    const a = await runCli(['adopt', 'app', '--key-id', hand.id], { cwd: dir, env: env(), name: 'adopt-ok' });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(new RegExp(`now known as issuer key ${hand.id}`));

    const again = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'adopt-after' });
    expect(again.code, again.stderr).toBe(0);
    expect(results(again.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: hand.id });
    expect(alive(hand.id)).toBe(false);
    expect(alive(twin.id)).toBe(true); // the look-alike was never touched
  });
});
