/**
 * keyrotor's version and the Node versions it supports, read from package.json: the one place both
 * are written. The file is found by walking up from this module, which works from the source tree
 * (src/app/), the published package (dist/pkg/src/app/) and the esbuild bundles of deploy/build.ts
 * (dist/, dist/chunks/, whose dist/package.json carries the same version and engines).
 */
import { readFileSync } from 'node:fs';

/** package names whose package.json describes this code: the package and the deploy bundles' dist/package.json */
const OWN_NAMES = new Set(['keyrotor', 'keyrotor-dist']);

interface PackageInfo {
  version: string;
  engines: { node?: string };
}

function findPackageJson(): PackageInfo {
  let dir = new URL('.', import.meta.url);
  for (let i = 0; i < 8; i++) {
    try {
      const p = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as Partial<PackageInfo> & {
        name?: string;
      };
      if (p.name && OWN_NAMES.has(p.name) && typeof p.version === 'string')
        return { version: p.version, engines: p.engines ?? {} };
    } catch {}
    const up = new URL('..', dir);
    if (up.href === dir.href) break;
    dir = up;
  }
  // a copy of the code without its package.json (e.g. files lifted out of a zip): still runs
  return { version: '0.0.0-unknown', engines: {} };
}

const info = findPackageJson();

/** the `version` of keyrotor's package.json */
export const KEYROTOR_VERSION: string = info.version;

/** the oldest Node version package.json's `engines.node` (">=X.Y[.Z]") admits, as [major, minor, patch] */
export const MIN_NODE: readonly [number, number, number] = parseMinNode(info.engines.node) ?? [22, 12, 0];
const MIN_NODE_TEXT = MIN_NODE.join('.').replace(/\.0$/, '');

function parseMinNode(range: string | undefined): [number, number, number] | undefined {
  const m = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range?.trim() ?? '');
  return m ? [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)] : undefined;
}

/** undefined when `version` (e.g. process.versions.node) satisfies MIN_NODE, else the one-line reason */
export function unsupportedNode(version: string = process.versions.node): string | undefined {
  const v = version.split('.').map((n) => Number(n));
  for (let i = 0; i < 3; i++) {
    const a = v[i] ?? 0;
    const b = MIN_NODE[i]!;
    if (a > b) return undefined;
    if (a < b) return `needs Node >= ${MIN_NODE_TEXT} (this is Node ${version})`;
  }
  return undefined;
}
