/**
 * Every CLI command, in --help order: the light command table. Each command is declared here (name,
 * arguments, options, help text: everything `--help` and usage errors need) and its action lives in
 * its own file (rotate.ts, status.ts, ...), imported only when the command runs, so `keyrotor --help`
 * loads commander and this file, not the config loader, the logger, run.ts or any provider.
 * A new command is a new action file plus one declaration here.
 */
import { Option } from 'commander';
import { KeyrotorError } from '../../core/errors.ts';
import {
  CLI_DAEMON_JITTER_MS as DEFAULT_JITTER_MS,
  CLI_DAEMON_METRICS_HOST as DEFAULT_METRICS_HOST,
  CLI_DAEMON_TICK as DEFAULT_TICK,
  CLI_SERVE_MAX_BODY_BYTES as DEFAULT_MAX_BODY_BYTES,
  CLI_SERVE_REQUEST_TIMEOUT_MS as DEFAULT_REQUEST_TIMEOUT_MS,
  CLI_SERVE_SAFETY_MARGIN_MS as DEFAULT_SAFETY_MARGIN_MS,
} from '../cli-defaults.ts';
import type { CommandContext, RegisterCommand } from './context.ts';
import { durationOpt, intOpt, list } from './options.ts';

/** an action that loads its implementation when the command runs; commander's arguments are passed on */
function lazy<A extends unknown[]>(
  ctx: CommandContext,
  load: () => Promise<(ctx: CommandContext, ...args: A) => Promise<void>>,
) {
  return async (...args: A): Promise<void> => {
    const run = await load();
    await run(ctx, ...args);
  };
}

const PARK_OPTION =
  'park a rotation at a long wait (its next gate check at least defaults.park.after away): save it with its wake time, release the lock, exit 0 with outcome "waiting"; any worker continues it then';
const PARK_HELP = `
Without --park the rotation waits here, with a live progress line, until its gates pass or time out.
With --park (what daemon, serve and the Lambda always do) a wait whose next check is at least
defaults.park.after away (default 30s) ends this run: outcome "waiting" (exit 0), the rotation saved
with its wake time and its deadlines; the daemon, a scheduled run or \`keyrotor resume\` continues it.`;

export const registerRotate: RegisterCommand = (ctx) => {
  ctx.program
    .command('rotate')
    .description('rotate every key that is due, or the named keys with --now')
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--now', 'rotate now even if not due')
    .option(
      '--leaked',
      'the current key is compromised: skip consumer gates, revoke as soon as the new key serves, never restore it (needs --now)',
    )
    .option(
      '--revoke-first',
      'with --now --leaked: delete the leaked key at once, then issue, stage, verify and promote the new key (consumers fail until it is served)',
    )
    .option('--dry-run', 'print the plan and change nothing')
    .option('--json', 'print exactly one JSON document on stdout: { "results": [...] }')
    .option('--full', 'if a key was only bootstrapped (its store was empty), rotate it once more so every stage runs')
    .option('--concurrency <n>', 'keys rotated at the same time', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 256)
        throw new KeyrotorError('USAGE', `--concurrency must be an integer from 1 to 256 (got ${JSON.stringify(v)})`);
      return n;
    })
    .option('--park', PARK_OPTION)
    .addHelpText('after', ROTATE_HELP + PARK_HELP)
    .action(lazy(ctx, async () => (await import('./rotate.ts')).runRotate));
};

const ROTATE_HELP = `
Leak response (a key was exposed):
  keyrotor rotate --now --leaked <key>
      consumers keep working: the new key is issued, staged, verified and promoted, then the leaked
      key is deleted and checked dead. It stays alive for that critical path (create, verify, delete,
      check: about 4 issuer requests), never longer; no consumer gate waits, it is never restored.
  keyrotor rotate --now --leaked --revoke-first <key>
      for a key under active abuse: the leaked key is deleted first (dead after one request, checked
      with a second), then the new key is issued, staged, verified and promoted. Consumers have NO
      working key in between; the result and the audit record say for how long (consumersWithoutKeyMs).
  A transient issuer error does not end either: the create is reconciled by its unique name and tried
  again within defaults.retry.budget (2m).`;

