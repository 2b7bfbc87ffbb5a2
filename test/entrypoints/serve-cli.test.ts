/**
 * `keyrotor serve` as a real process: flags and env wiring, refusal to start without (sound)
 * authentication, a request served end to end, and a graceful exit on SIGTERM.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { capture } from '../helpers/artifacts.ts';
import path from 'node:path';
import { main as _main } from '../../src/entrypoints/cli.ts';
import { CLI, LOCAL_CONFIG, workspace, cliInProcess, serveOutput } from './cli-helpers.ts';
import { workerHeapFlags } from '../../src/entrypoints/heap.ts';

const TOKEN = 'serve-cli-test-token-0123456789abcdef';

/** the command line a running process was started (or restarted by execve) with; Linux only */
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
const HAS_PROC = existsSync('/proc/self/cmdline');
/** `process.execve` (Node >= 22.15 / 23.11, not Windows): how serve and daemon set their heap flags */
const HAS_EXECVE = typeof (process as { execve?: unknown }).execve === 'function';

/** the CLI's main() in process (flag parsing and refusals need no real process) */
const runCli = (args: string[], o: { cwd: string; env?: NodeJS.ProcessEnv; name: string }) =>
  cliInProcess(['-c', path.join(o.cwd, 'rotation.config.yaml'), ...args], { env: { ...o.env }, name: o.name });

describe('keyrotor serve (process)', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  it('--help documents routes, authentication and the environment', async () => {
    const r = await runCli(['serve', '--help'], { cwd: workspace(LOCAL_CONFIG, 'serve-help'), name: 'serve-help' });
    expect(r.code).toBe(0);
    for (const s of [
      '/rotate',
      '/pubsub',
      '/healthz',
      '--audience',
      '--allowed-email',
      '--token-env',
      '--max-body',
      '--request-timeout',
      'PORT',
      'KEYROTOR_OIDC_AUDIENCE',
      'KEYROTOR_OIDC_JWKS_URL',
    ]) {
      expect(r.stdout).toContain(s);
    }
  });

  it('refuses to start without authentication, with an audience but no allowed caller, or with a short token (exit 2)', async () => {
    const cwd = workspace(LOCAL_CONFIG, 'serve-refuse');
    const none = await runCli(['serve', '--port', '0'], { cwd, name: 'serve-noauth' });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no authentication configured');
    const anyone = await runCli(['serve', '--port', '0', '--audience', 'https://x.a.run.app'], {
      cwd,
      name: 'serve-anyone',
    });
    expect(anyone.code).toBe(2);
    expect(anyone.stderr).toContain('--allowed-email');
    const short = await runCli(['serve', '--port', '0'], {
      cwd,
      env: { KEYROTOR_SERVE_TOKEN: 'short' },
      name: 'serve-short',
    });
    expect(short.code).toBe(2);
    expect(short.stderr).not.toContain('short\n');
    const badPort = await runCli(['serve', '--port', 'eighty'], {
      cwd,
      env: { KEYROTOR_SERVE_TOKEN: TOKEN },
      name: 'serve-badport',
    });
    expect(badPort.code).toBe(2);
  });

  it('serves on the configured address, rotates on an authenticated request, exits 0 on SIGTERM', async () => {
    const cwd = workspace(LOCAL_CONFIG, 'serve-proc');
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--port', '0', '--host', '127.0.0.1', '--token-env', 'MY_SERVE_TOKEN'],
      {
        cwd,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
          MY_SERVE_TOKEN: TOKEN,
          KEYROTOR_LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(child);
    const out = serveOutput(child, 20_000);
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const url = await out.url;
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    // the worker runs with its heap flags (docs/operations.md#worker-memory): Node started again with
    // them in the same process, the CLI's arguments unchanged
    if (HAS_PROC && HAS_EXECVE)
      expect(cmdline(child.pid!)).toEqual([
        process.execPath,
        ...workerHeapFlags(),
        CLI,
        'serve',
        '--port',
        '0',
        '--host',
        '127.0.0.1',
        '--token-env',
        'MY_SERVE_TOKEN',
      ]);

    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/rotate`, { method: 'POST', body: '{}' })).status).toBe(401);
    const res = await fetch(`${url}/rotate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ keys: ['demo'], now: true }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { results: Array<{ key: string; outcome: string }> };
    expect(body.results[0]).toMatchObject({ key: 'demo', outcome: 'rotated' });

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    capture('serve-proc.stderr', out.stderr());
    capture('serve-proc.stdout', stdout);
    expect(out.stderr()).toContain('"msg":"stopped"');
    expect(out.stderr()).not.toContain(TOKEN);
  });

  it.runIf(HAS_PROC)('heap flags in NODE_OPTIONS win: serve then runs as started, with those', async () => {
    const cwd = workspace(LOCAL_CONFIG, 'serve-own-heap');
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--host', '127.0.0.1'], {
      cwd,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        KEYROTOR_SERVE_TOKEN: TOKEN,
        NODE_OPTIONS: '--max-old-space-size=300',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    const out = serveOutput(child, 20_000);
    const url = await out.url;
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    expect(cmdline(child.pid!)).toEqual([process.execPath, CLI, 'serve', '--port', '0', '--host', '127.0.0.1']);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    capture('serve-own-heap.stderr', out.stderr());
  });
});
