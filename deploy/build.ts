/**
 * `npm run build`: esbuild bundles per entry point into dist/, plus the Lambda deployment zip.
 *
 *   dist/lambda.js        the Lambda handler (`lambda.handler`)
 *   dist/keyrotor.js      the CLI (`serve` for Cloud Run, `daemon`, `rotate`, ...)
 *   dist/chunks/*.js      code shared by both, and one lazily loaded chunk family per provider SDK
 *   dist/package.json     `"type": "module"` + the external packages (below)
 *   dist/keyrotor-lambda.zip   lambda.js + every chunk it can load + package.json (+ --config file)
 *
 * (dist/pkg/ is the npm package's compiled code, built by deploy/build-pkg.ts; this build leaves it alone.)
 *
 * ESM with code splitting: the provider registry imports each provider with import(), so each SDK
 * lands in its own chunks and a run loads only what its config uses (the AWS SDK is never read by a
 * config without an AWS store). Each entry file is one file; chunks are loaded on demand.
 *
 * External (not bundled, loaded from node_modules): @google-cloud/secret-manager and google-gax.
 * google-gax reads its .proto files relative to its own directory at run time and the GCP store
 * imports google-gax's `grpc` export, which does not survive CommonJS-to-ESM bundling. The Dockerfile
 * installs the production dependencies next to dist/ for them; the Lambda zip does not carry them
 * (use Lambda for AWS Secrets Manager / Azure / file stores; GCP stores run on Cloud Run).
 *
 * State backends load their clients lazily too (`state: dynamodb` -> @aws-sdk/client-dynamodb,
 * `state: postgres` -> its driver). Installed, they are bundled like any SDK: their chunks are reached
 * by dynamic import from lambda.js, so the zip carries them (the Lambda recipe keeps state in
 * DynamoDB). OPTIONAL_BUNDLED lists them: one that is not installed is marked external instead of
 * failing the build, and the build prints which (that backend then cannot load from the zip).
 * pg-native (node-postgres' optional native binding) is always external: pg falls back to pure JS.
 *
 *   node deploy/build.ts [--outdir dist] [--config rotation.config.yaml] [--no-minify]
 */
import { build, type Metafile, type Plugin } from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createZip, type ZipEntry } from './zip.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const EXTERNAL = ['@google-cloud/secret-manager', 'google-gax'];
/** bundled when installed; external (and reported) when not, so the build never fails on them */
export const OPTIONAL_BUNDLED = ['@aws-sdk/client-dynamodb', 'pg'];
/** optional native add-ons that are never bundled */
const ALWAYS_EXTERNAL = ['pg-native'];

/** OPTIONAL_BUNDLED packages that are not installed (looked up from the repository root) */
export function missingOptional(root: string = ROOT): string[] {
  return OPTIONAL_BUNDLED.filter((p) => !existsSync(path.join(root, 'node_modules', p, 'package.json')));
}
export const ENTRIES = { lambda: 'src/entrypoints/lambda.ts', keyrotor: 'src/entrypoints/cli.ts' } as const;
export type EntryName = keyof typeof ENTRIES;

// CommonJS dependencies call require() (and a few read __dirname); give every ESM chunk both
const BANNER = [
  "import { createRequire as __kr_createRequire } from 'node:module';",
  "import { fileURLToPath as __kr_fileURLToPath } from 'node:url';",
  "import { dirname as __kr_dirname } from 'node:path';",
  'const require = __kr_createRequire(import.meta.url);',
  'const __filename = __kr_fileURLToPath(import.meta.url);',
  'const __dirname = __kr_dirname(__filename);',
].join(' ');

export interface BuildOptions {
  /** default <repo>/dist; emptied first */
  outdir?: string;
  /** a config file to put into the Lambda zip as rotation.config.yaml */
  config?: string;
  minify?: boolean;
  /** print the size table (default true) */
  print?: boolean;
}

export interface EntryReport {
  name: EntryName;
  file: string;
  /** the entry file alone */
  bytes: number;
  /** the entry plus every chunk it imports statically: what starting it reads */
  startupBytes: number;
  /** plus every chunk it may import lazily (all providers) */
  allBytes: number;
}

