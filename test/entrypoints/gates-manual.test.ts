/**
 * End to end, the CLI spawned: the `manual` gate with `keyrotor confirm` (revoke) and `--reject`
 * (roll back, exit 1); and a rotation killed while it waits at the gate resumes with the original
 * deadline (`keyrotor rotate --now <key>` resumes the unfinished rotation).
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';

import path from 'node:path';
import { CLI, runCli, type CliRun, childEnv } from './cli-helpers.ts';
import { useOpenAICliWorld } from './openai-cli-world.ts';
import { capture } from '../helpers/artifacts.ts';
import { fileStateRecord } from '../helpers/file-state.ts';

const world = useOpenAICliWorld({ masterKey: '34'.repeat(32), extraDefaults: 'lease: { ttl: 2s }' });
const { env, results, live, bootstrap } = world;

/** the CLI as a process we can kill */
function spawnCli(args: string[], dir: string, name: string) {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: dir,
    env: childEnv(env()),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliRun>((resolve) =>
    child.on('close', (code, signal) => {
      capture(`cli-${name}.stdout`, stdout);
      capture(`cli-${name}.stderr`, stderr);
      resolve({ code: code ?? (signal ? -1 : -2), stdout, stderr });
    }),
  );
  return { child, done };
}

interface Waiting {
  rotationId: string;
  stage: string;
  confirmDeadlines: number[] | null;
  updatedAt: number;
}
/** the running rotation as persisted in the state file */
function persisted(dir: string): Waiting | undefined {
  const active = fileStateRecord(path.join(dir, '.keyrotor'), 'app')?.active as
    | {
        rotationId: string;
        updatedAt: string;
        snapshot: { value: unknown; context: { deadlines: { confirm: number[] | null } } };
      }
    | null
    | undefined;
  if (!active) return undefined;
  return {
    rotationId: active.rotationId,
    stage: String(active.snapshot.value),
    confirmDeadlines: active.snapshot.context.deadlines.confirm,
    updatedAt: Date.parse(active.updatedAt),
  };
}
async function waitForConfirm(dir: string): Promise<Waiting> {
  for (let i = 0; i < 400; i++) {
    const p = persisted(dir);
    if (p?.stage === 'confirm') return p;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the rotation never reached confirm');
}

describe('CLI: manual gate', () => {
  it('waits for `keyrotor confirm <key>`, then revokes the old key', async () => {
    const { dir, old } = await bootstrap(
      'gates-manual-ok',
      `\n      - { type: manual, name: ops, timeout: 20s, interval: 100ms }`,
    );
    const run = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'gates-manual-ok');
    const w = await waitForConfirm(dir);
    await new Promise((r) => setTimeout(r, 300));
    expect(live(old.id)).toBe(true); // still waiting
    const c = await runCli(['confirm', 'app'], { cwd: dir, env: env(), name: 'gates-manual-confirm' });
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain(`app: rotation ${w.rotationId} confirmed`);
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(results(r.stdout)[0]).toMatchObject({ rotationId: w.rotationId, outcome: 'rotated', oldKeyId: old.id });
    expect(live(old.id)).toBe(false);
  });

  it('`keyrotor confirm <rotationId> --reject` rolls back (exit 1); the old key stays', async () => {
    const { dir, old } = await bootstrap(
      'gates-manual-reject',
      `\n      - { type: manual, name: ops, timeout: 20s, interval: 100ms }`,
    );
    const run = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'gates-manual-reject');
    const w = await waitForConfirm(dir);
    const c = await runCli(['confirm', w.rotationId, '--reject', '--reason', 'errors spiked'], {
      cwd: dir,
      env: env(),
      name: 'gates-manual-reject-cmd',
    });
    expect(c.code, c.stderr).toBe(0);
    const r = await run.done;
    expect(r.code, r.stderr).toBe(1);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({
      rotationId: w.rotationId,
      outcome: 'rolled_back',
      oldKeyId: old.id,
      error: { code: 'GATE_REJECTED' },
    });
    expect(res.error!.message).toMatch(/^health gate "ops" did not pass: rejected by .+ at .+: errors spiked$/);
    expect(live(old.id)).toBe(true);
    expect(live(res.newKeyId)).toBe(false);
  });

  it('killed while waiting at the gate: the next run resumes the same rotation with the original deadline', async () => {
    const { dir, old } = await bootstrap(
      'gates-manual-kill',
      `\n      - { type: manual, name: ops, timeout: 5s, interval: 100ms }`,
    );
    const first = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'gates-manual-kill-1');
    const w = await waitForConfirm(dir);
    const deadline = w.confirmDeadlines![0]!;
    expect(deadline).toBeGreaterThan(Date.now());
    first.child.kill('SIGKILL');
    expect((await first.done).code).toBe(-1);
    // the killed run's lease (ttl 2s) must expire before another run may take over
    await new Promise((r) => setTimeout(r, 2100));
    const restartedAt = Date.now();
    const second = spawnCli(['rotate', '--now', 'app', '--json'], dir, 'gates-manual-kill-2');
    // resumed (the new process saved the snapshot again), at the gate, with the deadline from before the kill
    let resumed: Waiting | undefined;
    for (let i = 0; i < 400 && !(resumed && resumed.updatedAt >= restartedAt); i++) {
      await new Promise((r) => setTimeout(r, 25));
      resumed = persisted(dir);
    }
    expect(resumed).toMatchObject({ rotationId: w.rotationId, stage: 'confirm', confirmDeadlines: [deadline] });
    expect(resumed!.updatedAt).toBeGreaterThanOrEqual(restartedAt);
    const r = await second.done;
    expect(r.code, r.stderr).toBe(1);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({
      rotationId: w.rotationId,
      outcome: 'rolled_back',
      oldKeyId: old.id,
      error: { code: 'GATE_TIMEOUT' },
    });
    // it gave up at the original deadline, not a timeout (5s) after it resumed
    const finished = Date.parse(res.finishedAt!);
    expect(finished).toBeGreaterThanOrEqual(deadline);
    expect(finished).toBeLessThan(deadline + 3000);
    expect(finished).toBeLessThan(resumed!.updatedAt + 5000);
    expect(live(old.id)).toBe(true);
    expect(live(res.newKeyId)).toBe(false);
  });
});
