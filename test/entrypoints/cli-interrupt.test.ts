/**
 * End to end, the CLI spawned as a real process: Ctrl-C (SIGINT) / SIGTERM during `rotate` pauses the
 * rotation at the next safe point (state saved as in_progress, lock released, exit 5, a message that
 * says how to continue) and `keyrotor resume` finishes it; a second signal exits at once keeping the
 * lock, which the next run on this host takes over at once because its holder is provably gone; a
 * live holder still means LOCKED.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CLI, runCli, type CliRun, childEnv } from './cli-helpers.ts';
import { useOpenAICliWorld } from './openai-cli-world.ts';
import { capture } from '../helpers/artifacts.ts';
import { fileStateRecord } from '../helpers/file-state.ts';

// a long lease: anything that waited for it would time the test out
const world = useOpenAICliWorld({ masterKey: '5a'.repeat(32), extraDefaults: 'lease: { ttl: 10m }' });
const { env, results, live, bootstrap } = world;
const MANUAL = `\n      - { type: manual, name: ops, timeout: 60s, interval: 100ms }`;

function spawnCli(args: string[], dir: string, name: string, extraEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: dir,
    env: childEnv({ ...env(), ...extraEnv }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliRun & { signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      capture(`cli-${name}.stdout`, stdout);
      capture(`cli-${name}.stderr`, stderr);
      resolve({ code: code ?? -1, signal, stdout, stderr });
    }),
  );
  return { child, done, stderr: () => stderr };
}

function active(dir: string): { rotationId: string; stage: string } | undefined {
  const a = fileStateRecord(path.join(dir, '.keyrotor'), 'app')?.active;
  return a ? { rotationId: a.rotationId, stage: String(a.snapshot.value) } : undefined;
}
const lockFile = (dir: string) => path.join(dir, '.keyrotor/locks/app.lock');

async function until<T>(what: string, f: () => T | undefined | false): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const v = f();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
const atStage = (dir: string, stage: string) => until(stage, () => active(dir)?.stage === stage && active(dir));

describe('CLI: interrupts', () => {
  it('Ctrl-C at a gate pauses (exit 5, state saved, lock released); `keyrotor resume` finishes it', async () => {
    const { dir, old } = await bootstrap('int-pause', MANUAL);
    const run = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'int-pause');
    const w = await atStage(dir, 'confirm');
    expect(existsSync(lockFile(dir))).toBe(true);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain('SIGINT: pausing at the next safe point');
    expect(r.stderr).toContain('keyrotor: interrupted (SIGINT): paused app at confirm');
    expect(r.stderr).toContain('Continue with `keyrotor resume app`');
    expect(results(r.stdout)[0]).toMatchObject({ rotationId: w.rotationId, outcome: 'in_progress', stage: 'confirm' });
    expect(active(dir)).toEqual({ rotationId: w.rotationId, stage: 'confirm' }); // saved
    expect(existsSync(lockFile(dir))).toBe(false); // released
    expect(live(old.id)).toBe(true);

    const c = await runCli(['confirm', 'app'], { cwd: dir, env: env(), name: 'int-pause-confirm' });
    expect(c.code, c.stderr).toBe(0);
    const again = await runCli(['resume', 'app', '--json'], { cwd: dir, env: env(), name: 'int-pause-resume' });
    expect(again.code, again.stderr).toBe(0);
    expect(results(again.stdout)[0]).toMatchObject({ rotationId: w.rotationId, outcome: 'rotated', oldKeyId: old.id });
    expect(live(old.id)).toBe(false);
    expect(active(dir)).toBeUndefined();
  });

  it('SIGTERM pauses the same way', async () => {
    const { dir } = await bootstrap('int-term', MANUAL);
    const run = spawnCli(['rotate', '--now', 'app'], dir, 'int-term');
    await atStage(dir, 'confirm');
    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toMatch(/app {2}IN_PROGRESS {2}paused at confirm/);
    expect(r.stderr).toContain('interrupted (SIGTERM): paused app at confirm');
    expect(existsSync(lockFile(dir))).toBe(false);
  });

  it('a second Ctrl-C exits at once and keeps the lock; the next run here takes it over at once', async () => {
    const { dir, old } = await bootstrap('int-twice', ' []');
    // the key create is answered only when released: the run is inside `issue`, talking to the issuer
    const held = world.fake.holdResponse('serviceAccounts.apiKeys.create');
    const creates = () => world.fake.log.filter((q) => q.route === 'serviceAccounts.apiKeys.create').length;
    const before = creates();
    const run = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'int-twice');
    await atStage(dir, 'issue');
    await until('the create request', () => creates() > before);
    run.child.kill('SIGINT');
    await until('the first message', () => run.stderr().includes('pausing at the next safe point'));
    await new Promise((r) => setTimeout(r, 300));
    expect(run.child.exitCode).toBeNull(); // still waiting for the issuer: a stage in flight finishes first
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('SIGINT again: exiting now; the lock of app stays held');
    expect(existsSync(lockFile(dir))).toBe(true); // kept
    expect(JSON.parse(readFileSync(lockFile(dir), 'utf8')).pid).toBe(run.child.pid);
    held.release();

    // 10 min ttl, yet the next run on this host goes ahead at once: the holder is gone
    const t0 = Date.now();
    const again = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: env(),
      name: 'int-twice-leaked',
    });
    expect(again.code, again.stderr).toBe(0);
    expect(results(again.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: old.id });
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(live(old.id)).toBe(false);
    expect(existsSync(lockFile(dir))).toBe(false);
  });

  it('SIGKILL at a gate: `rotate --now --leaked` goes ahead at once; a live holder still means LOCKED', async () => {
    const { dir, old } = await bootstrap('int-kill', MANUAL);
    const first = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'int-kill-1');
    const w = await atStage(dir, 'confirm');

    const locked = await runCli(['rotate', '--now', '--leaked', 'app', '--json'], {
      cwd: dir,
      env: env(),
      name: 'int-kill-locked',
    });
    expect(locked.code, locked.stderr).toBe(3);
    expect(results(locked.stdout)[0]).toMatchObject({ outcome: 'locked', error: { code: 'LOCKED' } });

    first.child.kill('SIGKILL');
    expect((await first.done).signal).toBe('SIGKILL');
    expect(existsSync(lockFile(dir))).toBe(true);
    // the unfinished rotation is resumed at once (at its gate: confirm it so the resumed run can finish)
    const second = spawnCli(['rotate', '--now', '--leaked', 'app', '--json'], dir, 'int-kill-2');
    await until('the new holder', () => {
      try {
        return JSON.parse(readFileSync(lockFile(dir), 'utf8')).pid === second.child.pid;
      } catch {
        return false;
      }
    });
    const c = await runCli(['confirm', 'app'], { cwd: dir, env: env(), name: 'int-kill-confirm' });
    expect(c.code, c.stderr).toBe(0);
    const r = await second.done;
    expect(r.code, r.stderr).toBe(0);
    expect(results(r.stdout)[0]).toMatchObject({ rotationId: w.rotationId, outcome: 'rotated', oldKeyId: old.id });
    expect(live(old.id)).toBe(false);
  });
});

describe('CLI: progress of a long wait', () => {
  it('off a TTY: a "waiting at confirm" log line per rotation at a bounded rate (KEYROTOR_PROGRESS_INTERVAL)', async () => {
    const { dir } = await bootstrap('progress', `\n      - { type: manual, name: ops, timeout: 60s, interval: 50ms }`);
    const run = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'progress', {
      KEYROTOR_PROGRESS_INTERVAL: '400ms',
    });
    await atStage(dir, 'confirm');
    await new Promise((r) => setTimeout(r, 2_500)); // ~50 polls of the gate
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(5);
    const lines = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time: string; msg: string; stage?: string; waits?: unknown[] })
      .filter((l) => l.msg.startsWith('waiting at confirm'));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    expect(lines.length).toBeLessThanOrEqual(9); // 2.5 s / 400 ms + the first, with slack: not one per poll
    const times = lines.map((l) => Date.parse(l.time));
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(400);
    expect(lines[0]!.msg).toMatch(/^waiting at confirm \[ops, (\d+[dhms])+ left\] waiting for `keyrotor confirm app`/);
    expect(lines[0]!.waits).toEqual([
      expect.objectContaining({ gate: 'ops', observation: expect.any(String), leftMs: expect.any(Number) }),
    ]);
  });

  it('a bad KEYROTOR_PROGRESS_INTERVAL is a usage error (exit 2)', async () => {
    const { dir } = await bootstrap('progress-bad', ' []');
    const r = await runCli(['rotate', '--now', 'app'], {
      cwd: dir,
      env: { ...env(), KEYROTOR_PROGRESS_INTERVAL: 'soon' },
      name: 'progress-bad',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('keyrotor: USAGE: KEYROTOR_PROGRESS_INTERVAL must be a duration like 30s (got "soon")');
  });
});
