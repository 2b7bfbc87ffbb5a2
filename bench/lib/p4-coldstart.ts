/**
 * P4, cold start: wall time from spawning a process until it is done, median of >= 10 runs each,
 * against `node -e 0` on the same machine in the same loop (round robin, so load changes hit every
 * command alike).
 *
 * - `keyrotor --help` through the installed bin: `node bin/keyrotor.js --help`, the package's bin
 *   loading the compiled CLI in dist/pkg/ (what `npx keyrotor --help` runs after npm's own start-up in
 *   a project that installed the package; the same files, the dependencies from node_modules).
 *   dist/pkg/ is built first when it is missing (`npm run build:pkg`). The bin turns on Node's
 *   compile cache (as tsc and npm do), so this is a run after the first; the row "no compile cache"
 *   (NODE_DISABLE_COMPILE_CACHE=1) is a first run's cost. Also from source
 *   (`node src/entrypoints/cli.ts --help`, type stripping) and the esbuild bundle when `npm run build`
 *   produced one.
 * - Lambda: time to first handler call = process start until the module is evaluated and `handler`
 *   can be called (what the Lambda runtime waits for before it invokes), measured by importing the
 *   bundle (`dist/lambda.*`) in `node -e`. Without a bundle, the in-repo `src/entrypoints/lambda.ts`.
 * - What would close a miss, measured rather than guessed: the same commands with Node's on-disk
 *   compile cache (NODE_COMPILE_CACHE), and, when there is no bundle yet, an esbuild bundle of the
 *   CLI built here in a temp dir.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { median, progress, ratio, round } from './util.ts';

export interface ColdCommand {
  id: string;
  label: string;
  /** one of the measured targets (>= `runs` runs); the others show what would close a miss (fewer runs) */
  main?: boolean;
  args: string[];
  env?: Record<string, string>;
  /** a warm-up run that fills a cache (compile cache) before timing */
  prime?: boolean;
}

export interface ColdResult {
  id: string;
  label: string;
  main: boolean;
  command: string;
  runs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  ratioToNode: number;
  failures: number;
}

const PROBE =
  "import(process.argv[1]).then((m)=>{const h=m.handler??m.default?.handler;if(typeof h!=='function'){process.stderr.write('no handler export\\n');process.exit(3)}},(e)=>{process.stderr.write(String(e&&e.message||e)+'\\n');process.exit(4)})";

export function findLambdaBundle(root: string): string | undefined {
  const candidates = [
    'dist/lambda.mjs',
    'dist/lambda.js',
    'dist/lambda.cjs',
    'dist/lambda/index.mjs',
    'dist/lambda/index.js',
    'dist/lambda/lambda.mjs',
    'dist/lambda/lambda.js',
  ];
  return candidates.map((c) => path.join(root, c)).find((p) => existsSync(p));
}

export function findCliBundle(root: string): string | undefined {
  const candidates = [
    'dist/cli.mjs',
    'dist/cli.js',
    'dist/keyrotor.mjs',
    'dist/keyrotor.js',
    'dist/cli/index.mjs',
    'dist/cli/index.js',
  ];
  return candidates.map((c) => path.join(root, c)).find((p) => existsSync(p));
}

/** esbuild the CLI into one file in `outDir` (evidence for "bundling closes it"); undefined if it fails. */
async function bundleCli(root: string, outDir: string): Promise<string | undefined> {
  try {
    const esbuild = await import('esbuild');
    const outfile = path.join(outDir, 'keyrotor-cli.bench.mjs');
    await esbuild.build({
      entryPoints: [path.join(root, 'src/entrypoints/cli.ts')],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      logLevel: 'silent',
      // CommonJS dependencies inside an ESM bundle need a require
      banner: {
        js: "import { createRequire as __bench_cr } from 'node:module'; const require = __bench_cr(import.meta.url);",
      },
    });
    return outfile;
  } catch (e) {
    progress(
      `P4: could not bundle the CLI for comparison (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`,
    );
    return undefined;
  }
}

export interface P4Options {
  root: string;
  tmp: string;
  runs: number;
}

