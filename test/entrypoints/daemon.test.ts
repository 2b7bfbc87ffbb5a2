/**
 * `keyrotor daemon`: in process with fake timers (croner ticks, the daily schedule), and as a real
 * process that gets a real SIGTERM in the middle of a rotation and resumes it on the next start.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseConfig } from '../../src/app/config/load.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import type { TransitionEvent } from '../../src/app/run.ts';
import { startDaemon, type Daemon, type DaemonRun } from '../../src/entrypoints/daemon.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { CLI } from './cli-helpers.ts';
import { workerHeapFlags } from '../../src/entrypoints/heap.ts';

const CONFIG = `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
keys:
  - name: daily
    issuer: { type: local }
    stores: [ { type: file } ]
    schedule: { every: 1d }
  - name: weekly
    issuer: { type: local }
    stores: [ { type: file } ]
    schedule: { every: 7d }
`;

function setup() {
  const dir = tempDir('daemon');
  const cfg = parseConfig(CONFIG, path.join(dir, 'rotation.config.yaml'), {});
  return { dir, cfg, stateStore: createFileStateStore(cfg.stateDir) };
}

const rotated = (run: DaemonRun | null | undefined) =>
  (run?.results ?? [])
    .filter((r) => r.outcome === 'rotated')
    .map((r) => r.key)
    .sort();

describe('daemon with fake timers', () => {
  let daemon: Daemon | undefined;
  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
    vi.useRealTimers();
  });

  // only timers and Date are faked: setImmediate / nextTick keep the run loop's write-ahead barrier going
  const fake = () =>
    vi.useFakeTimers({
      toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'],
      now: new Date('2026-03-02T10:00:30Z'),
    });

  /** advance fake time by `ms` and wait for the run that tick starts */
  function harness() {
    const runs: DaemonRun[] = [];
    let waiting: ((r: DaemonRun) => void) | null = null;
    const skips: Date[] = [];
    const onRun = (r: DaemonRun) => {
      runs.push(r);
      waiting?.(r);
      waiting = null;
    };
    const tickAndWait = async (ms: number) => {
      const p = new Promise<DaemonRun>((r) => (waiting = r));
      await vi.advanceTimersByTimeAsync(ms);
      return p;
    };
    return { runs, skips, onRun, onSkip: (d: Date) => skips.push(d), tickAndWait };
  }

  it('due keys rotate once per due period, on the tick', async () => {
    fake();
    const { cfg, stateStore } = setup();
    const h = harness();
    daemon = startDaemon({
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      tick: '* * * * *',
      jitterMs: 0,
      runAtStart: false,
      onRun: h.onRun,
    });
    expect(daemon.nextRun()?.toISOString()).toBe('2026-03-02T10:01:00.000Z');
    // first tick: both were never rotated
    expect(rotated(await h.tickAndWait(30_000))).toEqual(['daily', 'weekly']);
    // a minute later nothing is due
    expect(rotated(await h.tickAndWait(60_000))).toEqual([]);
    // a day later only the daily key is due, and only once
    vi.setSystemTime(new Date('2026-03-03T10:01:30Z'));
    expect(rotated(await h.tickAndWait(60_000))).toEqual(['daily']);
    expect(rotated(await h.tickAndWait(60_000))).toEqual([]);
    vi.setSystemTime(new Date('2026-03-09T10:03:30Z'));
    expect(rotated(await h.tickAndWait(60_000))).toEqual(['daily', 'weekly']);
    expect(h.runs.flatMap((r) => r.results).filter((r) => r.outcome === 'rotated')).toHaveLength(5);
    expect((await stateStore.read('daily'))?.last?.outcome).toBe('rotated');
  });

  it('waits a random jitter before each run', async () => {
    fake();
    const { cfg, stateStore } = setup();
    const h = harness();
    daemon = startDaemon({
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      tick: '0 * * * *',
      jitterMs: 600_000,
      random: () => 0.5,
      runAtStart: false,
      onRun: h.onRun,
    });
    await vi.advanceTimersByTimeAsync(59 * 60_000 + 30_000 + 299_000); // the tick at 11:00 plus 299 s of jitter
    expect(h.runs).toHaveLength(0);
    expect(rotated(await h.tickAndWait(1_000))).toEqual(['daily', 'weekly']);
  });

  it('runs never overlap: ticks during a run are skipped, each key rotates once', async () => {
    fake();
    const { cfg, stateStore } = setup();
    const h = harness();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const holder = { onTransition: (e: TransitionEvent) => (e.state === 'issue' ? gate : undefined) };
    daemon = startDaemon({
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      tick: '* * * * *',
      jitterMs: 0,
      runAtStart: false,
      observers: [holder],
      onRun: h.onRun,
      onSkip: h.onSkip,
    });
    const first = daemon.runNow(); // blocks at `issue` until released
    await vi.advanceTimersByTimeAsync(3 * 60_000); // the ticks at 10:01, 10:02 and 10:03 fire meanwhile
    expect(h.skips).toHaveLength(3);
    expect(await daemon.runNow()).toBeNull();
    expect(daemon.running).toBe(true);
    release();
    expect(rotated(await first)).toEqual(['daily', 'weekly']);
    expect(h.runs).toHaveLength(1);
    expect(rotated(await h.tickAndWait(60_000))).toEqual([]);
  });

  it('stop (SIGTERM) mid-rotation pauses at a safe point; the next daemon resumes the same rotation', async () => {
    fake();
    const { cfg, stateStore } = setup();
    let stopping: Promise<void> | undefined;
    const stopper = {
      onTransition: (e: TransitionEvent) => {
        if (e.state === 'promote' && e.key === 'daily') stopping = daemon!.stop('SIGTERM');
      },
    };
    const h = harness();
    daemon = startDaemon({
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      tick: '* * * * *',
      jitterMs: 0,
      runAtStart: true,
      concurrency: 1,
      observers: [stopper],
      onRun: h.onRun,
    });
    await daemon.done;
    await stopping;
    const paused = h.runs[0]!.results.find((r) => r.key === 'daily')!;
    expect(paused).toMatchObject({ outcome: 'in_progress', stage: 'promote' });
    expect((await stateStore.read('daily'))?.active?.rotationId).toBe(paused.rotationId);
    expect(h.runs[0]!.results.find((r) => r.key === 'weekly')?.outcome).not.toBe('rotated'); // nothing new starts while stopping

    const h2 = harness();
    const p = new Promise<DaemonRun>((r) => (h2.onRun = (x) => r(x)));
    daemon = startDaemon({
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      tick: '* * * * *',
      jitterMs: 0,
      onRun: (x) => h2.onRun(x),
    });
    const resumed = await p;
    expect(resumed.results.find((r) => r.key === 'daily')).toMatchObject({
      outcome: 'rotated',
      rotationId: paused.rotationId,
      bootstrap: true,
    });
    expect((await stateStore.read('daily'))?.active).toBeNull();
  });

  it('refuses a bad tick pattern', () => {
    const { cfg, stateStore } = setup();
    expect(() => startDaemon({ config: cfg, stateStore, logger: silentLogger(), tick: 'every five minutes' })).toThrow(
      /invalid tick/,
    );
  });
});

