#!/usr/bin/env node
// The `keyrotor` command of the installed package. Plain JavaScript that any Node since 12 parses:
// it checks the Node version against package.json's engines first, so an old Node gets one clear
// line (exit 2) instead of a syntax or module error, then loads the compiled CLI (dist/pkg/).
import { readFileSync } from 'node:fs';
import module from 'node:module';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const range = (pkg.engines && pkg.engines.node) || '>=22.12';
const want = (/>=\s*([\d.]+)/.exec(range) || [null, '22.12'])[1].split('.').map(Number);
const have = process.versions.node.split('.').map(Number);
let tooOld = false;
for (let i = 0; i < 3; i++) {
  const a = have[i] || 0;
  const b = want[i] || 0;
  if (a !== b) {
    tooOld = a < b;
    break;
  }
}
if (tooOld) {
  process.stderr.write(`keyrotor: needs Node >= ${want.join('.')} (this is Node ${process.versions.node})\n`);
  process.exitCode = 2;
} else {
  // Node's on-disk cache of compiled code (in the OS temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it
  // off), as tsc and npm use it: every run after the first starts faster
  if (typeof module.enableCompileCache === 'function') {
    try {
      module.enableCompileCache();
    } catch {}
  }
  import('../dist/pkg/src/entrypoints/cli.js').then(
    (cli) => {
      // `daemon` and `serve` start again with the worker heap flags (src/entrypoints/heap.ts;
      // docs/operations.md#worker-memory), unless NODE_OPTIONS or node's arguments size the heap already
      if (typeof cli.relaunchWorkerWithHeapFlags === 'function') cli.relaunchWorkerWithHeapFlags(process.argv.slice(2));
      return cli.runCli(process.argv.slice(2));
    },
    (e) => {
      process.stderr.write(`keyrotor: cannot load the CLI: ${(e && e.message) || e}\n`);
      process.exitCode = 4;
    },
  );
}
