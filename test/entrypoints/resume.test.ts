/**
 * `keyrotor resume [<key>...]`: finishes or compensates unfinished rotations and starts none. The
 * OpenAI issuer on its loopback fake, the file store; the real CLI spawned for the main paths.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, workspace, cliInProcess } from './cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { capture } from '../helpers/artifacts.ts';
import { main } from '../../src/entrypoints/cli.ts';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import { rotateKey, type KeyResult, type TransitionEvent } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { isLease, type StateStore } from '../../src/core/ports.ts';
import { silentLogger } from '../../src/app/log.ts';
import { keyConfig, openaiIssuer } from '../helpers/config.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

const MASTER = '7a'.repeat(32);
const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER });
const config = (sa: string) =>
  keyConfig({ issuer: openaiIssuer(fake, sa), timeout: '2s', revoke: null, defaults: ['lease: { ttl: 1s }'] });

const cli = (dir: string, ...args: string[]) =>
  cliInProcess(['-c', path.join(dir, 'rotation.config.yaml'), '--log-level', 'error', ...args], {
    env: env(),
    name: `resume-${args[0]}`,
  });
const resultOf = (stdout: string) => (JSON.parse(stdout) as { results: KeyResult[] }).results[0]!;
const alive = (id: string | null) => fake.state.liveKeys().some((k) => k.id === id);

async function setup(
  name: string,
): Promise<{ dir: string; cfg: LoadedConfig; stateStore: StateStore; current: string; sa: string }> {
  const sa = fake.state.addServiceAccount(`resume-${name}`);
  const dir = workspace(config(sa.id), `resume-${name}`);
  const boot = await cli(dir, 'rotate', '--now', 'app', '--json');
  expect(boot.code, boot.stderr).toBe(0);
  const file = path.join(dir, 'rotation.config.yaml');
  const cfg = parseConfig(readFileSync(file, 'utf8'), file, {});
  return {
    dir,
    cfg,
    stateStore: createFileStateStore(cfg.stateDir),
    current: resultOf(boot.stdout).newKeyId!,
    sa: sa.id,
  };
}

/** leave an unfinished rotation behind by pausing at the next safe point after `state` is entered */
async function pauseAfter(cfg: LoadedConfig, stateStore: StateStore, state: string): Promise<KeyResult> {
  const ac = new AbortController();
  const r = await rotateKey(cfg.keys[0]!, {
    config: cfg,
    stateStore,
    logger: silentLogger(),
    env: env(),
    now: true,
    signal: ac.signal,
    observers: [{ onTransition: (e: TransitionEvent) => void (e.state === state && ac.abort()) }],
  });
  expect(r.outcome).toBe('in_progress');
  return r;
}

/**
 * A process that dies right after it persisted its entry into `stage` with nothing staged yet (the
 * new key exists at the issuer, its value only in the dead process's memory): from then on no state
 * write, no lease renewal, no provider call happens.
 */
async function dieBeforeFirstStage(cfg: LoadedConfig): Promise<void> {
  return dieAtSnapshot(cfg, (snap) => snap.value === 'stage' && snap.context?.staged === 0, 'after');
}

/**
 * A process that dies at the first snapshot `at` matches: right after writing it, or just before
 * (its provider calls for that transition happened, the snapshot never landed).
 */
async function dieAtSnapshot(
  cfg: LoadedConfig,
  at: (snap: { value?: unknown; context?: { staged?: number } }) => boolean,
  when: 'before' | 'after',
): Promise<void> {
  const real = createFileStateStore(cfg.stateDir);
  const dead = new Promise<never>(() => {});
  let died!: () => void;
  const diedP = new Promise<void>((r) => (died = r));
  let isDead = false;
  const store: StateStore = {
    label: real.label,
    read: (k) => (isDead ? dead : real.read(k)),
    keys: () => real.keys(),
    finish: (k, r, c, a, f) => (isDead ? dead : real.finish(k, r, c, a, f)),
    setProviderState: (k, a, b, f) => (isDead ? dead : real.setProviderState(k, a, b, f)),
    put: (r, f) => (isDead ? dead : real.put(r, f)),
    async saveActive(k, rot, f) {
      if (isDead) return dead;
      const snap = rot.snapshot as { value?: unknown; context?: { staged?: number } };
      const dies = at(snap);
      if (!(dies && when === 'before')) await real.saveActive(k, rot, f);
      if (dies) {
        isDead = true;
        died();
        return dead;
      }
    },
    async acquire(k, owner, ttl) {
      const l = await real.acquire(k, owner, ttl);
      if (!isLease(l)) return l;
      return {
        owner: l.owner,
        expiresAt: l.expiresAt,
        token: l.token,
        renew: () => (isDead ? dead : l.renew()),
        release: () => (isDead ? dead : l.release()),
      };
    },
  };
  void rotateKey(cfg.keys[0]!, { config: cfg, stateStore: store, logger: silentLogger(), env: env(), now: true });
  await diedP;
}