describe('keyrotor daemon as a process: a real SIGTERM in the middle of a rotation', () => {
  let openai: OpenAIFake;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    openai = await startOpenAIFake();
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await openai?.close();
  });

  function spawnDaemon(dir: string, name: string, extra: string[] = []) {
    const child = spawn(process.execPath, [CLI, 'daemon', '--json', '--jitter', '0', '--tick', '0 0 1 1 *', ...extra], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
        KEYROTOR_LOG_LEVEL: 'debug',
        OPENAI_ADMIN_KEY: openai.adminKey,
        KEYROTOR_MASTER_KEY: 'ef'.repeat(32),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.on('close', (code) => {
        capture(`daemon-${name}.stdout`, stdout);
        capture(`daemon-${name}.stderr`, stderr);
        resolve({ code, stdout, stderr });
      }),
    );
    return { child, exited, stderr: () => stderr };
  }

  async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await f().catch(() => undefined);
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('SIGTERM during verify: exits 0 with in_progress; the restarted daemon resumes and finishes it', async () => {
    const sa = openai.state.addServiceAccount('daemon-app');
    const dir = tempDir('daemon-proc');
    writeFileSync(
      path.join(dir, 'rotation.config.yaml'),
      `version: 1
defaults:
  verify: { timeout: 60s, interval: 100ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
keys:
  - name: app
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores: [ { type: file } ]
`,
    );
    const state = createFileStateStore(path.join(dir, '.keyrotor'));
    openai.setNewKeyPropagation(1_000_000); // the new key does not work yet: the rotation waits in verify
    const first = spawnDaemon(dir, 'first');
    const active = await until('the rotation to wait in verify', async () => {
      const rec = await state.read('app');
      return (rec?.active?.snapshot as { value?: string } | undefined)?.value === 'verify' ? rec!.active! : undefined;
    });
    // the daemon runs with the worker heap flags: Node started again with them in the same process
    // (docs/operations.md#worker-memory; Linux /proc, Node with process.execve)
    if (existsSync('/proc/self/cmdline') && typeof (process as { execve?: unknown }).execve === 'function') {
      const argv = readFileSync(`/proc/${first.child.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      expect(argv.slice(0, 4)).toEqual([process.execPath, ...workerHeapFlags(), CLI]);
      expect(argv.slice(4, 5)).toEqual(['daemon']);
    }
    first.child.kill('SIGTERM');
    const r1 = await first.exited;
    openai.setNewKeyPropagation(0);
    expect(r1.code, r1.stderr).toBe(0);
    const run1 = JSON.parse(r1.stdout.trim().split('\n').pop()!) as DaemonRun;
    expect(run1.results[0]).toMatchObject({
      key: 'app',
      outcome: 'in_progress',
      stage: 'verify',
      rotationId: active.rotationId,
    });
    expect((await state.read('app'))?.active?.rotationId).toBe(active.rotationId);

    const newKey = openai.state.keys.find((k) => k.name === `keyrotor.app.${active.rotationId}`)!;
    openai.delayPropagation(newKey.id, 0); // it works now
    const second = spawnDaemon(dir, 'second');
    await until('the resumed rotation to finish', async () =>
      (await state.read('app'))?.last?.rotationId === active.rotationId ? true : undefined,
    );
    second.child.kill('SIGTERM');
    const r2 = await second.exited;
    expect(r2.code, r2.stderr).toBe(0);
    const run2 = JSON.parse(r2.stdout.trim().split('\n')[0]!) as DaemonRun;
    expect(run2.results[0]).toMatchObject({
      key: 'app',
      outcome: 'rotated',
      rotationId: active.rotationId,
      newKeyId: newKey.id,
    });
    for (const t of [r1.stdout, r1.stderr, r2.stdout, r2.stderr]) expect(t).not.toContain(CANARY);
  }, 60_000);

  it('--metrics-port serves /metrics (rotations, key age, process metrics) and /healthz on 127.0.0.1', async () => {
    const sa = openai.state.addServiceAccount('daemon-metrics');
    const dir = tempDir('daemon-metrics');
    writeFileSync(
      path.join(dir, 'rotation.config.yaml'),
      `version: 1
keys:
  - name: app
    issuer: { type: openai, project: ${openai.project}, serviceAccount: ${sa.id}, baseURL: "${openai.baseURL}", timeout: 5s }
    stores: [ { type: file } ]
`,
    );
    const state = createFileStateStore(path.join(dir, '.keyrotor'));
    const d = spawnDaemon(dir, 'metrics', ['--metrics-port', '0']);
    const base = await until('the metrics endpoint', async () => {
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)\/metrics"/.exec(d.stderr());
      return m?.[1];
    });
    await until('the bootstrap rotation', async () => ((await state.read('app'))?.currentKeyId ? true : undefined));
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const text = await until('the rotation in the metrics', async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      return /keyrotor_rotations_total\{key="app",outcome="rotated"/.test(t) ? t : undefined;
    });
    expect(text).toMatch(/^keyrotor_key_age_seconds\{key="app"\} \d/m);
    expect(text).toMatch(/^keyrotor_process_resident_memory_bytes \d+/m);
    expect(text).toMatch(/^keyrotor_nodejs_eventloop_lag_seconds /m);
    expect(text).not.toContain(CANARY);
    expect((await fetch(`${base}/rotate`, { method: 'POST' })).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
    d.child.kill('SIGTERM');
    const r = await d.exited;
    expect(r.code, r.stderr).toBe(0);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow(); // closed with the daemon
  }, 60_000);

  it('--metrics-port that is not a port: one line, exit 2', async () => {
    const dir = tempDir('daemon-metrics-bad');
    writeFileSync(path.join(dir, 'rotation.config.yaml'), CONFIG);
    const r = await spawnDaemon(dir, 'metrics-bad', ['--metrics-port', 'http']).exited;
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--metrics-port must be an integer from 0 to 65535/);
  });
});
