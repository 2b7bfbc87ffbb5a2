/**
 * The setup the CLI gate tests share: one OpenAI Admin API fake per test file, a fresh service
 * account per test, a config with one key `app` (OpenAI issuer, file store, the given health gates),
 * and a bootstrap that issues the first key in-process without gates (there is nothing to protect
 * yet) before the test switches the config to its gates.
 */
import { afterAll, beforeAll, beforeEach, expect } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { workspace } from './cli-helpers.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { startOpenAIFake, type FakeKey, type OpenAIFake } from '../fakes/openai-admin.ts';

export interface CliResult {
  key: string;
  rotationId: string;
  outcome: string;
  oldKeyId: string | null;
  newKeyId: string | null;
  finishedAt?: string;
  error?: { code: string; message: string; stage?: string };
}

export interface OpenAICliWorld {
  readonly fake: OpenAIFake;
  /** this test's service account */
  readonly saId: string;
  env(): Record<string, string>;
  /** the config text; `health` is YAML after `health:` (e.g. ` []`, or list items on new lines) */
  config(health: string): string;
  /** the `results` of `rotate --json` output */
  results(stdout: string): CliResult[];
  /** is this key alive at the fake? */
  live(id: string | null): boolean;
  /** a workspace whose key was bootstrapped without gates; then `health` (if given) is written */
  bootstrap(name: string, health?: string): Promise<{ dir: string; old: FakeKey; newKey(): FakeKey | undefined }>;
}

/** Register the hooks (call at the top level of a test file). */
export function useOpenAICliWorld(o: { masterKey: string; extraDefaults?: string }): OpenAICliWorld {
  let fake: OpenAIFake | undefined;
  let saId = '';
  beforeAll(async () => {
    fake = await startOpenAIFake();
  });
  afterAll(async () => {
    await fake?.close();
  });
  beforeEach(() => {
    world.fake.resetFaults();
    saId = world.fake.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`).id;
  });

  const world: OpenAICliWorld = {
    get fake() {
      if (!fake) throw new Error('the OpenAI fake is not started (use it inside tests)');
      return fake;
    },
    get saId() {
      return saId;
    },
    env: () => ({ OPENAI_ADMIN_KEY: world.fake.adminKey, KEYROTOR_MASTER_KEY: o.masterKey }),
    config: (health) => `version: 1
defaults:
  verify: { timeout: 3s, interval: 100ms }
  verifyRevoked: { timeout: 3s, interval: 100ms }
  revoke: { attempts: 2, backoff: 100ms }
${o.extraDefaults ? `  ${o.extraDefaults}\n` : ''}keys:
  - name: app
    issuer: { type: openai, project: ${world.fake.project}, serviceAccount: ${saId}, baseURL: ${world.fake.baseURL}, timeout: 5s }
    stores: [ { type: file } ]
    health:${health}
`,
    results: (stdout) => (JSON.parse(stdout) as { results: CliResult[] }).results,
    live: (id) => world.fake.state.liveKeys().some((k) => k.id === id),
    async bootstrap(name, health) {
      const dir = workspace(world.config(' []'), name);
      const cfg = parseConfig(world.config(' []'), path.join(dir, 'rotation.config.yaml'), world.env());
      const r = await rotateKey(cfg.keys[0]!, {
        config: cfg,
        stateStore: createFileStateStore(cfg.stateDir),
        logger: silentLogger(),
        env: world.env(),
        now: true,
      });
      expect(r.outcome).toBe('rotated');
      const old = world.fake.state.keyById(r.newKeyId!)!;
      if (health !== undefined) writeFileSync(path.join(dir, 'rotation.config.yaml'), world.config(health));
      const sa = saId;
      const newKey = () =>
        world.fake.state
          .liveKeys()
          .find(
            (k) =>
              k.name.startsWith('keyrotor.app.') &&
              k.id !== old.id &&
              k.owner.type === 'service_account' &&
              k.owner.serviceAccountId === sa,
          );
      return { dir, old, newKey };
    },
  };
  return world;
}
