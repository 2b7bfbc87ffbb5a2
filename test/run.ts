/**
 * `npm test` runs vitest through this wrapper: everything the run prints — vitest's report, console
 * output of tests, and whatever code under test writes straight to file descriptors 1 and 2 (pino in
 * a worker, child processes that inherit them) — passes through here on its way to the terminal and
 * is scanned for the canary secret. A hit fails the run (exit 1) even when every test passed. The
 * files tests capture are scanned separately (test/global-setup.ts).
 *
 * Arguments are passed on to `vitest run` (e.g. `npm test -- test/state/`).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CANARY } from './canary.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const vitest = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));

// Node's on-disk compile cache (compiled code only, no data; Node checks each entry against its
// source): vitest, its workers and the hundreds of CLI processes the tests spawn (they pass
// NODE_COMPILE_CACHE on) load their modules faster after the first load
const compileCache =
  process.env.NODE_COMPILE_CACHE || path.join(root, 'node_modules', '.cache', 'keyrotor-node-compile');

const child = spawn(process.execPath, [vitest, 'run', '--config', 'test/vitest.config.ts', ...process.argv.slice(2)], {
  cwd: root,
  stdio: ['inherit', 'pipe', 'pipe'],
  env: {
    ...process.env,
    NODE_COMPILE_CACHE: compileCache,
    ...(process.stdout.isTTY && !process.env.NO_COLOR ? { FORCE_COLOR: '1' } : {}),
  },
});

/** forward a stream, counting the chunks that hold the canary (with enough overlap that one split across chunks is found) */
function scan(from: NodeJS.ReadableStream, to: NodeJS.WriteStream): Promise<number> {
  let tail = '';
  let hits = 0;
  from.on('data', (chunk: Buffer) => {
    to.write(chunk);
    const text = tail + chunk.toString('utf8');
    if (text.includes(CANARY)) hits++;
    tail = text.slice(-(CANARY.length - 1));
  });
  return new Promise((resolve) => from.on('end', () => resolve(hits)));
}

const done = Promise.all([scan(child.stdout, process.stdout), scan(child.stderr, process.stderr)]);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));

const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
  child.on('close', (c, s) => resolve([c, s])),
);
const [onStdout, onStderr] = await done;
if (onStdout + onStderr > 0) {
  process.stderr.write(
    `\nFAILED: the canary secret appeared in the test run's printed output (stdout: ${onStdout}, stderr: ${onStderr} chunk(s)); see above\n`,
  );
  process.exit(1);
}
console.log('printed-output scan: the canary appears nowhere in what the test run printed');
process.exit(code ?? (signal ? 1 : 0));