export interface BuildReport {
  outdir: string;
  /** OPTIONAL_BUNDLED packages that were not installed, hence not bundled */
  notBundled: string[];
  entries: EntryReport[];
  zip: { file: string; bytes: number; files: string[] };
  metafile: Metafile;
}

export async function buildBundles(o: BuildOptions = {}): Promise<BuildReport> {
  const outdir = path.resolve(o.outdir ?? path.join(ROOT, 'dist'));
  // emptied first, except pkg/: the npm package's compiled files (`npm run build:pkg`, deploy/build-pkg.ts)
  mkdirSync(outdir, { recursive: true });
  for (const e of readdirSync(outdir)) if (e !== 'pkg') rmSync(path.join(outdir, e), { recursive: true, force: true });
  const minify = o.minify !== false;
  // One esbuild run per entry point, into the same outdir: with a shared run, esbuild splits the code
  // both entries use into chunks along *every* entry's dynamic imports, and the CLI loads each
  // command's implementation with import(), so the Lambda would start by loading dozens of small
  // chunks instead of a few. Chunk names carry a content hash, so a chunk both runs emit is the
  // same file (the runs go one after the other, so no file is written by two at once).
  const metafile: Metafile = { inputs: {}, outputs: {} };
  const notBundled = missingOptional();
  const external = [...EXTERNAL, ...ALWAYS_EXTERNAL, ...notBundled];
  for (const name of Object.keys(ENTRIES) as EntryName[]) {
    const m = await buildEntry(name, outdir, minify, external);
    Object.assign(metafile.inputs, m.inputs);
    Object.assign(metafile.outputs, m.outputs);
  }

  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    version: string;
    engines: Record<string, string>;
    dependencies: Record<string, string>;
  };
  // name, version and engines are read at run time by src/app/version.ts (`--version`, the Node check)
  const distPkg = {
    name: 'keyrotor-dist',
    version: pkg.version,
    private: true,
    type: 'module',
    engines: pkg.engines,
    // what the bundles load from node_modules at run time (GCP stores only)
    dependencies: Object.fromEntries(EXTERNAL.map((d) => [d, pkg.dependencies[d] ?? '*'])),
  };
  writeFileSync(path.join(outdir, 'package.json'), JSON.stringify(distPkg, null, 2) + '\n');

  const rel = (f: string) => path.relative(outdir, path.resolve(ROOT, f)).split(path.sep).join('/');
  const outputs = new Map(Object.entries(metafile.outputs).map(([f, v]) => [rel(f), v]));
  const closure = (start: string, lazy: boolean): Set<string> => {
    const seen = new Set<string>();
    const walk = (f: string) => {
      if (seen.has(f)) return;
      seen.add(f);
      for (const i of outputs.get(f)?.imports ?? []) {
        if (i.external) continue;
        if (i.kind === 'import-statement' || (lazy && i.kind === 'dynamic-import')) walk(rel(i.path));
      }
    };
    walk(start);
    return seen;
  };
  const size = (files: Set<string>) => [...files].reduce((n, f) => n + (outputs.get(f)?.bytes ?? 0), 0);

  const entries: EntryReport[] = (Object.keys(ENTRIES) as EntryName[]).map((name) => {
    const file = `${name}.js`;
    return {
      name,
      file,
      bytes: outputs.get(file)?.bytes ?? 0,
      startupBytes: size(closure(file, false)),
      allBytes: size(closure(file, true)),
    };
  });

  const zipFiles = [...closure('lambda.js', true)].filter((f) => f.endsWith('.js')).sort();
  const zipEntries: ZipEntry[] = zipFiles.map((f) => ({ name: f, data: readFileSync(path.join(outdir, f)) }));
  zipEntries.push({
    name: 'package.json',
    data: Buffer.from(
      JSON.stringify({
        name: distPkg.name,
        version: distPkg.version,
        private: true,
        type: 'module',
        engines: distPkg.engines,
      }) + '\n',
    ),
  });
  if (o.config) zipEntries.push({ name: 'rotation.config.yaml', data: readFileSync(path.resolve(o.config)) });
  const zipFile = path.join(outdir, 'keyrotor-lambda.zip');
  writeFileSync(zipFile, createZip(zipEntries));

  const report: BuildReport = {
    outdir,
    notBundled,
    entries,
    zip: { file: zipFile, bytes: statSync(zipFile).size, files: zipEntries.map((e) => e.name) },
    metafile,
  };
  writeFileSync(
    path.join(outdir, 'build-report.json'),
    JSON.stringify({ entries, zip: { bytes: report.zip.bytes, files: report.zip.files.length } }, null, 2) + '\n',
  );
  if (o.print !== false) printReport(report);
  return report;
}

