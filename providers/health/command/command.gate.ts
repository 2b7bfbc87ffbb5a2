/**
 * The `command` gate: runs a configured program (argv array, never a shell) until it exits 0.
 *
 * - Environment: a minimal one (PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, plus `passEnv`), never the
 *   parent's whole environment (which holds the admin key), plus
 *     KEYROTOR_KEY, KEYROTOR_ROTATION_ID, KEYROTOR_GATE, KEYROTOR_ATTEMPT,
 *     KEYROTOR_NEW_FINGERPRINT, KEYROTOR_OLD_FINGERPRINT, KEYROTOR_NEW_KEY_ID, KEYROTOR_OLD_KEY_ID,
 *     KEYROTOR_PROMOTED_AT
 *   (empty string when unknown). Never the key.
 * - Each run gets its own process group; on `runTimeout` or when the wait is cancelled the whole
 *   group gets SIGTERM, then SIGKILL after a grace second. Background processes a finished run left
 *   in its group are killed too. (If keyrotor itself is killed, a running check is not.)
 * - The observation is the exit status and the last line the program printed (stderr first),
 *   scrubbed of anything shaped like a key and cut to 160 characters.
 * - A program that cannot be started (not found, not executable) ends the wait at once (final).
 */
import { spawn } from 'node:child_process';
import type { GateContext, GateObservation, HealthGate } from '../../../src/core/ports.ts';
import { scrubText } from '../../../src/core/secret.ts';
import type { CommandGateConfig } from './command.schema.ts';

const BASE_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];
const KEEP_OUTPUT = 4096;
const KILL_GRACE_MS = 1000;

export interface CommandGateOptions {
  cfg: CommandGateConfig;
  name: string;
  /** argv with the program resolved against the config folder */
  argv: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
}

export interface RunOutcome {
  kind: 'exit' | 'timeout' | 'aborted' | 'spawn-error';
  code: number | null;
  signal: NodeJS.Signals | null;
  /** errno of a spawn error */
  errno?: string | undefined;
  lastLine: string;
}

function lastLine(buf: string): string {
  const lines = buf
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
  const l = lines[lines.length - 1] ?? '';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  const clean = scrubText(l).replace(/[\u0000-\u001f\u007f]/g, ' ');
  return clean.length > 160 ? `${clean.slice(0, 157)}...` : clean;
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** Run once; never rejects. */
export function runOnce(
  argv: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number; signal: AbortSignal },
): Promise<RunOutcome> {
  return new Promise<RunOutcome>((resolve) => {
    let out = '';
    let err = '';
    let state: 'running' | 'timeout' | 'aborted' = 'running';
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env,
      shell: false,
      detached: process.platform !== 'win32', // own process group, so a timeout kills its children too
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    const finish = (o: Omit<RunOutcome, 'lastLine'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      opts.signal.removeEventListener('abort', onAbort);
      resolve({ ...o, lastLine: lastLine(err) || lastLine(out) });
    };
    const stop = (why: 'timeout' | 'aborted') => {
      if (state !== 'running') return;
      state = why;
      killGroup(child.pid, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop('timeout'), opts.timeoutMs);
    const onAbort = () => stop('aborted');
    if (opts.signal.aborted) onAbort();
    else opts.signal.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (d: Buffer) => {
      out = (out + d.toString('utf8')).slice(-KEEP_OUTPUT);
    });
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString('utf8')).slice(-KEEP_OUTPUT);
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      finish({ kind: 'spawn-error', code: null, signal: null, errno: e.code ?? 'error' });
    });
    child.on('exit', (code, signal) => {
      // the group may still hold the pipes (a background grandchild): do not wait for them for long
      const kind = state === 'running' ? 'exit' : state;
      const end = () => finish({ kind, code, signal });
      if (child.stdout.readableEnded && child.stderr.readableEnded) return end();
      const t = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        end();
      }, 250);
      child.on('close', () => {
        clearTimeout(t);
        end();
      });
      if (state === 'running') killGroup(child.pid, 'SIGKILL'); // leftovers of a finished run
    });
  });
}

export function createCommandGateImpl(o: CommandGateOptions): HealthGate {
  const attempts = new Map<string, number>();
  const program = o.cfg.command[0]!;
  return {
    type: 'command',
    name: o.name,
    timeoutMs: o.cfg.timeout,
    intervalMs: o.cfg.interval,
    async check(ctx: GateContext): Promise<GateObservation> {
      const attempt = (attempts.get(ctx.rotationId) ?? 0) + 1;
      attempts.set(ctx.rotationId, attempt);
      const env: NodeJS.ProcessEnv = {};
      for (const n of BASE_ENV) if (o.env[n] !== undefined) env[n] = o.env[n];
      for (const n of o.cfg.passEnv) if (o.env[n] !== undefined) env[n] = o.env[n];
      Object.assign(env, {
        KEYROTOR_KEY: ctx.keyName,
        KEYROTOR_ROTATION_ID: ctx.rotationId,
        KEYROTOR_GATE: o.name,
        KEYROTOR_ATTEMPT: String(attempt),
        KEYROTOR_NEW_FINGERPRINT: ctx.newFingerprint,
        KEYROTOR_OLD_FINGERPRINT: ctx.oldFingerprint ?? '',
        KEYROTOR_NEW_KEY_ID: ctx.newKeyId,
        KEYROTOR_OLD_KEY_ID: ctx.oldKeyId ?? '',
        KEYROTOR_PROMOTED_AT: ctx.promotedAt ?? '',
      });
      const r = await runOnce(o.argv, { cwd: o.cwd, env, timeoutMs: o.cfg.runTimeout, signal: ctx.signal });
      const said = r.lastLine ? `: ${r.lastLine}` : '';
      switch (r.kind) {
        case 'spawn-error':
          return {
            pass: false,
            final: true,
            observation: `cannot run ${program}: ${r.errno === 'ENOENT' ? 'not found' : r.errno === 'EACCES' ? 'not executable' : r.errno}`,
          };
        case 'timeout':
          return { pass: false, observation: `${program} ran longer than ${o.cfg.runTimeout}ms and was killed${said}` };
        case 'aborted':
          return { pass: false, observation: `${program} was stopped (the wait ended)` };
        case 'exit':
          if (r.code === 0) return { pass: true, observation: `${program} exited 0${said}` };
          return {
            pass: false,
            observation: `${program} ${r.code === null ? `was killed by ${r.signal}` : `exited ${r.code}`}${said}`,
          };
      }
    },
  };
}
