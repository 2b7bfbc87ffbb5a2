#!/usr/bin/env node
/**
 * keyrotor CLI: a thin adapter over run.ts. Results on stdout (a table, or one JSON document with
 * --json); logs on stderr (pretty on a TTY, JSON otherwise).
 */
import { Command, CommanderError, Option } from 'commander';
import { DEFAULT_CONFIG_FILE, loadConfig, type LoadedConfig } from '../config/load.ts';
import { configJsonSchema, type ResolvedKey } from '../config/schema.ts';
import { composeKey } from '../compose.ts';
import { KeyrotorError, toKeyrotorError } from '../core/errors.ts';
import { fingerprint } from '../core/fingerprint.ts';
import { isLease, type Logger } from '../core/ports.ts';
import { OUTCOME_EXIT } from '../core/stages.ts';
import { createLogger } from '../log.ts';
import { isDue, KEYROTOR_VERSION, rotateKey, type KeyResult } from '../run.ts';
import { createFileStateStore } from '../state/index.ts';

export interface CliIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
}

const EXIT_HELP = `
Exit codes:
  0  done (rotated, or nothing was due)
  1  not done, but safe: rolled back, the old key still serves
  2  bad usage, config or state file (nothing was changed)
  3  locked: another rotation of the same key is running
  4  a human must act (needs_attention: see "leftovers" in the result)

Environment:
  KEYROTOR_CONFIG        config file (default ${DEFAULT_CONFIG_FILE})
  KEYROTOR_LOG_LEVEL     debug | info | warn | error (default info)
  KEYROTOR_MASTER_KEY    32-byte key for the file store (default: generated key file in the state dir)
  OPENAI_ADMIN_KEY       admin key for the openai issuer (name configurable with adminKeyEnv)
  NO_COLOR               no colours on a TTY
`;

