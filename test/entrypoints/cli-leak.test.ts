/**
 * Leak response through the CLI process against the OpenAI Admin API fake (real SDK on the wire, file
 * store), issue 15:
 *   - a transient 500 (or a lost answer) on the key create does not end a rotation: the create is
 *     reconciled by its unique name and tried again, in leak mode and in a normal rotation; the old
 *     key ends dead and no stray key is left at the issuer;
 *   - `--revoke-first`: the leaked key is deleted before anything is created, the result and the audit
 *     record say how long consumers had no working key; a crash after the delete resumes forward;
 *   - its usage errors.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, LOCAL_CONFIG, runCli, treeSnapshot, treeText, workspace, childEnv } from './cli-helpers.ts';
import { useOpenAICliWorld } from './openai-cli-world.ts';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';

const world = useOpenAICliWorld({ masterKey: 'ef'.repeat(32) });

type LeakResult = ReturnType<typeof world.results>[number] & {
  leaked?: boolean;
  revokedFirst?: boolean;
  consumersWithoutKeyMs?: number;
  consumersStillWithoutKey?: boolean;
  leftovers?: string[];
};
const result = (stdout: string) => world.results(stdout)[0] as LeakResult;

/** the keys of this rotation's unique name that are still alive at the issuer */
const liveNamed = (rotationId: string) => world.fake.state.keysNamed(`keyrotor.app.${rotationId}`);
/** every key (alive or deleted) of this rotation's unique name */
const allNamed = (rotationId: string) => world.fake.state.keys.filter((k) => k.name === `keyrotor.app.${rotationId}`);

/** what the file store of `dir` serves, as the issuer's key id */
async function servedKeyId(dir: string): Promise<string | undefined> {
  const s = await runCli(['status', '--json'], { cwd: dir, env: world.env(), name: 'leak-status' });
  return (JSON.parse(s.stdout) as { keys: { currentKeyId?: string }[] }).keys[0]?.currentKeyId;
}

function auditResults(dir: string): Record<string, unknown>[] {
  return readFileSync(path.join(dir, '.keyrotor/audit/audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.type === 'result');
}

describe('leak mode runs the critical path only', () => {
  it('create → verify the new key → delete the old → see it rejected; the last-use read goes alongside the create', async () => {
    const { dir, old } = await world.bootstrap('critical-path');
    world.fake.resetFaults(); // the log from here on is this rotation's
    const r = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: world.env(),
      name: 'critical-path',
    });
    expect(r.code, r.stderr).toBe(0);
    const res = result(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id, leaked: true });
    const routes = world.fake.log.map((e) => e.route);
    const created = routes.indexOf('serviceAccounts.apiKeys.create');
    // nothing before the create but the last-use read sent beside it (no check, no service-account read)
    expect(routes.slice(0, created).filter((x) => x !== 'projects.apiKeys.list')).toEqual([]);
    expect(routes.slice(0, created).length).toBeLessThanOrEqual(1);
    expect(routes.filter((x) => x !== 'projects.apiKeys.list')).toEqual([
      'serviceAccounts.apiKeys.create',
      'models.list', // the new key works
      'projects.apiKeys.delete',
      'models.list', // the old key is rejected
    ]);
    expect(routes.filter((x) => x === 'projects.apiKeys.list')).toHaveLength(1);
  });
});

describe('leak mode without the issuer check before the create', () => {
  it('a wrong admin key: the create is refused, nothing to discard; needs_attention says the leaked key is still current (exit 4)', async () => {
    const { dir, old } = await world.bootstrap('wrong-admin');
    world.fake.resetFaults();
    const r = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: { ...world.env(), OPENAI_ADMIN_KEY: 'sk-admin-not-this-one' },
      name: 'wrong-admin',
    });
    expect(r.code, r.stderr).toBe(4);
    const res = result(r.stdout);
    expect(res).toMatchObject({
      outcome: 'needs_attention',
      oldKeyId: old.id,
      leaked: true,
      error: { stage: 'issue' },
    });
    expect(res.error!.code).not.toBe('ROLLBACK_FAILED');
    expect(res.leftovers).toEqual([expect.stringContaining(`the LEAKED key ${old.id} is still current`)]);
    expect(world.live(old.id)).toBe(true);
    expect(world.fake.calls('serviceAccounts.apiKeys.create').map((c) => c.status)).toEqual([401]);
  });
});

