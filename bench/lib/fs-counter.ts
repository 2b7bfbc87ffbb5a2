/**
 * Counts file operations under watched folders (the file store's secrets folder, the state folder,
 * the floor's folder), for P2: the file store has no server whose log could be read. Wraps
 * `fs/promises` readFile and open and `fs` openSync (the functions the file store and the state store use) and
 * publishes the wrappers to every ES module importer with syncBuiltinESMExports. Benchmark only.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';

export interface FsCounts {
  reads: number;
  writes: number;
}

const require = createRequire(import.meta.url);

export function installFsCounter(dirs: Record<string, string>): { counts: () => Record<string, FsCounts> } {
  const fsp = require('node:fs/promises') as typeof import('node:fs/promises');
  const counts: Record<string, FsCounts> = Object.fromEntries(
    Object.keys(dirs).map((k) => [k, { reads: 0, writes: 0 }]),
  );
  const which = (p: unknown): string | undefined => {
    if (typeof p !== 'string' && !(p instanceof URL)) return undefined;
    const abs = path.resolve(String(p instanceof URL ? p.pathname : p));
    for (const [k, d] of Object.entries(dirs)) if (abs.startsWith(d + path.sep)) return k;
    return undefined;
  };
  const readFile = fsp.readFile;
  const open = fsp.open;
  (fsp as { readFile: unknown }).readFile = function (this: unknown, p: unknown, ...rest: unknown[]) {
    const k = which(p);
    if (k) counts[k]!.reads++;
    return (readFile as (...a: unknown[]) => unknown).call(this, p, ...rest);
  };
  (fsp as { open: unknown }).open = function (this: unknown, p: unknown, flags?: unknown, ...rest: unknown[]) {
    const k = which(p);
    if (k && typeof flags === 'string' && /[wa]/.test(flags)) counts[k]!.writes++;
    return (open as (...a: unknown[]) => unknown).call(this, p, flags, ...rest);
  };
  // the state backend's hot path also opens files with direct system calls (core/fs.ts replaceFileSync)
  const fs = require('node:fs') as typeof import('node:fs');
  const openSync = fs.openSync;
  (fs as { openSync: unknown }).openSync = function (this: unknown, p: unknown, flags?: unknown, ...rest: unknown[]) {
    const k = which(p);
    if (k && typeof flags === 'string' && /[wa]/.test(flags)) counts[k]!.writes++;
    return (openSync as (...a: unknown[]) => unknown).call(this, p, flags, ...rest);
  };
  syncBuiltinESMExports();
  return { counts: () => JSON.parse(JSON.stringify(counts)) as Record<string, FsCounts> };
}
