/**
 * `keyrotor sweep [--dry-run]`: orphan keys at the issuer (named `keyrotor.<key>.<rotationId>`, owned by
 * no rotation, served by no store) are listed, then deleted; nothing else ever is. The OpenAI issuer on
 * its loopback fake, the file store; the main flow spawns the real CLI, the edge cases run main().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, treeSnapshot, workspace, cliInProcess } from './cli-helpers.ts';
import { startOpenAIFake, type FakeKey, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { main as _main } from '../../src/entrypoints/cli.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, type TransitionEvent } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { isLease } from '../../src/core/ports.ts';
import { Secret } from '../../src/core/secret.ts';
import { silentLogger } from '../../src/app/log.ts';
import type { SweepKeyResult } from '../../src/app/sweep.ts';
import { keyConfig, openaiIssuer } from '../helpers/config.ts';
import { openFileStore } from '../helpers/file-store.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

const MASTER = '5e'.repeat(32);
const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER });
const config = (sa: string) => keyConfig({ issuer: openaiIssuer(fake, sa), timeout: '2s', revoke: null });

/** the CLI in this process (edge cases); logs are kept at error level */
const cli = (dir: string, ...args: string[]) =>
  cliInProcess(['-c', path.join(dir, 'rotation.config.yaml'), '--log-level', 'error', ...args], {
    env: env(),
    name: `sweep-${args[0]}`,
  });
const sweepOf = (stdout: string) => (JSON.parse(stdout) as { keys: SweepKeyResult[] }).keys[0]!;
const alive = (id: string) => fake.state.liveKeys().some((k) => k.id === id);

async function setup(name: string) {
  const sa = fake.state.addServiceAccount(`sweep-${name}`);
  const dir = workspace(config(sa.id), `sweep-${name}`);
  const boot = await cli(dir, 'rotate', '--now', 'app', '--json');
  expect(boot.code, boot.stderr).toBe(0);
  const current = (JSON.parse(boot.stdout) as { results: Array<{ newKeyId: string }> }).results[0]!.newKeyId;
  const orphan = fake.state.plantKey({
    name: 'keyrotor.app.rot-20260101t000000z-0badf00d',
    owner: { type: 'service_account', serviceAccountId: sa.id },
  });
  return { sa, dir, current, orphan };
}