describe('a transient error on the key create does not end the rotation', () => {
  for (const mode of ['leak', 'normal'] as const) {
    it(`${mode} mode: one 500 on create → tried again, rotated; the old key dead, no stray key (exit 0)`, async () => {
      const { dir, old } = await world.bootstrap(`create500-${mode}`);
      world.fake.resetFaults(); // the log from here on is this rotation's
      world.fake.failNext('serviceAccounts.apiKeys.create', { status: 500 });
      const args = ['rotate', '--now', ...(mode === 'leak' ? ['--leaked'] : []), 'app', '--json'];
      const r = await runCli(args, { cwd: dir, env: world.env(), name: `create500-${mode}` });
      expect(r.code, r.stderr).toBe(0);
      const res = result(r.stdout);
      expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id });
      expect(res.error).toBeUndefined();
      // two creates: the refused one and the retry; the retry looked its name up first
      const creates = world.fake.calls('serviceAccounts.apiKeys.create');
      expect(creates.map((c) => c.status)).toEqual([500, 200]);
      const lookups = world.fake.log.filter(
        (e) => e.route === 'projects.apiKeys.list' && e.seq > creates[0]!.seq && e.seq < creates[1]!.seq,
      );
      expect(lookups.length).toBeGreaterThan(0);
      expect(world.live(old.id)).toBe(false);
      expect(liveNamed(res.rotationId).map((k) => k.id)).toEqual([res.newKeyId]);
      expect(await servedKeyId(dir)).toBe(res.newKeyId);
    });
  }

  it('leak mode: a create applied but its answer lost → the key it made is deleted, the retry is the one kept', async () => {
    const { dir, old } = await world.bootstrap('create-lost-leak');
    world.fake.resetFaults(); // the log from here on is this rotation's
    world.fake.loseResponse('serviceAccounts.apiKeys.create');
    const r = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: world.env(),
      name: 'create-lost-leak',
    });
    expect(r.code, r.stderr).toBe(0);
    const res = result(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id, leaked: true });
    const named = allNamed(res.rotationId);
    expect(named).toHaveLength(2); // the lost one and the one kept
    expect(named.filter((k) => !k.deleted).map((k) => k.id)).toEqual([res.newKeyId]);
    expect(world.live(old.id)).toBe(false);
  });

  it('a create that keeps failing ends at the retry budget: rolled back, nothing left at the issuer (exit 1)', async () => {
    const { dir, old } = await world.bootstrap('create-budget');
    world.fake.resetFaults(); // the log from here on is this rotation's
    writeBudget(dir, '1s');
    world.fake.failNext('serviceAccounts.apiKeys.create', { status: 503, times: 1_000 });
    const before = world.fake.state.liveKeys().length;
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: world.env(), name: 'create-budget' });
    const tries = world.fake.calls('serviceAccounts.apiKeys.create').length;
    world.fake.resetFaults();
    expect(r.code, r.stderr).toBe(1);
    const res = result(r.stdout);
    expect(res).toMatchObject({ outcome: 'rolled_back', oldKeyId: old.id, error: { stage: 'issue' } });
    expect(tries).toBeGreaterThanOrEqual(3);
    expect(liveNamed(res.rotationId)).toEqual([]);
    expect(world.fake.state.liveKeys().length).toBe(before);
    expect(world.live(old.id)).toBe(true);
  });
});

/** set defaults.retry.budget in the workspace's config */
function writeBudget(dir: string, budget: string) {
  const file = path.join(dir, 'rotation.config.yaml');
  const text = readFileSync(file, 'utf8').replace('defaults:\n', `defaults:\n  retry: { budget: ${budget} }\n`);
  expect(text).toContain(`budget: ${budget}`);
  writeFileSync(file, text);
}