export const registerResume: RegisterCommand = (ctx) => {
  ctx.program
    .command('resume')
    .description('finish or roll back unfinished rotations (after a crash); never starts a new one')
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option(
      '--json',
      'print exactly one JSON document on stdout: { "results": [...] } (outcome "skipped" = nothing to resume)',
    )
    .option('--now', 'continue parked rotations now, before their wake time (check their gate at once)')
    .option('--park', PARK_OPTION)
    .addHelpText(
      'after',
      `
An unfinished rotation is one whose snapshot is still in the state store (the process died, was
killed, or paused). resume picks it up at the stage it was in: every stage is idempotent, so the
stage that was in flight is simply run again. A crash between creating the new key and storing it
loses the value: that key is deleted and the rotation issues a new one under the same rotation id. A lock held by a dead process is
taken over at once when that process ran on this host (same boot; pid gone or reused), else once
its lease expires (defaults.lease.ttl); until then resume exits 3. Ctrl-C pauses again (exit 5).
A rotation parked at a health gate (a durable wait) is continued once its wake time has come
(\`keyrotor status\` shows it); before that it is reported "waiting" and left alone, unless --now.
${PARK_HELP}`,
    )
    .action(lazy(ctx, async () => (await import('./resume.ts')).runResume));
};

export const registerConfirm: RegisterCommand = (ctx) => {
  ctx.program
    .command('confirm')
    .description(
      'answer a manual health gate: confirm that consumers moved to the new key (the old key may be revoked), or --reject to roll back',
    )
    .argument('<target>', 'key name (its running rotation) or rotation id (rot-...)')
    .option('--reject', 'reject: the rotation rolls back and the old key stays current')
    .option('--reason <text>', 'why, kept with the decision and shown in the gate observation')
    .option('--json', 'print the recorded decision as one JSON document')
    .addHelpText(
      'after',
      `
The decision is written to <stateDir>/confirm/<key>.<rotationId>.json; the manual gate of the running
rotation picks it up on its next poll (also after a restart). A rotation parked at its gate (a
durable wait) is woken: its wake time is cleared, so the next worker run (daemon tick, scheduled run,
\`keyrotor resume\`) checks the gate at once. A decision cannot be changed once
recorded. Run it against the same state dir as the rotation (same machine or shared volume); with a
postgres or dynamodb state backend the decision is stored there instead (run it from any machine).

Exit codes: 0 recorded (or already recorded), 2 no such key or no rotation in progress, or a different
decision was already recorded.`,
    )
    .action(lazy(ctx, async () => (await import('./confirm.ts')).runConfirm));
};

export const registerStatus: RegisterCommand = (ctx) => {
  ctx.program
    .command('status')
    .description(
      'show per key: current key id, age vs schedule, next due, last outcome, any unfinished rotation and what it waits for',
    )
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option(
      '--json',
      'print { "keys": [ { "name", "currentKeyId", "lastRotatedAt", "nextDueAt", "lastOutcome", ... } ] } on stdout',
    )
    .action(lazy(ctx, async () => (await import('./status.ts')).runStatus));
};

export const registerAudit: RegisterCommand = (ctx) => {
  const audit = ctx.program
    .command('audit')
    .description('the audit trail of every rotation (hash-chained JSONL in the state dir): `audit verify`')
    .action(() => {
      throw new KeyrotorError(
        'USAGE',
        'keyrotor audit needs a subcommand: `keyrotor audit verify` (past rotations: `keyrotor history`)',
      );
    });

  audit
    .command('verify')
    .description('check the hash chain of the audit log; name the first broken record')
    .option('--json', 'print the verification report as JSON on stdout')
    .addHelpText(
      'after',
      `
Every record carries the hash of the one before it; a head file names the last record appended.
An edited, deleted, inserted or reordered record, or records cut off the end, break the chain.
A torn last line (a crash in the middle of an append) is a warning: it was never acknowledged, and
the next append cuts it off and records a repair.
Exit codes: 0 intact, 1 broken (the first broken record is named), 2 usage/config.`,
    )
    .action(lazy(ctx, async () => (await import('./audit.ts')).runAuditVerify));

  ctx.program
    .command('history')
    .description('past rotations from the audit log: every stage, outcome, who ran it')
    .argument('[key]', 'only this key')
    .option('--json', 'print { "rotations": [ { "rotationId", "key", "outcome", "stages": [...] } ] } on stdout')
    .option('--limit <n>', 'only the last n rotations', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1)
        throw new KeyrotorError('USAGE', `--limit must be a positive integer (got ${JSON.stringify(v)})`);
      return n;
    })
    .action(lazy(ctx, async () => (await import('./audit.ts')).runHistory));
};

