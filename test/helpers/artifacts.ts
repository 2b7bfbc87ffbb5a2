import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';

/** Root of everything the suite captures; scanned for the canary after the run. */
export function artifactsDir(): string {
  return inject('artifactsDir');
}

/** A fresh dir under the artifacts root (state dirs, config dirs): scanned for the canary later. */
export function tempDir(prefix: string): string {
  const root = path.join(artifactsDir(), 'dirs');
  mkdirSync(root, { recursive: true });
  return mkdtempSync(path.join(root, `${prefix.replace(/[^a-z0-9-]/gi, '_')}-`));
}

/** Keep a piece of captured output (stdout, stderr, logs, serialized snapshots) for the canary scan. */
export function capture(name: string, text: string | Buffer): void {
  const dir = path.join(artifactsDir(), 'captured');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    path.join(dir, `${Date.now()}-${Math.random().toString(16).slice(2)}-${name.replace(/[^a-z0-9.-]/gi, '_')}`),
    text,
  );
}
