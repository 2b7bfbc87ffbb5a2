/**
 * Race test (issue 5): 10 processes rotate the same key at once; exactly one rotation happens, the
 * nine others exit 3 (`locked`) without touching the issuer or the store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, workspace } from '../entrypoints/cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

describe('race: 10 processes rotate the same key at once', () => {
  it('exactly one rotates; the others exit 3 and change nothing', async () => {
    const sa = fake.state.addServiceAccount('race');
    const dir = workspace(
      `version: 1
defaults:
  verify: { timeout: 5s, interval: 100ms }
  verifyRevoked: { timeout: 5s, interval: 100ms }
keys:
  - name: app
    issuer: { type: openai, project: ${fake.project}, serviceAccount: ${sa.id}, baseURL: "${fake.baseURL}", timeout: 10s }
    stores: [ { type: file } ]
`,
      'race',
    );
    const env = { OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: '34'.repeat(32), KEYROTOR_LOG_LEVEL: 'warn' };
    const boot = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env, name: 'race-boot' });
    expect(boot.code, boot.stderr).toBe(0);
    const old = (JSON.parse(boot.stdout) as { results: Array<{ newKeyId: string }> }).results[0]!.newKeyId;
    const createsBefore = fake.log.filter((e) => e.route === 'serviceAccounts.apiKeys.create').length;
    // hold the winner inside its lease until the others have given up (or 30 s passed): however slowly
    // a busy machine starts the ten processes, none can start after the winner finished (a rotation
    // that starts later is a legitimate second `--now` rotation, not a race)
    const hold = fake.holdResponse('serviceAccounts.apiKeys.create');
    let exited = 0;
    const started = Array.from({ length: 10 }, (_, i) =>
      runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env, name: `race-${i}` }).finally(() => {
        exited++;
      }),
    );
    for (const t0 = Date.now(); exited < 9 && Date.now() - t0 < 30_000;) await new Promise((r) => setTimeout(r, 50));
    hold.release();
    const runs = await Promise.all(started);
    const outcomes = runs.map(
      (r) =>
        (
          JSON.parse(r.stdout) as {
            results: Array<{ outcome: string; oldKeyId: string | null; newKeyId: string | null }>;
          }
        ).results[0]!,
    );
    const winners = outcomes.filter((o) => o.outcome === 'rotated');
    expect(winners).toHaveLength(1);
    expect(winners[0]!.oldKeyId).toBe(old);
    expect(runs.map((r) => r.code).sort()).toEqual([0, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
    expect(outcomes.filter((o) => o.outcome === 'locked')).toHaveLength(9);
    // one key created, the old one deleted: one live keyrotor key for the slot
    expect(fake.log.filter((e) => e.route === 'serviceAccounts.apiKeys.create').length - createsBefore).toBe(1);
    const live = fake.state
      .liveKeys()
      .filter(
        (k) =>
          k.owner.type === 'service_account' &&
          k.owner.serviceAccountId === sa.id &&
          k.name.startsWith('keyrotor.app.'),
      );
    expect(live.map((k) => k.id)).toEqual([winners[0]!.newKeyId]);
  }, 90_000);
});