export const registerInventory: RegisterCommand = (ctx) => {
  ctx.program
    .command('inventory')
    .description('list every key of the configured OpenAI projects and flag the risky ones (read-only)')
    .argument('[keys...]', 'only the projects of these configured keys (default: all)')
    .option(
      '--json',
      'print { "projects": [...], "keys": [ { "keyId", "owner", "ageDays", "lastUsedAt", "expiresAt", "managedBy", "flags" } ], "flagged" } on stdout',
    )
    .option('--unused-days <n>', 'a key unused for this many days is stale (default 30)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 3650)
        throw new KeyrotorError('USAGE', `--unused-days must be an integer from 1 to 3650 (got ${JSON.stringify(v)})`);
      return n;
    })
    .addHelpText(
      'after',
      `
Flags: unmanaged (not made by keyrotor and not current for a configured key), orphaned (made by
keyrotor but neither current nor part of a running rotation), stale (unused for --unused-days),
no_expiry, user_owned (should be a service-account key).
Exit codes: 0 nothing flagged, 1 a key is flagged (or a project could not be listed), 2 usage/config.`,
    )
    .action(lazy(ctx, async () => (await import('./inventory.ts')).runInventory));
};

export const registerCheck: RegisterCommand = (ctx) => {
  ctx.program
    .command('check')
    .description(
      'preflight: the issuer can list (and create), the service account exists, every store is reachable and writable, the gates answer',
    )
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--json', 'print { "ok", "checks": [ { "key", "check", "status", "detail", "fix"? } ] } on stdout')
    .addHelpText(
      'after',
      `
One line per check: ok | warn | FAIL | skip, the key, the check, what was seen, and "→ fix: ..." when
it fails. Read-only: nothing is created, written or locked.
Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 usage/config.`,
    )
    .action(lazy(ctx, async () => (await import('./check.ts')).runCheck));
};

export const registerSweep: RegisterCommand = (ctx) => {
  ctx.program
    .command('sweep')
    .description(
      'delete orphan keys: issuer keys named keyrotor.<key>.<rotationId> that no rotation owns and no store serves',
    )
    .argument('[keys...]', 'key names from the config (default: all keys)')
    .option('--dry-run', 'list what would be deleted; change nothing (an unfinished rotation is not resumed either)')
    .option(
      '--json',
      'print exactly one JSON document on stdout: { "keys": [ { "key", "outcome", "entries": [...] } ] }',
    )
    .addHelpText(
      'after',
      `
Never deleted: a key whose name lacks keyrotor's marker for a configured key; a key that is current
or pending in any configured store (or current in the state record, or adopted); a key of an
unfinished rotation (that rotation is resumed first, which finishes it or discards its new key);
anything at all for a key whose stores cannot all be read. The key's lock is held while sweeping.

outcome per key: clean (no orphans) | swept (orphans deleted, or listed with --dry-run)
                 | incomplete (a delete or a read failed; nothing unsafe was done) | locked
Exit codes: 0 clean/swept, 1 incomplete (or a resumed rotation rolled back), 2 usage/config,
3 locked, 4 a resumed rotation needs attention.
`,
    )
    .action(lazy(ctx, async () => (await import('./sweep.ts')).runSweep));
};

