/**
 * The CLI spawned as a real process on the embedded default (local issuer + file store).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/artifacts.ts';
import { LOCAL_CONFIG, runCli, treeSnapshot, treeText, workspace } from './cli-helpers.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { isLease } from '../../src/core/ports.ts';
import { openFileStore } from '../helpers/file-store.ts';

async function currentValue(dir: string, key = 'demo'): Promise<string | null> {
  const store = await openFileStore(dir, key);
  return (await store.readCurrent())?.secret.reveal() ?? null;
}

function localRegistryIds(dir: string, key = 'demo'): string[] {
  const r = JSON.parse(readFileSync(path.join(dir, '.keyrotor/local-issuer', `${key}.json`), 'utf8')) as {
    keys: { id: string }[];
  };
  return r.keys.map((k) => k.id);
}

describe('keyrotor CLI (spawned)', () => {
  it("the defaults --help shows (kept light for a fast --help) equal their owners' values", async () => {
    const { cliDefaultsDrift } = await import('../../src/entrypoints/cli-defaults.ts');
    expect(await cliDefaultsDrift()).toEqual([]);
  });

  it('rotate --now twice: bootstrap, then a full rotation with a different key; the first is revoked', async () => {
    const dir = workspace(LOCAL_CONFIG);
    const a = await runCli(['rotate', '--now', 'demo', '--json'], { cwd: dir });
    expect(a.code, a.stderr).toBe(0);
    const ra = JSON.parse(a.stdout) as { results: Array<Record<string, unknown>> };
    expect(ra.results).toHaveLength(1);
    expect(ra.results[0]).toMatchObject({ key: 'demo', outcome: 'rotated', oldKeyId: null, bootstrap: true });
    const first = ra.results[0]!.newKeyId as string;
    const v1 = await currentValue(dir);

    const b = await runCli(['rotate', '--now', 'demo', '--json'], { cwd: dir });
    expect(b.code, b.stderr).toBe(0);
    const rb = (JSON.parse(b.stdout) as { results: Array<Record<string, unknown>> }).results[0]!;
    expect(rb).toMatchObject({ key: 'demo', outcome: 'rotated', oldKeyId: first });
    expect(rb.newKeyId).not.toBe(first);
    expect(localRegistryIds(dir)).toEqual([rb.newKeyId]); // the first key is revoked
    const v2 = await currentValue(dir);
    expect(v2).not.toBe(v1);

    // stderr carries JSON logs (no TTY), one per line, naming every stage
    const stages = b.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { stage?: string })
      .map((l) => l.stage)
      .filter(Boolean);
    for (const s of ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked'])
      expect(stages).toContain(s);

    // no secret value anywhere: outputs, state files, snapshots
    for (const v of [v1!, v2!]) {
      expect(a.stdout + a.stderr + b.stdout + b.stderr).not.toContain(v);
      expect(treeText(path.join(dir, '.keyrotor'))).not.toContain(v);
    }

    const s = await runCli(['status', '--json'], { cwd: dir });
    expect(s.code).toBe(0);
    const st = JSON.parse(s.stdout) as { keys: Array<Record<string, unknown>> };
    expect(st.keys[0]).toMatchObject({ name: 'demo', currentKeyId: rb.newKeyId, lastOutcome: 'rotated' });
    expect(Date.parse(st.keys[0]!.nextDueAt as string)).toBeGreaterThan(Date.now());

    const human = await runCli(['status'], { cwd: dir });
    expect(human.stdout).toMatch(/^KEY\s+CURRENT KEY ID\s+LAST ROTATED\s+NEXT DUE\s+LAST OUTCOME/);
  });

  it('rotate without --now skips keys that are not due; --full bootstraps then rotates', async () => {
    const dir = workspace(LOCAL_CONFIG);
    const a = await runCli(['rotate', '--full', '--json'], { cwd: dir });
    expect(a.code, a.stderr).toBe(0);
    const ra = (JSON.parse(a.stdout) as { results: Array<Record<string, unknown>> }).results;
    expect(ra.map((r) => r.outcome)).toEqual(['rotated', 'rotated']);
    expect(ra[0]!.bootstrap).toBe(true);
    expect(ra[1]!.oldKeyId).toBe(ra[0]!.newKeyId);
    const b = await runCli(['rotate', '--json'], { cwd: dir });
    expect(b.code).toBe(0);
    expect((JSON.parse(b.stdout) as { results: Array<Record<string, unknown>> }).results[0]).toMatchObject({
      outcome: 'skipped',
    });
    // the human summary says what happened
    const c = await runCli(['rotate', '--now'], { cwd: dir });
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(
      new RegExp(`^demo  ROTATED  ${ra[1]!.newKeyId} → lk_[0-9a-f]+; old key revoked and confirmed dead  \\[rot-`),
    );
    const d = await runCli(['rotate'], { cwd: dir });
    expect(d.stdout).toMatch(/^demo {2}SKIPPED {2}not due$/m);
  });

  it('--dry-run prints the plan and writes nothing', async () => {
    const dir = workspace(LOCAL_CONFIG);
    const before = treeSnapshot(dir);
    const r = await runCli(['rotate', '--now', '--dry-run'], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/demo\s+SKIPPED\s+would rotate/);
    expect(treeSnapshot(dir)).toEqual(before);
  });

  it.each([
    ['bad config', 'version: 1\nkeys: []\n', ['validate'], /rotation\.config\.yaml:2:\d+ keys: at least one key/],
    [
      'unknown key name',
      LOCAL_CONFIG,
      ['rotate', '--now', 'nope'],
      /UNKNOWN_KEY: unknown key "nope" \(configured: demo\)/,
    ],
    [
      'missing env var',
      LOCAL_CONFIG.replace('type: file', 'type: file, path: "${SECRETS_DIR}/demo.json"'),
      ['rotate', '--now', 'demo'],
      /CONFIG_ENV_MISSING: rotation\.config\.yaml:\d+:\d+ environment variable SECRETS_DIR is not set/,
    ],
    ['--leaked without --now', LOCAL_CONFIG, ['rotate', '--leaked', 'demo'], /USAGE: --leaked needs --now/],
    ['unknown option', LOCAL_CONFIG, ['rotate', '--nw'], /unknown option '--nw'/],
    ['missing config', null, ['rotate'], /CONFIG_NOT_FOUND: rotation\.config\.yaml: cannot read config/],
  ])('%s: one clear line, exit 2, nothing written', async (_n, config, args, re) => {
    const dir = config === null ? tempDir('no-config') : workspace(config, 'bad');
    const before = treeSnapshot(dir);
    const r = await runCli(args, { cwd: dir, name: `bad-${_n}` });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
    expect(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('(')).length,
    ).toBe(1); // plus optional "(Did you mean …)" hints
    expect(r.stdout).toBe('');
    expect(treeSnapshot(dir)).toEqual(before);
  });

  it('unreadable state: one clear line naming the file, exit 2, nothing written', async () => {
    const dir = workspace(LOCAL_CONFIG);
    mkdirSync(path.join(dir, '.keyrotor/state'), { recursive: true });
    writeFileSync(
      path.join(dir, '.keyrotor/state/demo.json'),
      '{"format":"keyrotor-state/1","record":{"keyName":"demo","act',
    );
    const before = treeSnapshot(dir);
    const r = await runCli(['rotate', '--now', 'demo', '--json'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/STATE_UNREADABLE: .*demo\.json/);
    expect(JSON.parse(r.stdout)).toMatchObject({ results: [], error: { code: 'STATE_UNREADABLE' } });
    expect(treeSnapshot(dir)).toEqual(before);
  });

  it('a key locked by another rotation: outcome locked, exit 3', async () => {
    const dir = workspace(LOCAL_CONFIG);
    const state = createFileStateStore(path.join(dir, '.keyrotor'));
    const lease = await state.acquire('demo', 'other-host:123', 60_000);
    expect(isLease(lease)).toBe(true);
    const r = await runCli(['rotate', '--now', 'demo', '--json'], { cwd: dir });
    expect(r.code).toBe(3);
    expect((JSON.parse(r.stdout) as { results: Array<Record<string, unknown>> }).results[0]).toMatchObject({
      outcome: 'locked',
      error: { code: 'LOCKED' },
    });
    if (isLease(lease)) await lease.release();
  });

  it('--help documents the exit codes', async () => {
    const dir = workspace(LOCAL_CONFIG);
    const r = await runCli(['--help'], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /Exit codes:[\s\S]*0 {2}done[\s\S]*1 {2}not done, but safe[\s\S]*2 {2}bad usage[\s\S]*3 {2}locked[\s\S]*4 {2}a human must act/,
    );
    const v = await runCli(['validate'], { cwd: dir });
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/valid \(1 key: demo\)/);
  });
});
