/**
 * The npm package as a user gets it: `npm pack` (whose prepack compiles dist/pkg/), the tarball
 * installed into an empty project, then the installed `keyrotor` bin, the library (`keyrotor`,
 * `keyrotor/consumer`) from an ESM script, a strict NodeNext TypeScript consumer type-checked against
 * the shipped declarations, and the bin on an old Node (the host's Node 20, when there is one).
 *
 * The install is offline: the temp project gets a lockfile made from this repository's (the same
 * versions, production dependencies only) and `npm ci --offline` takes every package from npm's
 * cache, which `npm ci` of this repository filled. Only when the cache lacks one does it fall back to
 * `npm install --prefer-offline` (network).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { ROOT, serveOutput } from './cli-helpers.ts';
import { workerHeapFlags } from '../../src/entrypoints/heap.ts';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  license: string;
  engines: { node: string };
  bin: Record<string, string>;
  dependencies: Record<string, string>;
};
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const NODE_BIN = path.dirname(process.execPath);

let tmp: string;
let proj: string;
let tarball: string;
let packed: { entryCount: number; size: number; unpackedSize: number; files: { path: string }[] };
const env = (): NodeJS.ProcessEnv => ({
  PATH: `${NODE_BIN}${path.delimiter}${process.env.PATH ?? ''}`,
  HOME: process.env.HOME,
  npm_config_cache: process.env.npm_config_cache,
  npm_config_update_notifier: 'false',
  npm_config_fund: 'false',
  npm_config_audit: 'false',
  KEYROTOR_LOG_LEVEL: 'warn',
  NO_COLOR: '1',
});

function run(name: string, cmd: string, args: string[], cwd: string, extraEnv: NodeJS.ProcessEnv = {}) {
  const r: SpawnSyncReturns<string> = spawnSync(cmd, args, {
    cwd,
    env: { ...env(), ...extraEnv },
    encoding: 'utf8',
    timeout: 120_000,
  });
  capture(`package-${name}.stdout`, r.stdout ?? '');
  capture(`package-${name}.stderr`, r.stderr ?? '');
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

/** a lockfile for { dependencies: { keyrotor: file:<tarball> } } with the repository's production dependencies */
function lockFor(tgz: string, rel: string): unknown {
  const repo = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`;
  const packages: Record<string, unknown> = {
    '': { name: 'keyrotor-package-test', dependencies: { keyrotor: `file:${rel}` } },
    'node_modules/keyrotor': {
      version: pkg.version,
      resolved: `file:${rel}`,
      integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [k, v] of Object.entries(repo.packages)) if (k && !v.dev) packages[k] = v;
  return { name: 'keyrotor-package-test', lockfileVersion: 3, requires: true, packages };
}

/** an older Node than the project's (the host's /usr/bin/node), if the machine has one */
function oldNode(): { path: string; version: string } | undefined {
  const which = spawnSync('which', ['-a', 'node'], { encoding: 'utf8' });
  for (const p of new Set((which.stdout ?? '').split('\n').filter(Boolean))) {
    if (p.startsWith(path.join(ROOT, 'node_modules'))) continue;
    const v = spawnSync(p, ['--version'], { encoding: 'utf8' }).stdout?.trim();
    if (v && Number(/^v(\d+)/.exec(v)?.[1]) < 22) return { path: p, version: v.slice(1) };
  }
  return undefined;
}

beforeAll(() => {
  // outside the artifacts dir: node_modules of the install is large, and none of it is our output
  tmp = mkdtempSync(path.join(tmpdir(), 'keyrotor-pkg-'));
  const p = run('pack', 'npm', ['pack', '--json', '--pack-destination', tmp], ROOT);
  expect(p.code, p.stderr).toBe(0);
  packed = (JSON.parse(p.stdout) as (typeof packed)[])[0]!;
  tarball = path.join(tmp, `${pkg.name}-${pkg.version}.tgz`);

  proj = path.join(tmp, 'project');
  mkdirSync(proj);
  writeFileSync(
    path.join(proj, 'package.json'),
    JSON.stringify({
      name: 'keyrotor-package-test',
      private: true,
      type: 'module',
      dependencies: { keyrotor: `file:../${path.basename(tarball)}` },
    }),
  );
  writeFileSync(
    path.join(proj, 'package-lock.json'),
    JSON.stringify(lockFor(tarball, `../${path.basename(tarball)}`), null, 1),
  );
  let i = run('install', 'npm', ['ci', '--offline', '--no-audit', '--no-fund'], proj);
  if (i.code !== 0 && /ENOTCACHED/.test(i.stderr)) {
    console.warn('package test: npm cache incomplete, installing with --prefer-offline (network)');
    rmSync(path.join(proj, 'package-lock.json'));
    i = run('install-online', 'npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], proj);
  }
  expect(i.code, i.stderr).toBe(0);
  copyFileSync(path.join(ROOT, 'rotation.config.yaml'), path.join(proj, 'rotation.config.yaml'));
}, 180_000);

afterAll(() => {
  if (tmp && !process.env.KEYROTOR_KEEP_ARTIFACTS) rmSync(tmp, { recursive: true, force: true });
});

describe('npm package', () => {
  it('the tarball holds the compiled code, declarations, bin and docs; no sources, tests, bench or CI', () => {
    const files = packed.files.map((f) => f.path);
    capture('package-files.txt', files.join('\n'));
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'CHANGELOG.md',
      'bin/keyrotor.js',
      'dist/pkg/src/entrypoints/index.js',
      'dist/pkg/src/entrypoints/index.d.ts',
      'dist/pkg/src/entrypoints/consumer.js',
      'dist/pkg/src/entrypoints/consumer.d.ts',
      'dist/pkg/src/entrypoints/cli.js',
      'dist/pkg/providers/index.js',
    ])
      expect(files).toContain(f);
    const stray = files.filter(
      (f) =>
        /^(test|bench|deploy|\.ci|src|providers|workflows|node_modules)\//.test(f) ||
        (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
        f.endsWith('.map') ||
        /(^|\/)\.keyrotor\//.test(f),
    );
    expect(stray).toEqual([]);
    expect(readFileSync(path.join(ROOT, 'bin/keyrotor.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  });

  it('npx keyrotor --help / --version / validate / rotate --now / status from the installed bin', () => {
    const help = run('help', 'npx', ['--no-install', 'keyrotor', '--help'], proj);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: keyrotor /);
    expect(help.stdout).toMatch(/Exit codes:/);

    const version = run('version', 'npx', ['--no-install', 'keyrotor', '--version'], proj);
    expect(version.stdout.trim()).toBe(pkg.version);

    const valid = run('validate', 'npx', ['--no-install', 'keyrotor', 'validate'], proj);
    expect(valid.code, valid.stderr).toBe(0);
    expect(valid.stdout).toMatch(/rotation\.config\.yaml: valid \(1 key: /);

    const rot = run('rotate', 'npx', ['--no-install', 'keyrotor', 'rotate', '--now', '--full', '--json'], proj);
    expect(rot.code, rot.stderr).toBe(0);
    const results = (JSON.parse(rot.stdout) as { results: { outcome: string; bootstrap?: boolean }[] }).results;
    expect(results.map((r) => r.outcome)).toEqual(['rotated', 'rotated']);
    expect(results[1]!.bootstrap).not.toBe(true); // the second is a full rotation: the first key revoked

    const st = run('status', 'npx', ['--no-install', 'keyrotor', 'status', '--json'], proj);
    expect(st.code, st.stderr).toBe(0);
    expect((JSON.parse(st.stdout) as { keys: { currentKeyId: string | null }[] }).keys[0]!.currentKeyId).toMatch(/\S/);
    for (const r of [help, valid, rot, st]) expect(r.stdout + r.stderr).not.toContain(CANARY);
  });

  it.runIf(existsSync('/proc/self/cmdline') && typeof (process as { execve?: unknown }).execve === 'function')(
    'the installed bin starts `serve` with the worker heap flags (same process, same arguments)',
    async () => {
      const bin = path.join(proj, 'node_modules', '.bin', 'keyrotor');
      const child = spawn(bin, ['serve', '--port', '0', '--host', '127.0.0.1'], {
        cwd: proj,
        env: { ...env(), KEYROTOR_LOG_LEVEL: 'info', KEYROTOR_SERVE_TOKEN: 'package-test-token-0123456789abcdef' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const out = serveOutput(child, 30_000);
      try {
        const url = await out.url;
        const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
        expect(argv.slice(1)).toEqual([...workerHeapFlags(), bin, 'serve', '--port', '0', '--host', '127.0.0.1']);
        expect((await fetch(`${url}/healthz`)).status).toBe(200);
        const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        capture('package-serve.stderr', out.stderr());
      }
    },
    60_000,
  );

  it('a bad config through the installed bin: one line, exit 2', () => {
    writeFileSync(path.join(proj, 'bad.yaml'), 'version: 1\nkeys: []\nstateDir: x\n');
    const r = run('bad-config', 'npx', ['--no-install', 'keyrotor', '-c', 'bad.yaml', 'validate'], proj);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^keyrotor: CONFIG_INVALID: bad\.yaml:2:/)]);
  });

  it('the library from an ESM script: loadConfig, rotate, status, keyrotor/consumer; no cloud SDK loaded', () => {
    writeFileSync(
      path.join(proj, 'use.mjs'),
      `import { registerHooks } from 'node:module';
const sdks = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    const m = /node_modules\\/(@aws-sdk|@azure|@google-cloud|google-gax|@grpc)\\//.exec(r.url);
    if (m) sdks.add(m[1]);
    return r;
  },
});
const kr = await import('keyrotor');
const consumer = await import('keyrotor/consumer');
const config = await kr.loadConfig('rotation.config.yaml');
const results = await kr.rotate(config, { now: true });
const status = await kr.status(config);
let unknown = null;
try { kr.selectKeys(config, ['nope']); } catch (e) { unknown = { code: e.code, isKr: kr.isKeyrotorError(e) }; }
console.log(JSON.stringify({
  version: kr.KEYROTOR_VERSION,
  outcomes: results.map((r) => r.outcome),
  exit: kr.exitCodeOf(results),
  current: status[0].currentKeyId,
  newKey: results[0].newKeyId,
  unknown,
  consumer: [typeof consumer.createConsumer, typeof consumer.fingerprint, typeof consumer.Secret],
  sdks: [...sdks],
}));
`,
    );
    const r = run('library', process.execPath, ['use.mjs'], proj);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      version: pkg.version,
      outcomes: ['rotated'],
      exit: 0,
      unknown: { code: 'UNKNOWN_KEY', isKr: true },
      consumer: ['function', 'function', 'function'],
      sdks: [],
    });
    expect(out.current).toBe(out.newKey);
  });

  it('a strict NodeNext TypeScript project type-checks against the shipped declarations', () => {
    writeFileSync(
      path.join(proj, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2023',
          lib: ['ES2023'],
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          // the declarations tsc emitted from sources it type-checked; what this proves is that they
          // resolve through the exports map under NodeNext and carry real types (the @ts-expect-error
          // lines below fail if anything is \`any\`). Checking every dependency's .d.ts too costs ~15 s.
          skipLibCheck: true,
          types: ['node'], // a Node project has @types/node (here it comes with the dependencies)
        },
        files: ['job.ts'],
      }),
    );
    writeFileSync(
      path.join(proj, 'job.ts'),
      `import { exitCodeOf, KeyrotorError, loadConfig, rotate, status, type KeyResult, type KeyStatus, type LoadedConfig } from 'keyrotor';