export const registerAdopt: RegisterCommand = (ctx) => {
  ctx.program
    .command('adopt')
    .description(
      'tell keyrotor what the value in the store is: an issuer key made by hand (--key-id), or a placeholder that is no key (--placeholder)',
    )
    .argument('<key>', 'key name from the config')
    .option('--key-id <id>', 'issuer key id of the value that is current in the store')
    .option(
      '--placeholder',
      'the current value is a dummy (e.g. CHANGE_ME written by Terraform), not a key: the next rotation bootstraps over it',
    )
    .option('--reason <text>', 'why, kept in the audit trail')
    .addHelpText(
      'after',
      `
Exactly one of --key-id or --placeholder. Both are recorded in the key's state record and the audit
trail. --placeholder refuses a value that keyrotor stored, that was adopted as a key, or that the
issuer recognises as one of its keys. After it, the first rotation bootstraps over the placeholder:
nothing is ever revoked for it (it has no issuer key id), and a rollback puts back exactly what the
store held before (the placeholder), as before the rotation.`,
    )
    .action(lazy(ctx, async () => (await import('./adopt.ts')).runAdopt));
};

export const registerServe: RegisterCommand = (ctx) => {
  const env = ctx.io.env;
  ctx.program
    .command('serve')
    .description(
      'HTTP server for Cloud Run: POST /rotate (Cloud Scheduler), POST /pubsub (Secret Manager SECRET_ROTATE), GET /healthz',
    )
    .addOption(
      new Option('--port <port>', 'port to listen on (0 = any free port)')
        .default(env.PORT ?? '8080')
        .argParser(intOpt('--port', 0, 65535)),
    )
    .option('--host <address>', 'address to bind', env.KEYROTOR_SERVE_HOST ?? '0.0.0.0')
    .option('--audience <aud...>', 'accepted OIDC audience(s), e.g. the service URL', list(env.KEYROTOR_OIDC_AUDIENCE))
    .option(
      '--allowed-email <email...>',
      "service account(s) allowed to call (the token's verified email)",
      list(env.KEYROTOR_OIDC_EMAILS),
    )
    .option(
      '--allow-any-google-identity',
      'accept any Google identity holding a token for the audience (not recommended)',
    )
    .option('--jwks-url <url>', "OIDC signing keys (default Google's)", env.KEYROTOR_OIDC_JWKS_URL)
    .option(
      '--token-env <name>',
      'env var holding the shared bearer token',
      env.KEYROTOR_SERVE_TOKEN_ENV ?? 'KEYROTOR_SERVE_TOKEN',
    )
    .addOption(
      new Option('--max-body <bytes>', 'largest accepted request body')
        .default(env.KEYROTOR_SERVE_MAX_BODY ?? String(DEFAULT_MAX_BODY_BYTES))
        .argParser(intOpt('--max-body', 256, 10 * 1024 * 1024)),
    )
    .addOption(
      new Option('--request-timeout <duration>', "the platform's request timeout: rotations pause before it")
        .default(env.KEYROTOR_SERVE_REQUEST_TIMEOUT ?? `${DEFAULT_REQUEST_TIMEOUT_MS / 1000}s`)
        .argParser(durationOpt('--request-timeout')),
    )
    .addOption(
      new Option('--safety-margin <duration>', 'stop this long before the request timeout')
        .default(`${DEFAULT_SAFETY_MARGIN_MS / 1000}s`)
        .argParser(durationOpt('--safety-margin')),
    )
    .addHelpText('after', SERVE_HELP)
    .action(lazy(ctx, async () => (await import('./serve.ts')).runServe));
};

