/**
 * The bundles from deploy/build.ts start and load only the SDKs a config uses. A probe process
 * records every module file Node loads (module.registerHooks) while it imports dist/lambda.js and
 * invokes the handler: first with a local issuer + file store config, then with an AWS Secrets
 * Manager store on moto. The esbuild metafile says which npm packages each loaded chunk holds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildBundles, packagesIn, type BuildReport } from '../../deploy/build.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

const PKG = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const MOTO = motoSupportOrSkip('bundle probe (AWS on moto)');
const SDKS = [
  '@aws-sdk/client-secrets-manager',
  '@azure/keyvault-secrets',
  '@azure/identity',
  '@google-cloud/secret-manager',
  'google-gax',
  '@grpc/grpc-js',
  'openai',
];

const PROBE = `
import { registerHooks } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import path from 'node:path';
const [dir, localCfg, awsCfg] = process.argv.slice(2);
const loaded = new Set();
registerHooks({ load(url, context, next) { loaded.add(url); return next(url, context); } });
const snap = () => [...loaded].filter((u) => u.startsWith('file:')).map((u) => path.relative(dir, fileURLToPath(u)).split(path.sep).join('/'));
const ctx = { getRemainingTimeInMillis: () => 60_000, awsRequestId: 'probe' };
const mod = await import(pathToFileURL(path.join(dir, 'lambda.js')).href);
const out = { exports: Object.keys(mod).sort(), afterImport: snap() };
const scheduled = { version: '0', id: 'x', 'detail-type': 'Scheduled Event', source: 'aws.events', account: '1', time: new Date().toISOString(), region: 'us-east-1', resources: [], detail: {} };
out.local = await mod.createHandler({ env: { ...process.env, KEYROTOR_CONFIG: localCfg } })(scheduled, ctx);
out.afterLocal = snap();
if (awsCfg) {
  out.aws = await mod.createHandler({ env: { ...process.env, KEYROTOR_CONFIG: awsCfg } })({ key: 'aws-app', now: true }, ctx);
  out.afterAws = snap();
}
process.stdout.write(JSON.stringify(out));
`;

function run(
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; name: string },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: opts.cwd,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      capture(`bundle-${opts.name}.stdout`, stdout);
      capture(`bundle-${opts.name}.stderr`, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('bundles (npm run build)', () => {
  let report: BuildReport;
  let dir: string;
  let work: string;
  let moto: Moto | undefined;

  beforeAll(async () => {
    dir = path.join(tempDir('bundle'), 'dist');
    report = await buildBundles({ outdir: dir, print: false });
    capture(
      'bundle-report.json',
      JSON.stringify({ entries: report.entries, zip: { bytes: report.zip.bytes, files: report.zip.files } }, null, 2),
    );
    work = tempDir('bundle-work');
    writeFileSync(
      path.join(work, 'local.yaml'),
      'version: 1\nkeys:\n  - name: local-app\n    issuer: { type: local }\n    stores: [ { type: file } ]\n',
    );
    if (MOTO) {
      moto = await startMoto();
      const aws = new SecretsManagerClient({
        endpoint: moto.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      });
      await aws.send(new CreateSecretCommand({ Name: 'bundle/app' }));
      aws.destroy();
      writeFileSync(
        path.join(work, 'aws.yaml'),
        `version: 1\nstateDir: .keyrotor-aws\nkeys:\n  - name: aws-app\n    issuer: { type: local }\n    stores: [ { type: aws-secrets-manager, secretId: bundle/app, region: us-east-1, endpoint: "${moto.endpoint}" } ]\n`,
      );
    }
  }, 120_000);

  afterAll(async () => {
    await moto?.close();
  });

  /** npm packages held by the chunks a process loaded */
  const packages = (files: string[]) =>
    [...new Set(files.flatMap((f) => packagesIn(report.metafile, path.join(dir, f))))].sort();
  const sdksIn = (files: string[]) =>
    packages(files).filter(
      (p) => SDKS.includes(p) || p.startsWith('@aws-sdk/') || p.startsWith('@azure/') || p.startsWith('@smithy/'),
    );

  it('writes one file per entry point, shared chunks, the Lambda zip and a size report', () => {
    for (const f of ['lambda.js', 'keyrotor.js', 'package.json', 'keyrotor-lambda.zip', 'build-report.json'])
      expect(existsSync(path.join(dir, f)), f).toBe(true);
    const lambda = report.entries.find((e) => e.name === 'lambda')!;
    expect(lambda.bytes).toBeGreaterThan(0);
    expect(lambda.startupBytes).toBeLessThan(lambda.allBytes); // providers are not loaded at start
    expect(report.zip.files).toContain('lambda.js');
    expect(report.zip.files).toContain('package.json');
    expect(report.zip.files.some((f) => f.startsWith('chunks/'))).toBe(true);
  });

  it('the zip is a valid archive (checked by an independent reader)', () => {
    const py = spawnSync(
      'python3',
      [
        '-c',
        'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); bad = z.testzip(); print(bad or "ok"); print(len(z.namelist()))',
        report.zip.file,
      ],
      { encoding: 'utf8' },
    );
    if (py.error) return; // no python3 here: nothing independent to check with
    expect(py.stdout.trim().split('\n')).toEqual(['ok', String(report.zip.files.length)]);
  });

  it('`node dist/lambda.js` imports cleanly and prints nothing', async () => {
    const r = await run([path.join(dir, 'lambda.js')], { cwd: work, name: 'lambda-import' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
  });

  it('the Lambda bundle loads no provider SDK at import, none for a local config, only the AWS SDK for an AWS store', async () => {
    writeFileSync(path.join(work, 'probe.mjs'), PROBE);
    const args = [
      path.join(work, 'probe.mjs'),
      dir,
      path.join(work, 'local.yaml'),
      ...(MOTO ? [path.join(work, 'aws.yaml')] : []),
    ];
    const r = await run(args, {
      cwd: work,
      name: 'probe',
      env: {
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        AWS_EC2_METADATA_DISABLED: 'true',
        KEYROTOR_LOG_LEVEL: 'warn',
      },
    });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      exports: string[];
      afterImport: string[];
      afterLocal: string[];
      afterAws?: string[];
      local: { results: Array<{ outcome: string }> };
      aws?: { results: Array<{ outcome: string }> };
    };
    expect(out.exports).toEqual(expect.arrayContaining(['handler', 'createHandler']));
    expect(out.afterImport.length).toBeGreaterThan(1);
    expect(sdksIn(out.afterImport)).toEqual([]);
    expect(out.local.results[0]).toMatchObject({ outcome: 'rotated' });
    expect(sdksIn(out.afterLocal)).toEqual([]);
    if (MOTO) {
      expect(out.aws!.results[0]).toMatchObject({ outcome: 'rotated' });
      const loaded = sdksIn(out.afterAws!);
      expect(loaded).toContain('@aws-sdk/client-secrets-manager');
      expect(
        loaded.filter(
          (p) =>
            p.startsWith('@azure/') || p === '@google-cloud/secret-manager' || p === 'google-gax' || p === 'openai',
        ),
      ).toEqual([]);
    }
  });

  it('the CLI bundle runs: --help lists serve and daemon; a local rotation works', async () => {
    const help = await run([path.join(dir, 'keyrotor.js'), '--help'], { cwd: work, name: 'cli-help' });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/serve/);
    expect(help.stdout).toMatch(/daemon/);
    const rot = await run([path.join(dir, 'keyrotor.js'), '-c', 'local.yaml', 'rotate', '--now', '--json'], {
      cwd: work,
      name: 'cli-rotate',
    });
    expect(rot.code, rot.stderr).toBe(0);
    expect(JSON.parse(rot.stdout).results[0]).toMatchObject({ key: 'local-app', outcome: 'rotated' });
    const version = await run([path.join(dir, 'keyrotor.js'), '--version'], { cwd: work, name: 'cli-version' });
    expect(version.stdout.trim()).toBe(PKG.version); // from dist/package.json, which carries package.json's
  });

  // `import.meta.main` does not exist before Node 22.18 / 24.2: the bundle must still start (and say
  // which Node it needs) instead of printing nothing and exiting 0
  const old = olderNode();
  it.skipIf(!old)(`the CLI bundle on an older Node (${old?.version ?? 'none here'}): one line, exit 2`, () => {
    const r = spawnSync(old!.path, [path.join(dir, 'keyrotor.js'), 'rotate', '--now'], { cwd: work, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^keyrotor: needs Node >= \d+\.\d+ \(this is Node \d+\.\d+\.\d+\)\n$/);
  });
});

/** a Node older than 22 on this machine (the host's /usr/bin/node), if any */
function olderNode(): { path: string; version: string } | undefined {
  const which = spawnSync('which', ['-a', 'node'], { encoding: 'utf8' });
  for (const p of new Set((which.stdout ?? '').split('\n').filter(Boolean))) {
    const v = spawnSync(p, ['--version'], { encoding: 'utf8' }).stdout?.trim();
    if (v && Number(/^v(\d+)/.exec(v)?.[1]) < 22) return { path: p, version: v.slice(1) };
  }
  return undefined;
}
