/**
 * `npm run build:pkg` (and `prepack`, so `npm pack` / `npm publish` always ship fresh files): compiles
 * the npm package's JavaScript and type declarations into dist/pkg/ with tsc (tsconfig.build.json:
 * `.ts` import paths rewritten to `.js`, one `.js` + `.d.ts` per source file, the folder layout kept).
 *
 * Not bundled on purpose: the provider registry's import() calls stay import() calls, so a run loads
 * only the SDKs its config names, and the SDKs resolve from the user's node_modules as dependencies.
 * The bin (bin/keyrotor.js) is plain JavaScript kept in git; it loads dist/pkg/src/entrypoints/cli.js.
 *
 *   node deploy/build-pkg.ts
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const PKG_OUT = path.join(ROOT, 'dist', 'pkg');
/** what package.json's exports and bin point at: the build fails if one is missing */
export const PKG_ENTRIES = [
  'src/entrypoints/index.js',
  'src/entrypoints/index.d.ts',
  'src/entrypoints/consumer.js',
  'src/entrypoints/consumer.d.ts',
  'src/entrypoints/cli.js',
];

export function buildPackage(): void {
  rmSync(PKG_OUT, { recursive: true, force: true });
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (r.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed (exit ${r.status ?? r.signal})`);
  const missing = PKG_ENTRIES.filter((f) => !existsSync(path.join(PKG_OUT, f)));
  if (missing.length) throw new Error(`build:pkg: not emitted: ${missing.join(', ')}`);
}

if (import.meta.main) {
  try {
    buildPackage();
    process.stderr.write(
      `build:pkg: compiled JavaScript and declarations in ${path.relative(process.cwd(), PKG_OUT)}\n`,
    );
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}