describe('keyrotor sweep', () => {
  it('--dry-run lists a planted orphan and changes nothing; sweep deletes it and nothing else; a second sweep is clean', async () => {
    const { sa, dir, current, orphan } = await setup('main');
    const other = fake.state.addServiceAccount('sweep-someone-else');
    const keep: FakeKey[] = [
      fake.state.plantKey({ name: 'Secret key' }), // made by hand: no marker
      fake.state.plantKey({
        name: 'keyrotor.billing.rot-20260101t000000z-0badf00d',
        owner: { type: 'service_account', serviceAccountId: sa.id },
      }), // not a configured key
      fake.state.plantKey({
        name: 'keyrotor.app.not-a-rotation-id',
        owner: { type: 'service_account', serviceAccountId: sa.id },
      }), // no valid marker
      fake.state.plantKey({
        name: 'keyrotor.app.rot-20260102t000000z-0ddba11f',
        owner: { type: 'service_account', serviceAccountId: other.id },
      }), // another service account
    ];
    const liveBefore = fake.state
      .liveKeys()
      .map((k) => k.id)
      .sort();
    const treeBefore = treeSnapshot(path.join(dir, '.keyrotor', 'state'));

    const dry = await runCli(['sweep', '--dry-run', '--json'], { cwd: dir, env: env(), name: 'sweep-dry-json' });
    expect(dry.code, dry.stderr).toBe(0);
    const d = sweepOf(dry.stdout);
    expect(d).toMatchObject({ key: 'app', outcome: 'swept', dryRun: true });
    expect(d.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          keyId: orphan.id,
          action: 'would_delete',
          rotationId: 'rot-20260101t000000z-0badf00d',
        }),
        expect.objectContaining({
          keyId: current,
          action: 'kept',
          reason: expect.stringContaining('current in file:'),
        }),
        expect.objectContaining({
          keyId: keep[3]!.id,
          action: 'kept',
          reason: expect.stringContaining(`service_account:${other.id}`),
        }),
      ]),
    );
    expect(d.entries).toHaveLength(3); // unmarked, other keys' and malformed names are not even listed
    expect(d.unmarked).toBeGreaterThanOrEqual(3);
    const text = await runCli(['sweep', '--dry-run'], { cwd: dir, env: env(), name: 'sweep-dry-text' });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(
      new RegExp(`${orphan.id}\\s+WOULD DELETE\\s+keyrotor\\.app\\.rot-20260101t000000z-0badf00d`),
    );
    expect(
      fake.state
        .liveKeys()
        .map((k) => k.id)
        .sort(),
    ).toEqual(liveBefore);
    expect(treeSnapshot(path.join(dir, '.keyrotor', 'state'))).toEqual(treeBefore);

    const real = await runCli(['sweep', '--json'], { cwd: dir, env: env(), name: 'sweep-json' });
    expect(real.code, real.stderr).toBe(0);
    const r = sweepOf(real.stdout);
    expect(r.outcome).toBe('swept');
    expect(r.entries.find((e) => e.keyId === orphan.id)).toMatchObject({ action: 'deleted' });
    expect(alive(orphan.id)).toBe(false);
    expect(alive(current)).toBe(true);
    for (const k of keep) expect(alive(k.id), k.name).toBe(true);
    expect(real.stderr).toMatch(/deleted orphan key/);

    const again = await cli(dir, 'sweep', '--json');
    expect(again.code).toBe(0);
    expect(sweepOf(again.stdout).outcome).toBe('clean');
    // the store still serves the current key, and it works: rotating goes on from it
    const next = await cli(dir, 'rotate', '--now', 'app', '--json');
    expect(next.code, next.stderr).toBe(0);
    expect(JSON.parse(next.stdout).results[0]).toMatchObject({ outcome: 'rotated', oldKeyId: current });
    for (const out of [dry, text, real]) expect(out.stdout + out.stderr).not.toContain(CANARY);
  });

  it('an unfinished rotation is resumed first and its keys are never swept (dry-run only says it would resume)', async () => {
    const { dir, current, orphan } = await setup('active');
    const cfg = parseConfig(
      readFileSync(path.join(dir, 'rotation.config.yaml'), 'utf8'),
      path.join(dir, 'rotation.config.yaml'),
      {},
    );
    const stateStore = createFileStateStore(cfg.stateDir);
    const ac = new AbortController();
    // stop at the next safe point after the new key is staged: it exists at the issuer, pending in the store
    const paused = await rotateKey(cfg.keys[0]!, {
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: env(),
      now: true,
      signal: ac.signal,
      observers: [{ onTransition: (e: TransitionEvent) => void (e.state === 'verify' && ac.abort()) }],
    });
    expect(paused.outcome).toBe('in_progress');
    const newKeyId = paused.newKeyId!;
    expect(alive(newKeyId)).toBe(true);

    const dry = await cli(dir, 'sweep', '--dry-run', '--json');
    expect(dry.code).toBe(0);
    const d = sweepOf(dry.stdout);
    expect(d.wouldResume).toBe(paused.rotationId);
    expect(d.entries.find((e) => e.keyId === newKeyId)).toMatchObject({
      action: 'kept',
      reason: expect.stringMatching(
        new RegExp(`rotation ${paused.rotationId}.*unfinished|unfinished rotation ${paused.rotationId}`),
      ),
    });
    expect(d.entries.find((e) => e.keyId === orphan.id)).toMatchObject({ action: 'would_delete' });
    expect((await stateStore.read('app'))?.active?.rotationId).toBe(paused.rotationId);
    const textDry = await cli(dir, 'sweep', '--dry-run');
    expect(textDry.stdout).toContain(`would first resume unfinished rotation ${paused.rotationId}`);

    const real = await cli(dir, 'sweep', '--json');
    expect(real.code, real.stderr).toBe(0);
    const r = sweepOf(real.stdout);
    expect(r.resumed).toMatchObject({ outcome: 'rotated', rotationId: paused.rotationId, oldKeyId: current, newKeyId });
    expect(alive(newKeyId)).toBe(true); // finished and current, not swept
    expect(alive(current)).toBe(false); // revoked by the resumed rotation
    expect(alive(orphan.id)).toBe(false);
    expect((await stateStore.read('app'))?.active).toBeNull();
  });

  it('while another run holds the key lock: exit 3, nothing deleted', async () => {
    const { dir, orphan } = await setup('locked');
    const stateStore = createFileStateStore(path.join(dir, '.keyrotor'));
    const lease = await stateStore.acquire('app', 'someone-else', 60_000);
    if (!isLease(lease)) throw new Error('could not take the lease');
    try {
      const r = await cli(dir, 'sweep', '--json');
      expect(r.code).toBe(3);
      expect(sweepOf(r.stdout)).toMatchObject({ outcome: 'locked', error: { code: 'LOCKED' } });
      expect(alive(orphan.id)).toBe(true);
    } finally {
      await lease.release();
    }
  });

  it('a store that cannot be read: nothing is deleted (exit 1, the store is named)', async () => {
    const { dir, orphan } = await setup('unreadable');
    const file = path.join(dir, '.keyrotor', 'secrets', 'app.json');
    renameSync(file, `${file}.aside`);
    writeFileSync(file, '{ torn');
    try {
      const r = await cli(dir, 'sweep', '--json');
      expect(r.code).toBe(1);
      const s = sweepOf(r.stdout);
      expect(s.outcome).toBe('incomplete');
      expect(s.error?.message).toMatch(/cannot read file:.*nothing was deleted/);
      expect(alive(orphan.id)).toBe(true);
    } finally {
      renameSync(`${file}.aside`, file);
    }
    const after = await cli(dir, 'sweep', '--json');
    expect(after.code).toBe(0);
    expect(alive(orphan.id)).toBe(false);
  });

  it('a current value without a key id in the store is identified at the issuer and kept', async () => {
    const { sa, dir } = await setup('handplaced');
    // someone copied a keyrotor-named key into the store by hand: no metadata says which key it is
    const k = fake.state.plantKey({
      name: 'keyrotor.app.rot-20260103t000000z-5eed5eed',
      owner: { type: 'service_account', serviceAccountId: sa.id },
    });
    const store = await openFileStore(dir, 'app', MASTER);
    await store.stage({ rotationId: 'rot-20260103t000000z-5eed5eed', secret: Secret.of(k.value), meta: {} });
    await store.promote('rot-20260103t000000z-5eed5eed');
    const r = await cli(dir, 'sweep', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(sweepOf(r.stdout).entries.find((e) => e.keyId === k.id)).toMatchObject({
      action: 'kept',
      reason: expect.stringContaining('identified at the issuer'),
    });
    expect(alive(k.id)).toBe(true);
    expect(r.stdout + r.stderr).not.toContain(CANARY);
  });

  it('a key pending in a store is kept even when this state store knows no rotation of it', async () => {
    const { sa, dir } = await setup('pending');
    // e.g. another installation (its own state dir) is half way through a rotation of the same secret
    const k = fake.state.plantKey({
      name: 'keyrotor.app.rot-20260104t000000z-0ca11ed0',
      owner: { type: 'service_account', serviceAccountId: sa.id },
    });
    const store = await openFileStore(dir, 'app', MASTER);
    await store.stage({
      rotationId: 'rot-20260104t000000z-0ca11ed0',
      secret: Secret.of(k.value),
      meta: { rotationId: 'rot-20260104t000000z-0ca11ed0', issuerKeyId: k.id },
    });
    const r = await cli(dir, 'sweep', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(sweepOf(r.stdout).entries.find((e) => e.keyId === k.id)).toMatchObject({
      action: 'kept',
      reason: expect.stringContaining('pending in file:'),
    });
    expect(alive(k.id)).toBe(true);
    // once that pending version is gone, the key is an orphan
    await store.unstage('rot-20260104t000000z-0ca11ed0');
    const again = await cli(dir, 'sweep', '--json');
    expect(sweepOf(again.stdout).entries.find((e) => e.keyId === k.id)).toMatchObject({ action: 'deleted' });
    expect(alive(k.id)).toBe(false);
  });

  it('usage: unknown key is exit 2; --help explains what is never deleted', async () => {
    const { dir } = await setup('usage');
    const r = await cli(dir, 'sweep', 'nope');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/UNKNOWN_KEY: unknown key "nope"/);
    const h = await cli(dir, 'sweep', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Never deleted:/);
    expect(h.stdout).toMatch(/--dry-run/);
  });
});
