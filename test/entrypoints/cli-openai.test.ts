/**
 * The CLI spawned as a process with the OpenAI issuer pointed at the loopback Admin API fake
 * (real SDK on the wire) and the file store.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { runCli, treeText, workspace } from './cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';

let fake: OpenAIFake;
let saId: string;

beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});
beforeEach(() => {
  fake.resetFaults();
  saId = fake.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`).id;
});

const config = () => `version: 1
defaults:
  verify: { timeout: 1500ms, interval: 100ms }
  verifyRevoked: { timeout: 3s, interval: 100ms }
  revoke: { attempts: 2, backoff: 100ms }
keys:
  - name: app
    issuer:
      type: openai
      project: ${fake.project}
      serviceAccount: ${saId}
      baseURL: ${fake.baseURL}
      scopes: [api.model.read]
      timeout: 5s
    stores: [ { type: file } ]
    health:
      - { type: issuer-smoke-test, timeout: 3s, interval: 100ms }
`;

const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: 'ab'.repeat(32) });
type Result = {
  key: string;
  rotationId: string;
  outcome: string;
  oldKeyId: string | null;
  newKeyId: string | null;
  error?: { code: string };
};
const results = (stdout: string) => (JSON.parse(stdout) as { results: Result[] }).results;
const live = (id: string | null) => fake.state.liveKeys().some((k) => k.id === id);

async function bootstrap(dir: string): Promise<Result> {
  const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'openai-bootstrap' });
  expect(r.code, r.stderr).toBe(0);
  const res = results(r.stdout)[0]!;
  expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: null });
  return res;
}

describe('CLI with the OpenAI issuer (loopback Admin API)', () => {
  it('rotates: the old key is deleted only after the new one verified; twice gives two different keys', async () => {
    const dir = workspace(config(), 'openai');
    const first = await bootstrap(dir);
    fake.resetFaults();
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'openai-rotate' });
    expect(r.code, r.stderr).toBe(0);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: first.newKeyId });
    expect(res.newKeyId).not.toBe(first.newKeyId);
    expect(live(first.newKeyId)).toBe(false);
    expect(live(res.newKeyId)).toBe(true);

    const seq = (pred: (e: (typeof fake.log)[number]) => boolean) => fake.log.filter(pred).map((e) => e.seq);
    const created = seq((e) => e.route === 'serviceAccounts.apiKeys.create' && e.status === 200);
    const verified = seq((e) => e.route === 'models.list' && e.status === 200);
    const deleted = seq((e) => e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${first.newKeyId}`));
    expect(created).toHaveLength(1);
    expect(deleted).toHaveLength(1);
    expect(verified.some((v) => v > created[0]! && v < deleted[0]!)).toBe(true);
    // the key got the rotation's unique name, the configured scopes and an expiry
    const body = fake.log.find((e) => e.route === 'serviceAccounts.apiKeys.create')!.body as Record<string, unknown>;
    expect(body).toMatchObject({ name: `keyrotor.app.${res.rotationId}`, scopes: ['api.model.read'] });
    expect(body.expires_in_seconds).toBe(30 * 86400 + 15 * 60);
    // no secret in outputs or state
    const values = fake.state.keys.map((k) => k.value);
    const text = r.stdout + r.stderr + treeText(path.join(dir, '.keyrotor'));
    for (const v of values) expect(text).not.toContain(v);
    expect(text).not.toContain(CANARY);
  });

  it('a lost create response leaves no orphan key: reconciled by name and tried again, rotated (exit 0)', async () => {
    const dir = workspace(config(), 'openai-lost');
    const first = await bootstrap(dir);
    const before = fake.state.liveKeys().length;
    fake.loseResponse('serviceAccounts.apiKeys.create');
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'openai-lost' });
    expect(r.code, r.stderr).toBe(0);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: first.newKeyId });
    // the key the lost create made is deleted; the retry's key is the only one of that name
    const named = fake.state.keys.filter((k) => k.name === `keyrotor.app.${res.rotationId}`);
    expect(named).toHaveLength(2);
    expect(named.filter((k) => !k.deleted).map((k) => k.id)).toEqual([res.newKeyId]);
    expect(fake.state.liveKeys().length).toBe(before); // one in, one out
    expect(live(first.newKeyId)).toBe(false);
    const s = await runCli(['status', '--json'], { cwd: dir, env: env() });
    expect(JSON.parse(s.stdout).keys[0]).toMatchObject({ currentKeyId: res.newKeyId, lastOutcome: 'rotated' });
  });

  it('a new key that never verifies is deleted; the old key stays current (exit 1)', async () => {
    const dir = workspace(config(), 'openai-verify');
    const first = await bootstrap(dir);
    fake.state.newKeys.propagationChecks = 1_000_000; // every new key keeps failing GET /v1/models
    try {
      const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'openai-verify' });
      expect(r.code, r.stderr).toBe(1);
      const res = results(r.stdout)[0]!;
      expect(res).toMatchObject({ outcome: 'rolled_back', oldKeyId: first.newKeyId, error: { code: 'KEY_INVALID' } });
      expect(res.newKeyId).toBeTruthy();
      expect(live(res.newKeyId)).toBe(false);
      expect(live(first.newKeyId)).toBe(true);
      // the old key is still the one served: the next rotation starts from it
      fake.state.newKeys.propagationChecks = 0;
      const again = await runCli(['rotate', '--now', 'app', '--json'], {
        cwd: dir,
        env: env(),
        name: 'openai-after-rollback',
      });
      expect(again.code, again.stderr).toBe(0);
      expect(results(again.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: first.newKeyId });
    } finally {
      fake.state.newKeys.propagationChecks = 0;
    }
  });

  it('rotate --now --leaked: no consumer wait, the old key is revoked and reported dead with its last use time', async () => {
    const dir = workspace(config(), 'openai-leaked');
    const first = await bootstrap(dir);
    const lastUsed = Math.floor(Date.now() / 1000) - 120;
    fake.state.keyById(first.newKeyId!)!.lastUsedAt = lastUsed;
    fake.resetFaults();
    const r = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: env(),
      name: 'openai-leaked',
    });
    expect(r.code, r.stderr).toBe(0);
    const res = results(r.stdout)[0]! as Result & { leaked?: boolean; oldKeyLastUsedAt?: string };
    expect(res).toMatchObject({
      outcome: 'rotated',
      oldKeyId: first.newKeyId,
      leaked: true,
      oldKeyLastUsedAt: new Date(lastUsed * 1000).toISOString(),
    });
    expect(live(first.newKeyId)).toBe(false);
    const stages = r.stderr
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { stage?: string }).stage);
    expect(stages).not.toContain('confirm'); // consumer gates are skipped in leak mode
    expect(stages).toContain('verifyRevoked');
  });

  it('two concurrent rotate --now of the same key: exactly one rotates, the other exits 3', async () => {
    // a long issuer timeout: the winner's create is held open until the loser has finished, however
    // slow the machine is
    const text = config().replace('timeout: 5s', 'timeout: 120s');
    expect(text).toContain('timeout: 120s');
    const dir = workspace(text, 'openai-concurrent');
    const first = await bootstrap(dir);
    const hold = fake.holdResponse('serviceAccounts.apiKeys.create'); // keep the winner inside its lease
    const a = runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'openai-concurrent-a' });
    // start the second once the first is inside its create call (it holds the lease by then)
    for (let i = 0; i < 2400 && fake.calls('serviceAccounts.apiKeys.create').length < 2; i++)
      await new Promise((r) => setTimeout(r, 25));
    expect(fake.calls('serviceAccounts.apiKeys.create')).toHaveLength(2); // bootstrap + the winner's
    const b = await runCli(['rotate', '--now', 'app', '--json'], {
      cwd: dir,
      env: env(),
      name: 'openai-concurrent-b',
    }).finally(() => hold.release());
    const ra = await a;
    expect([ra.code, b.code]).toEqual([0, 3]);
    expect(results(ra.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: first.newKeyId });
    expect(results(b.stdout)[0]).toMatchObject({ outcome: 'locked', error: { code: 'LOCKED' } });
    expect(fake.log.filter((e) => e.route === 'serviceAccounts.apiKeys.create')).toHaveLength(2); // bootstrap + the winner
  });

  it('a missing admin key is one clear line, exit 2... or a safe rollback before any change', async () => {
    const dir = workspace(config(), 'openai-noadmin');
    const r = await runCli(['rotate', '--now', 'app', '--json'], {
      cwd: dir,
      env: { KEYROTOR_MASTER_KEY: 'ab'.repeat(32) },
      name: 'openai-noadmin',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/CONFIG_ENV_MISSING: .*OPENAI_ADMIN_KEY/);
  });
});
