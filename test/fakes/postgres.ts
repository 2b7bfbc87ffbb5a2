/**
 * A real PostgreSQL server (the system's `postgresql-15` binaries) on 127.0.0.1 for the state-backend
 * tests: a fresh cluster in a temp dir, a free loopback port, the unix socket in the temp dir.
 *
 *   const pg = await startPostgres();   // initdb + postgres, polled until it accepts connections
 *   pg.url                              // postgres://postgres@127.0.0.1:PORT/postgres (trust auth)
 *   await pg.createDatabase('t1');      // a fresh database per test, for isolation
 *   await pg.close();                   // in afterAll: stops the server, removes the temp dir
 *
 * initdb refuses to run as root, so as root (CI containers) the cluster is created and served as the
 * unprivileged user `nobody` (runuser). The server stops by itself: close() kills it, a process
 * 'exit' hook kills it, and a shell wrapper watches its stdin pipe, so it also ends when this process
 * dies in any way (even SIGKILL).
 *
 * Availability: `postgresSupportOrSkip(suite)`: in CI (`CI=true`) missing binaries throw (fail
 * loudly); elsewhere one loud line naming `apt-get install postgresql-15`, and the suite is skipped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './moto.ts';

export interface Postgres {
  /** superuser URL of the `postgres` database */
  readonly url: string;
  readonly port: number;
  /** create a database and return its URL */
  createDatabase(name: string): Promise<string>;
  close(): Promise<void>;
}

const RUN_AS = 'nobody';

function binDir(): string | undefined {
  const env = process.env.KEYROTOR_PG_BIN;
  if (env && existsSync(path.join(env, 'postgres'))) return env;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')) && existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
}

export function postgresSupport(): { available: boolean; reason?: string } {
  if (!binDir()) return { available: false, reason: 'no PostgreSQL server binaries under /usr/lib/postgresql/*/bin' };
  if (process.getuid?.() === 0 && spawnSync('id', ['-u', RUN_AS]).status !== 0)
    return { available: false, reason: `running as root and there is no unprivileged user "${RUN_AS}" for initdb` };
  return { available: true };
}

/** For `describe.skipIf(!postgresSupportOrSkip('...'))`. */
export function postgresSupportOrSkip(suite: string): boolean {
  const s = postgresSupport();
  if (s.available) return true;
  const msg = `PostgreSQL unavailable: ${s.reason}. Install it with \`apt-get install postgresql-15\`.`;
  if (process.env.CI === 'true') throw new Error(`${suite}: ${msg} (CI=true, so this is a failure, not a skip)`);
  console.warn(`\n!!!!!!!!!! SKIPPING ${suite}: ${msg} !!!!!!!!!!\n`);
  return false;
}

function asUser(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', RUN_AS, '--', cmd, ...args]] : [cmd, args];
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export async function startPostgres(): Promise<Postgres> {
  const bin = binDir();
  if (!bin) throw new Error('cannot start PostgreSQL: no server binaries (apt-get install postgresql-15)');
  const dir = mkdtempSync(path.join(tmpdir(), 'keyrotor-pg-'));
  const data = path.join(dir, 'data');
  if (process.getuid?.() === 0) {
    const uid = Number(spawnSync('id', ['-u', RUN_AS], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', RUN_AS], { encoding: 'utf8' }).stdout.trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const [icmd, iargs] = asUser(path.join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    'postgres',
    '--auth=trust',
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  const init = spawnSync(icmd, iargs, { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      `initdb failed (${init.status}): ${(init.stderr || init.stdout).trim().split('\n').slice(-3).join(' | ')}`,
    );
  }
  const port = await freePort();
  const pgArgs = [
    '-D',
    data,
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-k',
    dir,
    '-c',
    'fsync=off',
    '-c',
    'synchronous_commit=off',
    '-c',
    'full_page_writes=off',
    '-c',
    'max_connections=50',
  ];
  // the wrapper ends postgres (fast shutdown) as soon as our end of its stdin closes
  const script = `"$@" & pid=$!; cat >/dev/null; kill -INT $pid 2>/dev/null; wait $pid`;
  const [cmd, args] = asUser('sh', ['-c', script, 'pg', path.join(bin, 'postgres'), ...pgArgs]);
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: dir });
  let tail = '';
  const keep = (b: Buffer) => {
    tail = (tail + b.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.stdin?.on('error', () => {});
  const exitP = new Promise<void>((r) => child.once('exit', () => r()));
  const killOnExit = () => {
    if (!exited(child)) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      process.removeListener('exit', killOnExit);
      if (!exited(child)) {
        child.stdin?.end();
        const t = setTimeout(() => {
          if (!exited(child)) child.kill('SIGKILL');
        }, 5_000);
        await exitP;
        clearTimeout(t);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const pg = (await import('pg')).default;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited(child)) {
      await close();
      throw new Error(`postgres exited before accepting connections: ${tail.trim().split('\n').slice(-5).join(' | ')}`);
    }
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
    try {
      await c.connect();
      await c.end();
      break;
    } catch {
      await c.end().catch(() => undefined);
    }
    if (Date.now() > deadline) {
      await close();
      throw new Error(
        `postgres did not accept connections on port ${port}: ${tail.trim().split('\n').slice(-5).join(' | ')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    port,
    async createDatabase(name) {
      if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`bad database name ${name}`);
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    close,
  };
}
