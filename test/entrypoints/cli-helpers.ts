import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { keyConfig, SMOKE_TEST } from '../helpers/config.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = path.join(ROOT, 'src/entrypoints/cli.ts');

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The CLI's `main()` in this process (edge cases, fast), its output captured as artifacts
 * `<name>.stdout` / `<name>.stderr` so the canary scan reads them. `main()`'s logger writes to this
 * process's stderr, not to these: pass `--log-level` to keep it quiet.
 */
export async function cliInProcess(argv: string[], o: { env: NodeJS.ProcessEnv; name: string }): Promise<CliRun> {
  const { main } = await import('../../src/entrypoints/cli.ts');
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env: o.env });
  capture(`${o.name}.stdout`, stdout);
  capture(`${o.name}.stderr`, stderr);
  return { code, stdout, stderr };
}

/**
 * The environment of a spawned CLI: PATH, HOME, the run's compile cache, debug logs, then `env` (no
 * other variable of this process leaks in).
 */
export function childEnv(env: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
    KEYROTOR_LOG_LEVEL: 'debug',
    ...env,
  };
}

/** Spawn the real CLI as a process (Node 24 from this test run), no TTY, capturing everything. */
export function runCli(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; name?: string }): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd,
      env: childEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const tag = opts.name ?? args.join('_').slice(0, 40);
      capture(`cli-${tag}.stdout`, stdout);
      capture(`cli-${tag}.stderr`, stderr);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

export function workspace(config: string, name = 'cli'): string {
  const dir = tempDir(name);
  writeFileSync(path.join(dir, 'rotation.config.yaml'), config);
  return dir;
}

export const LOCAL_CONFIG = keyConfig({ name: 'demo', health: SMOKE_TEST });

/** Every file under dir with its bytes, to prove "nothing written". */
export function treeSnapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out[path.relative(dir, p)] = readFileSync(p, 'base64');
    }
  };
  walk(dir);
  return out;
}

/** All bytes under dir as one string, for secret scans. */
export function treeText(dir: string): string {
  return Object.values(treeSnapshot(dir))
    .map((b) => Buffer.from(b, 'base64').toString('latin1'))
    .join('\n');
}

/**
 * A spawned `keyrotor serve`: `url` from its "listening" log line (rejects after `timeoutMs`), and
 * `stderr()`, all it wrote to stderr so far.
 */
export function serveOutput(
  child: { stderr: NodeJS.ReadableStream | null },
  timeoutMs = 20_000,
): { url: Promise<string>; stderr: () => string } {
  let text = '';
  const url = new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "listening" line: ${text}`)), timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"listening"/.exec(text);
      if (m) {
        clearTimeout(t);
        resolve(m[1]!);
      }
    });
  });
  return { url, stderr: () => text };
}
