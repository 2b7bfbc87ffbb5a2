#!/usr/bin/env node
/**
 * keyrotor CLI: a thin adapter over run.ts. Results on stdout (a table, or one JSON document with
 * --json); logs on stderr (pretty on a TTY, JSON otherwise).
 *
 * Start-up: this file and the command modules import only what declaring the commands needs; each
 * command loads its implementation (config, logger, run.ts, providers) with import() when it runs,
 * so `keyrotor --help` and usage errors stay close to bare Node start-up (see commands/context.ts).
 */
import { Command, CommanderError, Option } from 'commander';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { toKeyrotorError } from '../core/errors.ts';
import { KEYROTOR_VERSION, unsupportedNode } from '../app/version.ts';
import { CLI_DEFAULT_CONFIG_FILE as DEFAULT_CONFIG_FILE } from './cli-defaults.ts';
import { COMMANDS } from './commands/index.ts';
import { createResources, makeContext, type CliIO } from './commands/context.ts';
import { relaunchWorkerWithHeapFlags } from './heap.ts';

export type { CliIO } from './commands/context.ts';
export { relaunchWorkerWithHeapFlags } from './heap.ts';

const EXIT_HELP = `
Exit codes:
  0  done (rotated, or nothing was due), or waiting: parked at a health gate (\`--park\`; a durable
     wait that the next worker run continues, see \`keyrotor status\`)
  1  not done, but safe: rolled back, the old key still serves
  2  bad usage, config or state (file, or backend unreachable / not initialised), or an unsupported
     Node version (nothing was changed)
  3  locked: another rotation of the same key is running (or took over this one's lease)
  4  a human must act (needs_attention: see "leftovers" in the result)
  5  paused by Ctrl-C / SIGTERM: state saved, lock released; \`keyrotor resume <key>\` continues
  130, 143  a second Ctrl-C / SIGTERM: exited at once, the lock stays (a run on this host takes it
     over at once since its holder is gone; elsewhere after defaults.lease.ttl)

Environment:
  KEYROTOR_CONFIG        config file (default ${DEFAULT_CONFIG_FILE})
  KEYROTOR_LOG_LEVEL     debug | info | warn | error (default info)
  KEYROTOR_PROGRESS_INTERVAL  off a TTY: at most one "waiting at <stage>" log line per rotation
                         this often (default 30s); on a TTY a live line per waiting rotation
  KEYROTOR_MASTER_KEY    32-byte key for the file store (default: generated key file in the state dir)
  OPENAI_ADMIN_KEY       admin key for the openai issuer (name configurable with adminKeyEnv)
  KEYROTOR_DATABASE_URL  PostgreSQL URL for state: { type: postgres } (name configurable with urlEnv)
  NO_COLOR               no colours on a TTY
  NODE_OPTIONS           with --max-semi-space-size or --max-old-space-size: replaces the heap
                         flags daemon, serve and rotate/resume --park start Node with (see
                         docs/operations.md "Worker memory")
`;

export async function main(argv: string[], io: CliIO = defaultIO()): Promise<number> {
  const state = { exitCode: 0, json: false };
  const program = new Command()
    .name('keyrotor')
    .description(
      'Rotate OpenAI project API keys (and other secrets) safely: create, stage, verify, promote, confirm, revoke.',
    )
    .version(KEYROTOR_VERSION)
    .option('-c, --config <file>', 'config file', io.env.KEYROTOR_CONFIG ?? DEFAULT_CONFIG_FILE)
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error', 'silent']))
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(run keyrotor --help for usage)');
  // everything the command opens (database pools, SDK clients) is released before main() returns
  const resources = createResources();
  const ctx = makeContext(program, io, state, resources);
  for (const register of COMMANDS) register(ctx);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return state.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
        return 0;
      return 2; // commander already printed the one-line error
    }
    return reportError(e, io, state.json);
  } finally {
    await resources.release();
  }
}

function reportError(e: unknown, io: CliIO, json: boolean): number {
  const err = toKeyrotorError(e);
  io.stderr(`keyrotor: ${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ''}\n`);
  if (json) io.stdout(JSON.stringify({ results: [], error: err.toRecord() }) + '\n');
  return err.exitCode;
}

function defaultIO(): CliIO {
  return {
    stdout: (s) => void process.stdout.write(s),
    stderr: (s) => void process.stderr.write(s),
    env: process.env,
    stderrIsTTY: process.stderr.isTTY === true,
    ...(process.stderr.columns ? { columns: process.stderr.columns } : {}),
  };
}

/**
 * Run the CLI as a program: arguments from the process, the exit code into process.exitCode. The
 * package's bin (bin/keyrotor.js) calls this; so does this file when it is the program itself.
 */
export async function runCli(argv: string[] = process.argv.slice(2)): Promise<void> {
  const tooOld = unsupportedNode();
  if (tooOld) {
    process.stderr.write(`keyrotor: ${tooOld}\n`);
    process.exitCode = 2;
    return;
  }
  try {
    process.exitCode = await main(argv);
  } catch (e) {
    process.stderr.write(`keyrotor: INTERNAL: ${toKeyrotorError(e).message}\n`);
    process.exitCode = 4;
  }
}

/**
 * Is this module the program (`node cli.ts`, `node dist/keyrotor.js`)? `import.meta.main` exists from
 * Node 22.18 / 24.2 only; before that, compare the script Node was started with to this file.
 */
function isProgram(): boolean {
  const meta: { main?: unknown } = import.meta;
  if (typeof meta.main === 'boolean') return meta.main;
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isProgram()) {
  // `daemon` and `serve` start again with the worker heap flags (heap.ts), unless the operator set some
  relaunchWorkerWithHeapFlags();
  await runCli();
}