import { createConsumer, fingerprint, type ConsumerOptions } from 'keyrotor/consumer';

export async function job(file: string): Promise<number> {
  const config: LoadedConfig = await loadConfig(file);
  const results: KeyResult[] = await rotate(config, { keys: config.keys.map((k) => k.name), dryRun: true });
  const st: KeyStatus[] = await status(config, { now: 0 });
  const due: boolean = st.every((s) => s.due);
  const outcome: 'rotated' | 'rolled_back' | 'skipped' | 'locked' | 'needs_attention' | 'in_progress' | 'waiting' =
    results[0]!.outcome;
  // the declarations are real types, not any: each of these must be an error
  // @ts-expect-error now is a boolean
  await rotate(config, { now: 'yes' });
  // @ts-expect-error status takes a config, not a file name
  await status(file);
  // @ts-expect-error no such field
  console.log(st[0]!.noSuchField, due, outcome);
  const err = new KeyrotorError('USAGE', 'x');
  const n: number = err.exitCode;
  const opts: Partial<ConsumerOptions> = {};
  void [createConsumer, fingerprint, opts];
  return Math.max(n, exitCodeOf(results));
}
`,
    );
    const r = run('tsc', process.execPath, [TSC, '-p', 'tsconfig.json'], proj);
    expect(r.stdout + r.stderr, 'tsc errors').toBe('');
    expect(r.code).toBe(0);
  });

  const old = oldNode();
  it.skipIf(!old)(
    `the bin on an older Node (${old?.version ?? 'none here'}): one line naming the Node it needs`,
    () => {
      const min = /^>=\s*([\d.]+)$/.exec(pkg.engines.node)?.[1];
      expect(min, `engines.node "${pkg.engines.node}" is ">=X.Y"`).toBeDefined();
      const r = run('old-node', old!.path, [path.join(proj, 'node_modules', '.bin', 'keyrotor'), '--help'], proj);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`keyrotor: needs Node >= ${min} (this is Node ${old!.version})\n`);
    },
  );
});