export const registerDaemon: RegisterCommand = (ctx) => {
  const env = ctx.io.env;
  ctx.program
    .command('daemon')
    .description(
      'run as a scheduler: rotate due keys on a cron tick with jitter, never overlapping; SIGTERM pauses safely',
    )
    .option('--tick <cron>', 'cron pattern of the tick', env.KEYROTOR_DAEMON_TICK ?? DEFAULT_TICK)
    .option(
      '--jitter <duration>',
      'random delay before each run (0 = none)',
      env.KEYROTOR_DAEMON_JITTER ?? `${DEFAULT_JITTER_MS / 1000}s`,
    )
    .option('--timezone <tz>', 'IANA time zone of the tick pattern', env.KEYROTOR_DAEMON_TIMEZONE)
    .option('--no-run-at-start', 'wait for the first tick instead of running at once')
    .addOption(
      new Option('--concurrency <n>', 'keys rotated at the same time').argParser((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 256)
          throw new KeyrotorError('USAGE', `--concurrency must be an integer from 1 to 256 (got ${JSON.stringify(v)})`);
        return n;
      }),
    )
    .option('--json', 'print each run as one JSON line on stdout: { "results": [...] }')
    .addOption(
      new Option('--metrics-port <port>', 'serve GET /metrics and GET /healthz on this port (off by default)')
        .argParser(intOpt('--metrics-port', 0, 65535))
        .default(env.KEYROTOR_DAEMON_METRICS_PORT),
    )
    .option(
      '--metrics-host <host>',
      'address the metrics port binds',
      env.KEYROTOR_DAEMON_METRICS_HOST ?? DEFAULT_METRICS_HOST,
    )
    .addHelpText('after', DAEMON_HELP)
    .action(lazy(ctx, async () => (await import('./daemon.ts')).runDaemon));
};

export const registerValidate: RegisterCommand = (ctx) => {
  ctx.program
    .command('validate')
    .description(
      'check the config file (every problem at once, each with file:line:col, and that every environment variable it names is set); exit 0 when valid, 2 otherwise',
    )
    .action(lazy(ctx, async () => (await import('./validate.ts')).runValidate));

  ctx.program
    .command('schema')
    .description('print the JSON Schema of rotation.config.yaml (for editor completion)')
    .action(lazy(ctx, async () => (await import('./validate.ts')).runSchema));
};

const DAEMON_HELP = `
Every tick resumes unfinished rotations, then rotates each key whose schedule.every has passed (the
same rule as \`keyrotor rotate\`), after a random jitter. Runs never overlap: a tick during a run is
skipped. One run starts right away unless --no-run-at-start.

Durable waits: a rotation whose next health-gate check is at least defaults.park.after (30s) away is
parked (saved with its wake time, its lock released) instead of held in memory; the daemon runs
again (without jitter) when the earliest parked rotation wakes, if that comes before the next tick.

SIGTERM / SIGINT: no new run starts; running rotations stop at the next safe point and stay
in_progress in the state store; the next start resumes them. Exits 0.

Metrics (opt-in, --metrics-port): GET /metrics is Prometheus text (rotations, stage timings and
failures, key age and schedule, process CPU/memory/event loop); GET /healthz answers 200 while the
daemon runs and 503 once it stops. No authentication: it binds ${DEFAULT_METRICS_HOST} unless
--metrics-host says otherwise (the metrics hold key names and ids, never a secret value).

Environment (flags win):
  KEYROTOR_DAEMON_TICK          cron pattern of the tick (default "${DEFAULT_TICK}")
  KEYROTOR_DAEMON_JITTER        jitter before each run (default ${DEFAULT_JITTER_MS / 1000}s)
  KEYROTOR_DAEMON_TIMEZONE      time zone of the pattern (default the host's)
  KEYROTOR_DAEMON_METRICS_PORT  --metrics-port
  KEYROTOR_DAEMON_METRICS_HOST  --metrics-host (default ${DEFAULT_METRICS_HOST})
`;

