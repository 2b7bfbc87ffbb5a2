/**
 * End to end, the CLI spawned: the `usage-drain` gate keeps the old key alive while a consumer still
 * calls the API with it (the fake records `last_used_at`), lets the rotation finish once that traffic
 * stops, and rolls back if it never stops.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './cli-helpers.ts';
import { useOpenAICliWorld } from './openai-cli-world.ts';
import type { FakeKey } from '../fakes/openai-admin.ts';

const world = useOpenAICliWorld({ masterKey: '12'.repeat(32) });
const { env, results, live, bootstrap } = world;

/** a consumer calling GET /v1/models with whatever key `pick()` gives, every 150 ms, until stopped */
function traffic(pick: () => FakeKey | undefined) {
  let on = true;
  const loop = (async () => {
    while (on) {
      const k = pick();
      if (k)
        await fetch(`${world.fake.baseURL}/models`, { headers: { authorization: `Bearer ${k.value}` } })
          .then((r) => r.arrayBuffer())
          .catch(() => undefined);
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
  return async () => {
    on = false;
    await loop;
  };
}

describe('CLI: usage-drain gate', () => {
  it('blocks revoke while the old key is still used and passes once it stops', async () => {
    const { dir, old, newKey } = await bootstrap(
      'gates-drain',
      `\n      - { type: usage-drain, quiet: 1500ms, interval: 200ms, timeout: 20s }`,
    );
    const stopOld = traffic(() => old); // a consumer still on the old key
    const stopNew = traffic(newKey); // another one already on the new key
    let revokedAt = 0;
    const unsub = world.fake.onRequest((e) => {
      if (e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old.id}`)) revokedAt ||= Date.now();
    });
    try {
      const run = runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'gates-drain' });
      // the rotation reaches confirm and waits there while the old key keeps being used
      for (let i = 0; i < 200 && !newKey(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(newKey()).toBeDefined();
      await new Promise((r) => setTimeout(r, 2500));
      expect(revokedAt).toBe(0);
      expect(live(old.id)).toBe(true);
      await stopOld();
      const stoppedAt = Date.now();
      const r = await run;
      expect(r.code, r.stderr).toBe(0);
      expect(results(r.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: old.id });
      // quiet (1.5 s, measured from the last recorded use in whole seconds) passed before the revoke
      expect(revokedAt - stoppedAt).toBeGreaterThanOrEqual(400);
      expect(live(old.id)).toBe(false);
    } finally {
      unsub();
      await stopOld();
      await stopNew();
    }
  });

  it('an old key that never goes quiet: rolls back at the deadline (exit 1) and stays alive', async () => {
    // last_used_at has 1 s granularity and the traffic loop can stall on a loaded machine: the quiet
    // window is wide enough (3 s) that a key used every 150 ms can never look quiet
    const { dir, old, newKey } = await bootstrap(
      'gates-drain-busy',
      `\n      - { type: usage-drain, name: drain, quiet: 3s, interval: 200ms, timeout: 4s }`,
    );
    const stopOld = traffic(() => old);
    const stopNew = traffic(newKey);
    try {
      const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'gates-drain-busy' });
      expect(r.code, r.stderr).toBe(1);
      const res = results(r.stdout)[0]!;
      expect(res).toMatchObject({ outcome: 'rolled_back', oldKeyId: old.id, error: { code: 'GATE_TIMEOUT' } });
      expect(res.error!.message).toMatch(
        /^health gate "drain" did not pass: the new key was used .*; the old key was used .* ago: needs 3s quiet/,
      );
      expect(live(old.id)).toBe(true);
      expect(live(res.newKeyId)).toBe(false);
    } finally {
      await stopOld();
      await stopNew();
    }
  });
});
