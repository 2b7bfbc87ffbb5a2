import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  WORKER_OLD_SPACE_MAX_MB,
  WORKER_SEMI_SPACE_MB,
  commandOf,
  heapFlagsGiven,
  isWorkerRun,
  relaunchArgs,
  workerHeapFlags,
} from '../../src/entrypoints/heap.ts';

const MB = 2 ** 20;
const base = {
  execPath: '/usr/bin/node',
  execArgv: [] as string[],
  script: '/app/keyrotor.js',
  nodeOptions: undefined as string | undefined,
  heapSizeLimit: 4288 * MB,
};

describe('worker heap flags (daemon, serve)', () => {
  it('finds the command after the global options', () => {
    expect(commandOf(['daemon', '--tick', '* * * * *'])).toBe('daemon');
    expect(commandOf(['-c', 'x.yaml', 'serve', '--port', '0'])).toBe('serve');
    expect(commandOf(['--config', 'daemon', 'rotate'])).toBe('rotate'); // a config file named "daemon"
    expect(commandOf(['--config=x.yaml', '--log-level', 'debug', 'daemon'])).toBe('daemon');
    expect(commandOf(['--log-level=warn', 'rotate', 'daemon'])).toBe('rotate');
    expect(commandOf(['--help'])).toBeUndefined();
    expect(commandOf([])).toBeUndefined();
  });

  it('worker runs: daemon, serve, and rotate / resume with --park but not --leaked; never --help', () => {
    for (const argv of [
      ['daemon'],
      ['serve', '--port', '0'],
      ['-c', 'a.yaml', 'rotate', '--park'],
      ['rotate', 'app', '--park', '--json'],
      ['resume', '--park'],
      ['--log-level', 'warn', 'resume', '--now', '--park', 'app'],
    ])
      expect(isWorkerRun(argv), argv.join(' ')).toBe(true);
    for (const argv of [
      ['rotate'],
      ['rotate', '--now', '--leaked', 'app'],
      ['rotate', '--now', '--leaked', '--park', 'app'], // a leak response: start-up is on the critical path
      ['resume'],
      ['status', '--park'],
      ['rotate', '--', '--park'], // a key named --park, not the option
      ['daemon', '--help'],
      ['serve', '-h'],
      ['--help'],
      ['-c', 'daemon'],
      [],
    ])
      expect(isWorkerRun(argv), argv.join(' ')).toBe(false);
  });

  it('young generation capped, old generation limit at most 1 GB and never above the one Node chose', () => {
    expect(workerHeapFlags(4288 * MB)).toEqual([
      `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`,
      `--max-old-space-size=${WORKER_OLD_SPACE_MAX_MB}`,
    ]);
    // a 512 MB container: Node picked ~260 MB; keyrotor does not raise it (old + 3 semi-spaces within it)
    expect(workerHeapFlags(262 * MB)).toEqual([
      `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`,
      `--max-old-space-size=${262 - 3 * WORKER_SEMI_SPACE_MB}`,
    ]);
    expect(workerHeapFlags(10 * MB)[1]).toBe('--max-old-space-size=64');
    // this host: a number Node accepts
    expect(workerHeapFlags()[1]).toMatch(/^--max-old-space-size=\d+$/);
  });

  it('heap flags the operator gave win (NODE_OPTIONS or node arguments, either spelling)', () => {
    expect(heapFlagsGiven([], undefined)).toBe(false);
    expect(heapFlagsGiven([], '--enable-source-maps')).toBe(false);
    expect(heapFlagsGiven([], '--max-old-space-size=4096')).toBe(true);
    expect(heapFlagsGiven([], '--enable-source-maps --max-semi-space-size=16')).toBe(true);
    expect(heapFlagsGiven([], '--max_old_space_size 512')).toBe(true);
    expect(heapFlagsGiven(['--max-semi-space-size=1'], undefined)).toBe(true);
    expect(heapFlagsGiven(['--max-old-space-size-percentage=50'], undefined)).toBe(false);
  });

  it('relaunches worker runs only, with the same script, node arguments and CLI arguments', () => {
    expect(relaunchArgs({ ...base, argv: ['daemon', '--tick', '0 * * * *'] })).toEqual([
      '/usr/bin/node',
      `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`,
      `--max-old-space-size=${WORKER_OLD_SPACE_MAX_MB}`,
      '/app/keyrotor.js',
      'daemon',
      '--tick',
      '0 * * * *',
    ]);
    expect(relaunchArgs({ ...base, execArgv: ['--enable-source-maps'], argv: ['-c', 'a.yaml', 'serve'] })).toEqual([
      '/usr/bin/node',
      `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`,
      `--max-old-space-size=${WORKER_OLD_SPACE_MAX_MB}`,
      '--enable-source-maps',
      '/app/keyrotor.js',
      '-c',
      'a.yaml',
      'serve',
    ]);
    expect(relaunchArgs({ ...base, argv: ['rotate', '--park'] })?.slice(-3)).toEqual([
      '/app/keyrotor.js',
      'rotate',
      '--park',
    ]);
    for (const argv of [['rotate', '--now'], ['status'], ['--help'], [], ['daemon', '--help'], ['serve', '-h']])
      expect(relaunchArgs({ ...base, argv })).toBeUndefined();
    expect(relaunchArgs({ ...base, argv: ['daemon'], nodeOptions: '--max-old-space-size=2048' })).toBeUndefined();
    expect(relaunchArgs({ ...base, argv: ['daemon'], execArgv: ['--max-semi-space-size=8'] })).toBeUndefined();
    expect(relaunchArgs({ ...base, argv: ['daemon'], script: undefined })).toBeUndefined();
  });

  it('the container image leaves the heap flags to the CLI (an ENV NODE_OPTIONS heap flag would switch them off)', () => {
    const dockerfile = readFileSync(new URL('../../deploy/Dockerfile', import.meta.url), 'utf8');
    expect(dockerfile).toMatch(/CMD \["serve"\]/);
    expect(heapFlagsGiven([], /NODE_OPTIONS=(\S+)/.exec(dockerfile)?.[1])).toBe(false);
  });
});
