/**
 * moto (the AWS emulator, `python3 -m moto.server`) on 127.0.0.1 for provider tests that use the real
 * AWS SDK over its real wire protocol.
 *
 *   const moto = await startMoto();      // free port, spawned, polled until it answers
 *   new SecretsManagerClient({ endpoint: moto.endpoint, region, credentials: { ... } });
 *   await moto.reset();                  // POST /moto-api/reset: wipes every backend
 *   await moto.close();                  // in afterAll
 *
 * The server stops by itself: close() kills it, a process 'exit' hook kills it, and the child also
 * watches its stdin pipe, so it exits on its own when this process dies in any way (even SIGKILL).
 *
 * Availability: `motoSupport()` says whether python3 + moto can run here. test/global-setup.ts asks
 * once per run (`checkMotoOnce`): in CI (`CI=true`) a missing moto fails the run; elsewhere it prints
 * one line with the install command, and every suite that needs moto is skipped
 * (`motoSupportOrSkip(suite)`, which also throws in CI when called without the global setup).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

export interface Moto {
  /** e.g. `http://127.0.0.1:41234` */
  readonly endpoint: string;
  readonly port: number;
  /** wipe all state (POST /moto-api/reset) */
  reset(): Promise<void>;
  /** stop the server and wait for it to exit; safe to call twice */
  close(): Promise<void>;
}

export interface StartMotoOptions {
  /** python interpreter (default `python3`) */
  python?: string;
  /** how long to wait for the first answer (default 20 s) */
  readyTimeoutMs?: number;
  /**
   * one request at a time (moto's server is threaded and its backends take no locks, so concurrent
   * conditional writes to one item can both pass; real DynamoDB serialises them). For tests of
   * concurrent conditional writes.
   */
  serial?: boolean;
}

const PYTHON = 'python3';

// Runs moto.server exactly like `python3 -m moto.server -H <host> -p <port>`, plus a watchdog thread
// that exits the process as soon as its stdin reaches EOF (our end of the pipe closes when we die).
const BOOT = [
  'import os, sys, threading',
  'def _watch():',
  '    try:',
  '        while sys.stdin.buffer.read(4096):',
  '            pass',
  '    finally:',
  '        os._exit(0)',
  'threading.Thread(target=_watch, daemon=True).start()',
  'import moto.server as _ms',
  'if os.environ.get("KEYROTOR_MOTO_SERIAL") == "1":',
  '    _run = _ms.run_simple',
  '    _ms.run_simple = lambda *a, **k: _run(*a, **dict(k, threaded=False))',
  '_ms.main(sys.argv[1:])',
].join('\n');

export interface MotoSupport {
  available: boolean;
  reason?: string;
}

/** set by checkMotoOnce for the test workers: `available`, or why moto cannot run */
const MOTO_ENV = 'KEYROTOR_TEST_MOTO';

let supportCache: MotoSupport | undefined;