describe('rotate --now --leaked --revoke-first', () => {
  it('deletes the leaked key before anything is created; the result and the audit say how long consumers had no key', async () => {
    const { dir, old } = await world.bootstrap('revoke-first');
    world.fake.resetFaults(); // the log from here on is this rotation's
    const r = await runCli(['rotate', '--now', '--leaked', '--revoke-first', 'app', '--json'], {
      cwd: dir,
      env: world.env(),
      name: 'revoke-first',
    });
    expect(r.code, r.stderr).toBe(0);
    const res = result(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id, leaked: true, revokedFirst: true });
    expect(res.consumersWithoutKeyMs).toBeTypeOf('number');
    expect(res.consumersWithoutKeyMs!).toBeGreaterThanOrEqual(0);
    expect(res.consumersStillWithoutKey).toBeUndefined();
    // the order at the issuer: delete the leaked key, see it rejected, then create and verify the new one
    const seqOf = (pred: (e: (typeof world.fake.log)[number]) => boolean) =>
      world.fake.log.filter(pred).map((e) => e.seq);
    const deleted = seqOf((e) => e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old.id}`));
    const created = seqOf((e) => e.route === 'serviceAccounts.apiKeys.create' && e.status === 200);
    const checks = seqOf((e) => e.route === 'models.list');
    expect(deleted).toHaveLength(1);
    expect(created).toHaveLength(1);
    expect(deleted[0]!).toBeLessThan(created[0]!);
    // nothing but the delete (and the last-use read beside it) went out before it
    const before = world.fake.log.filter((e) => e.seq < deleted[0]!);
    expect(before.every((e) => e.route === 'projects.apiKeys.list')).toBe(true);
    expect(checks.some((c) => c > deleted[0]! && c < created[0]!)).toBe(true); // the old key was seen rejected first
    expect(world.live(old.id)).toBe(false);
    expect(liveNamed(res.rotationId).map((k) => k.id)).toEqual([res.newKeyId]);
    expect(await servedKeyId(dir)).toBe(res.newKeyId);
    const audit = auditResults(dir).at(-1)!;
    expect(audit).toMatchObject({
      outcome: 'rotated',
      revokedFirst: true,
      consumersWithoutKeyMs: res.consumersWithoutKeyMs,
    });
    // the human-readable line says it too
    const text = await runCli(['rotate', '--now', '--leaked', '--revoke-first', 'app'], {
      cwd: dir,
      env: world.env(),
      name: 'revoke-first-text',
    });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/revoked first: consumers had no working key for \d+ ms/);
    const all = r.stdout + r.stderr + text.stdout + text.stderr + treeText(path.join(dir, '.keyrotor'));
    expect(all).not.toContain(CANARY);
  });

  it('a crash after the delete: resume goes forward from the saved snapshot (issue), never revokes again, no stray key', async () => {
    const { dir, old } = await world.bootstrap('revoke-first-crash');
    world.fake.resetFaults(); // the log from here on is this rotation's
    const hold = world.fake.holdResponse('serviceAccounts.apiKeys.create'); // applied; the answer waits
    const child = spawn(process.execPath, [CLI, 'rotate', '--now', '--leaked', '--revoke-first', 'app', '--json'], {
      cwd: dir,
      env: childEnv(world.env()),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => child.on('close', () => r()));
    const creates = () => world.fake.calls('serviceAccounts.apiKeys.create').length;
    for (let i = 0; i < 2400 && creates() < 1; i++) await new Promise((r) => setTimeout(r, 25));
    expect(creates()).toBe(1); // the one in flight now
    child.kill('SIGKILL');
    await exited;
    hold.release();
    capture('cli-revoke-first-crash.out', out);
    expect(world.live(old.id)).toBe(false); // dead before the crash
    const minted = world.fake.state
      .liveKeys()
      .filter((k) => k.owner.type === 'service_account' && k.owner.serviceAccountId === world.saId);
    expect(minted).toHaveLength(1); // the create of the dead process was applied

    const status = await runCli(['status', '--json'], {
      cwd: dir,
      env: world.env(),
      name: 'revoke-first-crash-status',
    });
    expect(status.stdout).toContain('issue'); // the saved rotation is at issue, past the revoke

    const r = await runCli(['resume', 'app', '--json'], { cwd: dir, env: world.env(), name: 'revoke-first-resume' });
    expect(r.code, r.stderr).toBe(0);
    const res = result(r.stdout);
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id, leaked: true, revokedFirst: true });
    expect(res.consumersWithoutKeyMs!).toBeGreaterThan(0);
    // the dead process's key (value never seen) was deleted by name; the resumed run's key is the one served
    expect(world.live(minted[0]!.id)).toBe(false);
    expect(liveNamed(res.rotationId).map((k) => k.id)).toEqual([res.newKeyId]);
    expect(await servedKeyId(dir)).toBe(res.newKeyId);
    const deletesOfOld = world.fake.log.filter(
      (e) => e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old.id}`),
    );
    expect(deletesOfOld).toHaveLength(1);
  });

  it.each([
    ['--revoke-first alone', ['rotate', '--revoke-first', 'demo']],
    ['--revoke-first without --leaked', ['rotate', '--now', '--revoke-first', 'demo']],
    ['--revoke-first without --now', ['rotate', '--leaked', '--revoke-first', 'demo']],
  ])('%s: one clear line, exit 2, nothing written', async (name, args) => {
    const dir = workspace(LOCAL_CONFIG, 'revoke-first-usage');
    const before = treeSnapshot(dir);
    const r = await runCli(args, { cwd: dir, name: `usage-${name}` });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/USAGE: --revoke-first needs --now --leaked/)]);
    expect(r.stdout).toBe('');
    expect(treeSnapshot(dir)).toEqual(before);
  });

  it('--help documents it', async () => {
    const r = await runCli(['rotate', '--help'], { cwd: workspace(LOCAL_CONFIG, 'revoke-first-help') });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--revoke-first');
    expect(r.stdout).toMatch(/Consumers have NO\s+working key/);
  });
});