/**
 * zod's namespace (`z`) re-exports every message locale (`z.locales`, ~50 languages, about a third of
 * the Lambda's start-up bytes), and a namespace object cannot be tree-shaken. keyrotor uses the English
 * messages zod configures by default and no other locale, so the bundles get a locales index with `en`
 * only (zod's own `config(en())` keeps working; `z.locales.<other>` would be undefined).
 */
const zodEnglishOnly: Plugin = {
  name: 'zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]v4[\\/](classic|core)$/.test(args.resolveDir)
        ? { path: path.join(args.resolveDir, '..', 'locales', 'index.js'), namespace: 'zod-locales' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(path.join(path.dirname(args.path), 'en.js'))};\n`,
      resolveDir: path.dirname(args.path),
      loader: 'js',
    }));
  },
};

async function buildEntry(name: EntryName, outdir: string, minify: boolean, external: string[]): Promise<Metafile> {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { [name]: path.join(ROOT, ENTRIES[name]) },
    outdir,
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    splitting: true,
    entryNames: '[name]',
    chunkNames: 'chunks/[name]-[hash]',
    external,
    plugins: [zodEnglishOnly],
    banner: { js: BANNER },
    // whitespace and syntax are minified, identifiers are not: function and class names stay as
    // written, so stack traces stay readable without esbuild's keepNames, whose __name() call per
    // function and class ran at start-up (about 10% of the Lambda's start-up CPU); the .map files
    // stay in dist/ (not in the zip) for `node --enable-source-maps`
    minifyWhitespace: minify,
    minifySyntax: minify,
    minifyIdentifiers: false,
    sourcemap: 'linked',
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  });
  return result.metafile;
}

/** Which npm packages an output file contains (from the metafile). */
export function packagesIn(metafile: Metafile, outputFile: string): string[] {
  const out = Object.entries(metafile.outputs).find(([f]) => path.resolve(ROOT, f) === path.resolve(outputFile))?.[1];
  const pk = new Set<string>();
  for (const input of Object.keys(out?.inputs ?? {})) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(input);
    if (m) pk.add(m[1]!);
  }
  return [...pk].sort();
}

const kb = (n: number) => `${(n / 1024).toFixed(0)} KiB`;

function printReport(r: BuildReport): void {
  const lines = [
    `bundles in ${path.relative(process.cwd(), r.outdir) || '.'}:`,
    ...r.entries.map(
      (e) =>
        `  ${e.file.padEnd(12)} entry ${kb(e.bytes).padStart(9)}   loaded at start ${kb(e.startupBytes).padStart(9)}   with every provider ${kb(e.allBytes).padStart(9)}`,
    ),
    `  ${path.basename(r.zip.file)}  ${kb(r.zip.bytes)} (${r.zip.files.length} files)`,
    `  external (from node_modules): ${EXTERNAL.join(', ')}`,
    ...(r.notBundled.length
      ? [`  not installed, so not bundled: ${r.notBundled.join(', ')} (the state backend using it cannot load)`]
      : []),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: { outdir: { type: 'string' }, config: { type: 'string' }, 'no-minify': { type: 'boolean' } },
    allowPositionals: false,
  });
  if (values.config && !existsSync(values.config)) {
    process.stderr.write(`build: --config ${values.config}: no such file\n`);
    process.exitCode = 2;
  } else {
    await buildBundles({
      ...(values.outdir ? { outdir: values.outdir } : {}),
      ...(values.config ? { config: values.config } : {}),
      minify: values['no-minify'] !== true,
    });
  }
}