describe('keyrotor resume', () => {
  it('nothing unfinished: exit 0, "nothing to resume", no new rotation', async () => {
    const { dir } = await setup('idle');
    const creates = fake.calls('serviceAccounts.apiKeys.create').length;
    const text = await cli(dir, 'resume');
    expect(text).toMatchObject({ code: 0, stdout: 'app  nothing to resume\n' });
    const json = await cli(dir, 'resume', 'app', '--json');
    expect(json.code).toBe(0);
    expect(resultOf(json.stdout)).toMatchObject({ key: 'app', outcome: 'skipped' });
    expect(fake.calls('serviceAccounts.apiKeys.create').length).toBe(creates);
  });

  it('finishes a rotation left in promote by the spawned CLI: same rotation id, old key revoked, state cleared', async () => {
    const { dir, cfg, stateStore, current } = await setup('promote');
    const paused = await pauseAfter(cfg, stateStore, 'promote');
    const r = await runCli(['resume', 'app', '--json'], { cwd: dir, env: env(), name: 'resume-promote' });
    expect(r.code, r.stderr).toBe(0);
    expect(resultOf(r.stdout)).toMatchObject({
      outcome: 'rotated',
      rotationId: paused.rotationId,
      oldKeyId: current,
      newKeyId: paused.newKeyId,
    });
    expect(alive(current)).toBe(false);
    expect(alive(paused.newKeyId)).toBe(true);
    expect((await stateStore.read('app'))?.active).toBeNull();
    expect(r.stderr).toMatch(/resuming an unfinished rotation/);
    expect(r.stdout + r.stderr).not.toContain(CANARY);
  });

  it('a process that died between creating the key and storing it: locked until its lease expires, then the lost key is deleted and a new one issued under the same rotation (exit 0)', async () => {
    const { dir, cfg, stateStore, current } = await setup('lost-value');
    const keysBefore = fake.state.liveKeys().length;
    await dieBeforeFirstStage(cfg);
    const active = (await stateStore.read('app'))!.active!;
    const orphan = fake.state.liveKeys().find((k) => k.name === `keyrotor.app.${active.rotationId}`);
    expect(orphan).toBeDefined();
    expect(fake.state.liveKeys().length).toBe(keysBefore + 1);

    const early = await cli(dir, 'resume', 'app', '--json');
    expect(early.code).toBe(3);
    expect(resultOf(early.stdout)).toMatchObject({ outcome: 'locked', error: { code: 'LOCKED' } });

    const lock = JSON.parse(readFileSync(path.join(cfg.stateDir, 'locks', 'app.lock'), 'utf8')) as {
      expiresAt: string;
    };
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(lock.expiresAt) - Date.now() + 30)));
    const r = await runCli(['resume', 'app', '--json'], { cwd: dir, env: env(), name: 'resume-lost-value' });
    expect(r.code, r.stderr).toBe(0);
    const res = resultOf(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', rotationId: active.rotationId, oldKeyId: current });
    // the key whose value died with the process is gone; the new one carries the same name
    expect(alive(orphan!.id)).toBe(false);
    expect(res.newKeyId).not.toBe(orphan!.id);
    expect(fake.state.liveKeys().find((k) => k.id === res.newKeyId)?.name).toBe(orphan!.name);
    expect(alive(current)).toBe(false); // rotated: the old key is revoked
    expect(fake.state.liveKeys().length).toBe(keysBefore);
    expect((await stateStore.read('app'))?.active).toBeNull();
    expect((await stateStore.read('app'))?.currentKeyId).toBe(res.newKeyId);
  });

  it('a process that died after staging the new key but before saving that: the resumed rotation reads the value back from the store and finishes (one create)', async () => {
    const { dir, cfg, stateStore, current } = await setup('staged-unrecorded');
    const creates = fake.calls('serviceAccounts.apiKeys.create').length;
    // one store: the snapshot after its stage (staged = 1) never lands
    await dieAtSnapshot(cfg, (snap) => snap.context?.staged === 1, 'before');
    const active = (await stateStore.read('app'))!.active!;
    expect((active.snapshot as { value: string; context: { staged: number } }).context.staged).toBe(0);
    const lock = JSON.parse(readFileSync(path.join(cfg.stateDir, 'locks', 'app.lock'), 'utf8')) as {
      expiresAt: string;
    };
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(lock.expiresAt) - Date.now() + 30)));
    const r = await runCli(['resume', 'app', '--json'], { cwd: dir, env: env(), name: 'resume-staged-unrecorded' });
    expect(r.code, r.stderr).toBe(0);
    const res = resultOf(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', rotationId: active.rotationId, oldKeyId: current });
    expect(fake.calls('serviceAccounts.apiKeys.create').length).toBe(creates + 1);
    expect(alive(res.newKeyId)).toBe(true);
    expect(alive(current)).toBe(false);
  });

  it('rotate also resumes first: it finishes the unfinished rotation instead of starting a second one', async () => {
    const { dir, cfg, stateStore, current, sa } = await setup('rotate-resumes');
    const paused = await pauseAfter(cfg, stateStore, 'verify');
    const creates = fake.calls('serviceAccounts.apiKeys.create').length;
    const r = await cli(dir, 'rotate', '--now', 'app', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(resultOf(r.stdout)).toMatchObject({ outcome: 'rotated', rotationId: paused.rotationId, oldKeyId: current });
    expect(fake.calls('serviceAccounts.apiKeys.create').length).toBe(creates);
    const mine = fake.state
      .liveKeys()
      .filter((k) => k.owner.type === 'service_account' && k.owner.serviceAccountId === sa);
    expect(mine.map((k) => k.id)).toEqual([paused.newKeyId]);
  });

  it('usage: unknown key is exit 2; --help explains resuming and stale locks', async () => {
    const { dir } = await setup('usage');
    const r = await cli(dir, 'resume', 'nope');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/UNKNOWN_KEY: unknown key "nope"/);
    const h = await cli(dir, 'resume', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/never starts a new one/);
    expect(h.stdout).toMatch(/lease expires/);
  });
});