const SERVE_HELP = `
Routes:
  GET  /healthz   liveness (no authentication)
  POST /rotate    rotate every due key (Cloud Scheduler); body {} or { "keys": [...], "now": true }
  POST /pubsub    Pub/Sub push of Secret Manager notifications: SECRET_ROTATE rotates the key whose
                  gcp-secret-manager store is that secret; other event types are acknowledged

Authentication (every route but /healthz): a Google-signed OIDC ID token for one of the --audience
values, from one of the --allowed-email identities, or the bearer token held in the env var named by
--token-env (compared in constant time). At least one must be configured.

Environment (flags win):
  PORT                          port (Cloud Run sets it)
  KEYROTOR_SERVE_HOST           bind address
  KEYROTOR_OIDC_AUDIENCE        audiences, comma-separated
  KEYROTOR_OIDC_EMAILS          allowed caller e-mails, comma-separated
  KEYROTOR_OIDC_JWKS_URL        signing keys URL (default Google's)
  KEYROTOR_SERVE_TOKEN_ENV      name of the env var holding the bearer token (default KEYROTOR_SERVE_TOKEN)
  KEYROTOR_SERVE_MAX_BODY       body limit in bytes
  KEYROTOR_SERVE_REQUEST_TIMEOUT  the platform's request timeout (Cloud Run: the service timeout)
`;

export const registerState: RegisterCommand = (ctx) => {
  const state = ctx.program
    .command('state')
    .description('the state backend (file, postgres, dynamodb): `state init`, `state export`, `state import`')
    .action(() => {
      throw new KeyrotorError(
        'USAGE',
        'keyrotor state needs a subcommand: `keyrotor state init`, `keyrotor state export`, `keyrotor state import <file>`',
      );
    });

  state
    .command('init')
    .description("create (or migrate) the configured state backend's schema or table; idempotent")
    .option('--json', 'print { "backend", "changed", "steps" } on stdout')
    .addHelpText(
      'after',
      `
postgres: creates the schema (state.schema) and applies keyrotor's versioned migrations in one
transaction (a schema written by a newer keyrotor is refused, exit 2). dynamodb: creates the table
(pk S HASH, sk S RANGE, PAY_PER_REQUEST, TTL attribute ttl), waits until it is active, and writes
its layout version. file: nothing to do. See docs/state-backends.md.
Exit codes: 0 done (or nothing to do), 2 config, unreachable backend, missing permission or newer schema.`,
    )
    .action(lazy(ctx, async () => (await import('./state.ts')).runStateInit));

  state
    .command('export')
    .description(
      'print every key record, the audit trail and the pending webhook outbox (references only, never secret values) as JSON lines',
    )
    .option('--out <file>', 'write to this new file (mode 0600) instead of stdout')
    .addHelpText(
      'after',
      `
Moves state between backends: \`keyrotor -c old.yaml state export --out s.jsonl\`, then
\`keyrotor -c new.yaml state import s.jsonl\`. The audit chain goes along intact (import writes it only into an
empty audit trail). Pending webhook notifications go along with their ids and attempt counts (delivered
ones do not). Leases are not exported. Writes format keyrotor-state-export/2 (a keyrotor that reads only
/1 refuses it, exit 2; this one still imports /1 files).
Exit codes: 0 exported, 2 config/backend problem or --out exists.`,
    )
    .action(lazy(ctx, async () => (await import('./state.ts')).runStateExport));

  state
    .command('import')
    .description(
      'write the key records, audit chain and pending outbox of a `state export` file into the configured backend',
    )
    .argument('<file>', 'a file written by `keyrotor state export`')
    .option('--overwrite', 'replace keys that already have state in this backend')
    .option('--json', 'print { "backend", "imported", "active", "outbox", "outboxAlreadyPending", "audit" } on stdout')
    .addHelpText(
      'after',
      `
The whole file is checked first; a key that already has state is refused (nothing is written)
unless --overwrite. Each key is written under its lease: a key being rotated right now is LOCKED.
Pending webhook notifications keep their ids: one the backend already holds stays one entry.
Exit codes: 0 imported, 2 bad file, config or backend problem, 3 a key's lease is held.`,
    )
    .action(lazy(ctx, async () => (await import('./state.ts')).runStateImport));
};

export const COMMANDS: RegisterCommand[] = [
  registerRotate,
  registerResume,
  registerConfirm,
  registerStatus,
  registerAudit,
  registerInventory,
  registerCheck,
  registerSweep,
  registerAdopt,
  registerServe,
  registerDaemon,
  registerValidate,
  registerState,
];