export async function main(argv: string[], io: CliIO = defaultIO()): Promise<number> {
  let exitCode = 0;
  let json = false;
  let logger: Logger | undefined;
  const getLogger = async (level?: string): Promise<Logger> =>
    (logger ??= await createLogger({ ...(level ? { level } : {}), ...(io.env.KEYROTOR_LOG_PRETTY === '0' ? { pretty: false } : {}) }));

  const program = new Command()
    .name('keyrotor')
    .description('Rotate OpenAI project API keys (and other secrets) safely: create, stage, verify, promote, confirm, revoke.')
    .version(KEYROTOR_VERSION)
    .option('-c, --config <file>', 'config file', io.env.KEYROTOR_CONFIG ?? DEFAULT_CONFIG_FILE)
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error', 'silent']))
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(run keyrotor --help for usage)');

  const load = async (): Promise<LoadedConfig> => loadConfig(program.opts<{ config: string }>().config, io.env);
  const pickKeys = (cfg: LoadedConfig, names: string[]): ResolvedKey[] => {
    if (names.length === 0) return cfg.keys;
    return names.map((n) => {
      const k = cfg.keys.find((x) => x.name === n);
      if (!k) throw new KeyrotorError('UNKNOWN_KEY', `unknown key "${n}" (configured: ${cfg.keys.map((x) => x.name).join(', ')})`);
      return k;
    });
  };

  program
    .command('rotate')
    .description('rotate every key that is due, or the named keys with --now')
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--now', 'rotate now even if not due')
    .option('--leaked', 'the current key is compromised: skip consumer gates, revoke as soon as the new key serves, never restore it (needs --now)')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--json', 'print exactly one JSON document on stdout: { "results": [...] }')
    .option('--full', 'if a key was only bootstrapped (its store was empty), rotate it once more so every stage runs')
    .action(async (names: string[], opts: { now?: boolean; leaked?: boolean; dryRun?: boolean; json?: boolean; full?: boolean }) => {
      json = opts.json === true;
      if (opts.leaked && !opts.now) throw new KeyrotorError('USAGE', '--leaked needs --now: a leaked key is rotated immediately');
      if (opts.leaked && names.length === 0) throw new KeyrotorError('USAGE', '--leaked needs the key name(s) that leaked');
      const cfg = await load();
      const keys = pickKeys(cfg, names);
      const log = await getLogger(program.opts<{ logLevel?: string }>().logLevel);
      const stateStore = createFileStateStore(cfg.stateDir);
      const base = { config: cfg, stateStore, logger: log, env: io.env, actor: 'cli', now: opts.now === true, leaked: opts.leaked === true, dryRun: opts.dryRun === true };
      const results: KeyResult[] = [];
      for (const key of keys) {
        const r = await rotateKey(key, base);
        results.push(r);
        if (opts.full && r.bootstrap && r.outcome === 'rotated') results.push(await rotateKey(key, { ...base, now: true }));
      }
      exitCode = Math.max(0, ...results.map((r) => OUTCOME_EXIT[r.outcome]));
      if (json) io.stdout(JSON.stringify({ results }, null, 2) + '\n');
      else io.stdout(renderResults(results));
    });

  program
    .command('status')
    .description('show per key: current key id, last rotation, next due, last outcome')
    .option('--json', 'print { "keys": [...] } on stdout')
    .action(async (opts: { json?: boolean }) => {
      json = opts.json === true;
      const cfg = await load();
      const stateStore = createFileStateStore(cfg.stateDir);
      const now = Date.now();
      const keys = [];
      for (const k of cfg.keys) {
        const rec = await stateStore.read(k.name);
        const due = isDue(k, rec, now);
        keys.push({
          name: k.name,
          currentKeyId: rec?.currentKeyId ?? null,
          lastRotatedAt: rec?.lastRotatedAt ?? null,
          nextDueAt: due.nextDueAt,
          due: due.due,
          lastOutcome: rec?.last?.outcome ?? null,
          activeRotation: rec?.active?.rotationId ?? null,
        });
      }
      if (json) io.stdout(JSON.stringify({ keys }, null, 2) + '\n');
      else
        io.stdout(
          table(
            ['KEY', 'CURRENT KEY ID', 'LAST ROTATED', 'NEXT DUE', 'LAST OUTCOME'],
            keys.map((k) => [k.name, k.currentKeyId ?? '-', k.lastRotatedAt ?? 'never', k.due ? 'now' : (k.nextDueAt ?? '-'), (k.lastOutcome ?? '-') + (k.activeRotation ? ` (unfinished ${k.activeRotation})` : '')]),
          ),
        );
    });

  program
    .command('validate')
    .description('check the config file; exit 0 when valid, 2 otherwise')
    .action(async () => {
      const cfg = await load();
      io.stdout(`${cfg.file}: valid (${cfg.keys.length} key${cfg.keys.length === 1 ? '' : 's'}: ${cfg.keys.map((k) => k.name).join(', ')})\n`);
    });

  program
    .command('adopt')
    .description('tell keyrotor which issuer key the value in the store is (for keys a person created by hand)')
    .argument('<key>', 'key name from the config')
    .requiredOption('--key-id <id>', 'issuer key id of the value that is current in the store')
    .action(async (name: string, opts: { keyId: string }) => {
      const cfg = await load();
      const key = pickKeys(cfg, [name])[0]!;
      const log = await getLogger(program.opts<{ logLevel?: string }>().logLevel);
      const stateStore = createFileStateStore(cfg.stateDir);
      const lease = await stateStore.acquire(key.name, `adopt:${process.pid}`, 60_000);
      if (!isLease(lease)) throw new KeyrotorError('LOCKED', `${key.name} is being rotated by ${lease.owner}`);
      try {
        const record = await stateStore.read(key.name);
        const p = await composeKey({ config: cfg, key, stateStore, record, logger: log, env: io.env });
        const current = await p.stores[0]!.readCurrent();
        if (!current) throw new KeyrotorError('USAGE', `${p.stores[0]!.label} holds no value for ${key.name}: nothing to adopt`);
        const known = await p.issuer.list();
        if (!known.some((k) => k.keyId === opts.keyId)) {
          throw new KeyrotorError('USAGE', `the issuer has no key with id ${opts.keyId} (${known.length} keys listed)`);
        }
        const fp = fingerprint(current.secret);
        await stateStore.setProviderState(key.name, `adopted.${fp}`, opts.keyId);
        io.stdout(`${key.name}: the current value (${fp}) is now known as issuer key ${opts.keyId}\n`);
      } finally {
        await lease.release();
      }
    });

  program
    .command('schema')
    .description('print the JSON Schema of rotation.config.yaml (for editor completion)')
    .action(() => {
      io.stdout(JSON.stringify(configJsonSchema(), null, 2) + '\n');
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return 2; // commander already printed the one-line error
    }
    const err = toKeyrotorError(e);
    io.stderr(`keyrotor: ${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ''}\n`);
    if (json) io.stdout(JSON.stringify({ results: [], error: err.toRecord() }) + '\n');
    return err.exitCode;
  }
}

function renderResults(results: KeyResult[]): string {
  const rows = results.map((r) => {
    let what: string;
    if (r.dryRun) what = `${r.plan?.due ? 'would rotate' : 'not due'}: ${r.plan?.reason}; issuer ${r.plan?.issuer}, stores ${r.plan?.stores.join('+')}, gates ${r.plan?.gates.join('+') || 'none'}${r.plan?.resume ? `; would resume ${r.plan.resume}` : ''}`;
    else if (r.outcome === 'rotated') what = r.bootstrap ? `bootstrapped: new key ${r.newKeyId} stored, nothing to revoke` : `${r.oldKeyId} → ${r.newKeyId}; old key revoked and confirmed dead`;
    else if (r.outcome === 'skipped') what = 'not due';
    else what = r.error ? `${r.error.code}: ${r.error.message}` : r.outcome;
    const lines = [`${r.key}  ${r.outcome.toUpperCase()}  ${what}${r.rotationId ? `  [${r.rotationId}]` : ''}`];
    for (const l of r.leftovers ?? []) lines.push(`    ! ${l}`);
    return lines.join('\n');
  });
  return rows.join('\n') + '\n';
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

function defaultIO(): CliIO {
  return { stdout: (s) => void process.stdout.write(s), stderr: (s) => void process.stderr.write(s), env: process.env };
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`keyrotor: INTERNAL: ${toKeyrotorError(e).message}\n`);
      process.exitCode = 4;
    },
  );
}