describe('leak mode stopped at promote by a store failure', () => {
  // Found by test/chaos/crash.test.ts (seed 46, world c-gcp, scenario 1). Leak mode never demotes, so
  // a store that fails at promote ends the rotation in needsAttention; the run loop keeps it
  // resumable at that promote (src/run.ts), so fixing the store and running `keyrotor resume`
  // promotes the rest and revokes the leaked key.
  for (const stores of [['gcp'], ['file', 'gcp']] as const) {
    it(`after fixing the store, \`keyrotor resume\` finishes it and the leaked key dies (${stores.join(' + ')})`, async () => {
      const { startBackends, closeBackends, prepareWorld, World, writeWorkspace, MASTER_KEY, served, workingKey } =
        await import('../chaos/world.ts');
      const b = await startBackends([...stores]);
      try {
        const w = new World({ key: 'leaky', stores: [...stores] });
        await prepareWorld(b, w);
        const ws = writeWorkspace(() => b, [w], 'resume-leak-promote');
        const env = { OPENAI_ADMIN_KEY: b.openai.adminKey, KEYROTOR_MASTER_KEY: MASTER_KEY };
        const run = async (...args: string[]) => {
          let stdout = '';
          const code = await main(['-c', ws.configFile, '--log-level', 'silent', ...args], {
            stdout: (s) => void (stdout += s),
            stderr: () => undefined,
            env,
          });
          capture('resume-leak-promote.stdout', stdout);
          return { code, result: resultOf(stdout) };
        };
        expect((await run('rotate', '--now', 'leaky', '--json')).code).toBe(0);
        const leaked = (await served(b, w, ws.stateDir))[0]!.value!;
        // the GCP store refuses alias moves once the new key is staged everywhere
        const cfg = parseConfig(readFileSync(ws.configFile, 'utf8'), ws.configFile, {});
        const r = await rotateKey(cfg.keys[0]!, {
          config: cfg,
          stateStore: createFileStateStore(cfg.stateDir),
          logger: silentLogger(),
          env,
          now: true,
          leaked: true,
          observers: [
            {
              onTransition: (e: TransitionEvent) =>
                void (e.state === 'promote' && b.gcp!.deny('secretmanager.secrets.update')),
            },
          ],
        });
        expect(r).toMatchObject({
          outcome: 'needs_attention',
          error: { stage: 'promote', code: 'STORE_ACCESS_DENIED' },
        });
        b.gcp!.allow('secretmanager.secrets.update'); // the operator fixes access
        const resumed = await run('resume', 'leaky', '--json');
        expect(resumed.result).toMatchObject({ outcome: 'rotated', rotationId: r.rotationId });
        expect(workingKey(b, leaked)).toBeUndefined();
        expect(new Set((await served(b, w, ws.stateDir)).map((x) => x.value)).size).toBe(1);
        expect((await run('rotate', '--now', 'leaky', '--json')).result.outcome).toBe('rotated');
      } finally {
        await closeBackends(b);
      }
    });
  }
});