export async function runP4(o: P4Options) {
  const node = process.execPath;
  const cache = path.join(o.tmp, 'compile-cache');
  mkdirSync(cache, { recursive: true });
  const lambdaBundle = findLambdaBundle(o.root);
  const lambdaSource = path.join(o.root, 'src/entrypoints/lambda.ts');
  const lambda = lambdaBundle ?? (existsSync(lambdaSource) ? lambdaSource : undefined);
  const cliBundle = findCliBundle(o.root);
  const benchBundle = cliBundle ? undefined : await bundleCli(o.root, o.tmp);
  const cli = path.join(o.root, 'src/entrypoints/cli.ts');
  const bin = path.join(o.root, 'bin/keyrotor.js');
  if (!existsSync(path.join(o.root, 'dist/pkg/src/entrypoints/cli.js'))) {
    progress('P4: building the package (dist/pkg) for the installed-bin measurement');
    const { buildPackage } = await import('../../deploy/build-pkg.ts');
    buildPackage();
  }

  const commands: ColdCommand[] = [
    { id: 'node', label: 'node -e 0', args: ['-e', '0'], main: true },
    {
      id: 'helpBin',
      label: 'keyrotor --help, installed bin (bin/keyrotor.js -> dist/pkg)',
      args: [bin, '--help'],
      main: true,
      // where the bin's compile cache goes (default: the OS temp dir); filled by the warm-up run
      env: { NODE_COMPILE_CACHE: path.join(o.tmp, 'bin-compile-cache') },
      prime: true,
    },
    { id: 'help', label: 'keyrotor --help (node src/entrypoints/cli.ts)', args: [cli, '--help'], main: true },
  ];
  if (lambda) {
    commands.push({
      id: 'lambda',
      main: true,
      label: lambdaBundle
        ? `Lambda bundle ${path.relative(o.root, lambdaBundle)}: import until handler callable`
        : 'Lambda handler src/entrypoints/lambda.ts (no bundle yet): import until handler callable',
      args: ['-e', PROBE, lambda],
    });
  }
  if (cliBundle)
    commands.push({
      id: 'helpBundle',
      label: `keyrotor --help, bundle ${path.relative(o.root, cliBundle)}`,
      args: [cliBundle, '--help'],
    });
  if (cliBundle)
    commands.push({
      id: 'helpBundleCache',
      label: `keyrotor --help, bundle + NODE_COMPILE_CACHE`,
      args: [cliBundle, '--help'],
      env: { NODE_COMPILE_CACHE: cache },
      prime: true,
    });
  // what would close a miss
  if (!cliBundle)
    commands.push({
      id: 'helpCache',
      label: 'keyrotor --help with NODE_COMPILE_CACHE',
      args: [cli, '--help'],
      env: { NODE_COMPILE_CACHE: cache },
      prime: true,
    });
  commands.push({
    id: 'helpBinNoCache',
    label: 'keyrotor --help, installed bin, no compile cache (a first run)',
    args: [bin, '--help'],
    env: { NODE_DISABLE_COMPILE_CACHE: '1' },
  });
  if (lambda)
    commands.push({
      id: 'lambdaCache',
      label: 'Lambda import with NODE_COMPILE_CACHE',
      args: ['-e', PROBE, lambda],
      env: { NODE_COMPILE_CACHE: cache },
      prime: true,
    });
  if (benchBundle) {
    commands.push({
      id: 'helpBenchBundle',
      label: 'keyrotor --help, esbuild bundle built by the bench',
      args: [benchBundle, '--help'],
    });
    commands.push({
      id: 'helpBenchBundleCache',
      label: 'keyrotor --help, bench bundle + NODE_COMPILE_CACHE',
      args: [benchBundle, '--help'],
      env: { NODE_COMPILE_CACHE: cache },
      prime: true,
    });
  }

  const baseEnv = { ...process.env };
  delete baseEnv.NODE_COMPILE_CACHE;
  delete baseEnv.NODE_OPTIONS;
  const once = (c: ColdCommand): { ms: number; ok: boolean } => {
    const t0 = performance.now();
    const r = spawnSync(node, c.args, {
      cwd: o.root,
      env: { ...baseEnv, ...(c.env ?? {}) },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 30_000,
    });
    const ms = performance.now() - t0;
    if (r.status !== 0)
      progress(`P4: ${c.label} exited ${r.status}: ${r.stderr?.toString('utf8').trim().split('\n')[0] ?? ''}`);
    return { ms, ok: r.status === 0 };
  };

  // warm the OS file cache once for every command (and fill compile caches)
  for (const c of commands) once(c);
  for (const c of commands) if (c.prime) once(c);
  const times = new Map<string, number[]>(commands.map((c) => [c.id, []]));
  const failures = new Map<string, number>(commands.map((c) => [c.id, 0]));
  const extraRuns = Math.min(o.runs, 4);
  for (let i = 0; i < o.runs; i++) {
    // rotate the order each round; the comparison rows get fewer runs
    const round = commands.filter((c) => c.main || i < extraRuns);
    for (let j = 0; j < round.length; j++) {
      const c = round[(i + j) % round.length]!;
      const r = once(c);
      times.get(c.id)!.push(r.ms);
      if (!r.ok) failures.set(c.id, failures.get(c.id)! + 1);
    }
  }
  const nodeMedian = median(times.get('node')!);
  const results: ColdResult[] = commands.map((c) => {
    const t = times.get(c.id)!;
    return {
      id: c.id,
      label: c.label,
      main: c.main === true,
      command: `${
        c.env
          ? Object.keys(c.env)
              .map((k) => `${k}=<tmp> `)
              .join('')
          : ''
      }node ${c.args.map((a) => (a === PROBE ? '<import probe>' : a.startsWith(o.root) ? path.relative(o.root, a) : a.startsWith(o.tmp) ? `<tmp>/${path.basename(a)}` : a)).join(' ')}`,
      runs: t.length,
      medianMs: round(median(t), 1),
      minMs: round(Math.min(...t), 1),
      maxMs: round(Math.max(...t), 1),
      ratioToNode: ratio(median(t), nodeMedian),
      failures: failures.get(c.id)!,
    };
  });
  return {
    runs: o.runs,
    lambdaMeasured: lambdaBundle ? 'bundle' : lambda ? 'source (no bundle in dist/)' : 'none',
    cliBundle: cliBundle ? path.relative(o.root, cliBundle) : null,
    results,
  };
}