/** Can `python3 -m moto.server` run on this machine? (cached; one short spawn) */
export function motoSupport(python = PYTHON): MotoSupport {
  if (supportCache) return supportCache;
  // the global setup already asked (and said so once): no second spawn per test file
  const known = process.env[MOTO_ENV];
  if (known !== undefined && python === PYTHON) {
    supportCache = known === 'available' ? { available: true } : { available: false, reason: known };
    return supportCache;
  }
  const r = spawnSync(python, ['-c', 'import moto, moto.server, werkzeug; print(moto.__version__)'], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  if (r.error) {
    supportCache = {
      available: false,
      reason: `${python} cannot be run (${(r.error as NodeJS.ErrnoException).code ?? r.error.message})`,
    };
  } else if (r.status !== 0) {
    const last = (r.stderr || '').trim().split('\n').pop() ?? '';
    supportCache = { available: false, reason: `moto is not importable by ${python}: ${last}` };
  } else {
    supportCache = { available: true };
  }
  return supportCache;
}

/**
 * For `describe.skipIf(!motoSupportOrSkip('...'))`: true when moto can run. When it cannot: throws in
 * CI (CI=true) so the gap is never silent there; otherwise warns loudly and returns false.
 */
export function motoSupportOrSkip(suite: string): boolean {
  const warnedOnce = process.env[MOTO_ENV] !== undefined;
  const s = motoSupport();
  if (s.available) return true;
  const msg = motoMissingLine(s.reason);
  if (process.env.CI === 'true') {
    throw new Error(`${suite}: ${msg} (CI=true, so this is a failure, not a skip)`);
  }
  if (!warnedOnce) console.warn(`SKIPPING ${suite}: ${msg}`);
  return false;
}

/** the one line a run without moto prints */
export function motoMissingLine(reason: string | undefined): string {
  return `moto (the AWS emulator) is not available (${reason ?? 'unknown'}). Install it with: pip install 'moto[server]'`;
}

/**
 * For the global setup: ask once whether moto can run and tell the test workers (an env var they
 * inherit). Missing moto in CI (`CI=true`) throws; elsewhere it returns the one line to print.
 */
export function checkMotoOnce(): string | undefined {
  const s = motoSupport();
  process.env[MOTO_ENV] = s.available ? 'available' : (s.reason ?? 'unavailable');
  if (s.available) return undefined;
  if (process.env.CI === 'true') throw new Error(`${motoMissingLine(s.reason)} (CI=true, so this fails the run)`);
  return motoMissingLine(s.reason);
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function answers(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await res.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function spawnOnce(python: string, readyTimeoutMs: number, serial = false): Promise<Moto> {
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = spawn(python, ['-c', BOOT, '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1', KEYROTOR_MOTO_SERIAL: serial ? '1' : '0' },
  });
  // keep only a short tail of moto's output, for the error message if it fails to start
  let tail = '';
  const keep = (b: Buffer) => {
    tail = (tail + b.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.stdin?.on('error', () => {}); // EPIPE when it already died
  const exitP = new Promise<void>((r) => child.once('exit', () => r()));
  const killOnExit = () => {
    if (!exited(child)) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let closed = false;
  const close = async () => {
    if (closed) return exitP;
    closed = true;
    process.removeListener('exit', killOnExit);
    if (!exited(child)) {
      child.stdin?.end();
      child.kill('SIGTERM');
      const t = setTimeout(() => {
        if (!exited(child)) child.kill('SIGKILL');
      }, 3_000);
      await exitP;
      clearTimeout(t);
    }
  };

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited(child)) {
      await close();
      throw new Error(
        `moto exited before answering on ${endpoint} (code ${child.exitCode}, signal ${child.signalCode}): ${tail.trim().split('\n').slice(-5).join(' | ')}`,
      );
    }
    if (await answers(`${endpoint}/moto-api/data.json`)) break;
    if (Date.now() > deadline) {
      await close();
      throw new Error(
        `moto did not answer on ${endpoint} within ${readyTimeoutMs} ms: ${tail.trim().split('\n').slice(-5).join(' | ')}`,
      );
    }
    await sleep(100);
  }

  return {
    endpoint,
    port,
    async reset() {
      const res = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`moto reset failed: HTTP ${res.status}`);
    },
    close,
  };
}

/** Start moto on a free loopback port; resolves once it answers HTTP. */
export async function startMoto(opts: StartMotoOptions = {}): Promise<Moto> {
  const python = opts.python ?? PYTHON;
  const s = motoSupport(python);
  if (!s.available) throw new Error(`cannot start moto: ${s.reason}`);
  let lastErr: unknown;
  // a port picked free can be taken before moto binds it: try a few times
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await spawnOnce(python, opts.readyTimeoutMs ?? 20_000, opts.serial === true);
    } catch (e) {
      lastErr = e;
    }
  }
  throw lastErr;
}
