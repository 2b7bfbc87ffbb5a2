/**
 * What every CLI command module gets: IO, config loading, key selection, a lazily created logger and
 * the state store. Each command lives in its own file and registers itself on the program.
 *
 * Start-up cost: a command module imports only what declaring the command needs (commander, the
 * error type, small helpers). Everything a command needs to *run* (config loading, the logger, the
 * state store, run.ts, providers) is loaded with import() inside its action, so `keyrotor --help`
 * and usage errors load none of it.
 *
 * Resources: one `main()` call owns every connection its command opens (the state store's pool, an
 * audit trail's, what the observers opened). The context records how to release each (`own`; done
 * for you by `stateStore` and `auditLog`) and `main()` releases them all when the command ends, on
 * every path, errors included. The CLI process would exit anyway; an embedder calling `main(argv,
 * io)` again and again must not pile up database connections.
 */
import type { Command } from 'commander';
import type { LoadedConfig } from '../../app/config/load.ts';
import type { ResolvedKey } from '../../app/config/schema.ts';
import { KeyrotorError } from '../../core/errors.ts';
import type { Logger, StateStore } from '../../core/ports.ts';
import type { AuditLog } from '../../app/audit/sink.ts';
import { liveArea, progressIntervalFrom, progressObserver, type LiveArea } from '../../app/progress.ts';

export interface CliIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** stderr is a terminal: live progress lines instead of rate-limited progress log lines */
  stderrIsTTY?: boolean;
  /** its width */
  columns?: number;
}

export interface CommandContext {
  /** on a TTY, `io.stderr` prints above the live progress lines (see `live`) */
  io: CliIO;
  /** on a TTY: the live progress lines at the bottom of stderr */
  live?: LiveArea;
  program: Command;
  /** load and validate the config named by --config */
  config(): Promise<LoadedConfig>;
  /** the named keys (all when none); unknown names are UNKNOWN_KEY (exit 2) */
  pickKeys(cfg: LoadedConfig, names: string[]): ResolvedKey[];
  logger(): Promise<Logger>;
  /** the config's state store; released (its connections closed) when `main()` ends */
  stateStore(cfg: LoadedConfig): Promise<StateStore>;
  /** the config's audit trail; released when `main()` ends */
  auditLog(cfg: LoadedConfig): Promise<AuditLog>;
  /** release this when `main()` ends (last owned, first released) */
  own(release: () => Promise<void>): void;
  /** set the process exit code (the highest one wins) */
  exit(code: number): void;
  /** the command prints JSON on stdout: errors are also reported as one JSON document */
  setJson(on: boolean): void;
}

export type RegisterCommand = (ctx: CommandContext) => void;

/** What one `main()` call opened, released in reverse order by `release()`, which never throws. */
export interface Resources {
  own(release: () => Promise<void>): void;
  release(): Promise<void>;
}

export function createResources(): Resources {
  const owned: (() => Promise<void>)[] = [];
  return {
    own(release) {
      owned.push(release);
    },
    async release() {
      // one at a time, newest first: the observers flush their webhook outbox through the state store
      for (let r = owned.pop(); r; r = owned.pop()) await r().catch(() => undefined);
    },
  };
}

export function makeContext(
  program: Command,
  rawIO: CliIO,
  state: { exitCode: number; json: boolean },
  resources: Resources = createResources(),
): CommandContext {
  let logger: Logger | undefined;
  // on a TTY every stderr write (messages, log lines) goes above the live progress lines
  const live = rawIO.stderrIsTTY ? liveArea(rawIO.stderr) : undefined;
  const io: CliIO = live ? { ...rawIO, stderr: (s) => live.print(s) } : rawIO;
  return {
    io,
    ...(live ? { live } : {}),
    program,
    config: async () => {
      const { loadConfig } = await import('../../app/config/load.ts');
      return loadConfig(program.opts<{ config: string }>().config, io.env);
    },
    pickKeys(cfg, names) {
      if (names.length === 0) return cfg.keys;
      return names.map((n) => {
        const k = cfg.keys.find((x) => x.name === n);
        if (!k)
          throw new KeyrotorError(
            'UNKNOWN_KEY',
            `unknown key "${n}" (configured: ${cfg.keys.map((x) => x.name).join(', ')})`,
          );
        return k;
      });
    },
    async logger() {
      const level = program.opts<{ logLevel?: string }>().logLevel;
      const { createLogger } = await import('../../app/log.ts');
      logger ??= await createLogger({
        ...(level ? { level } : {}),
        ...(io.env.KEYROTOR_LOG_PRETTY === '0' ? { pretty: false } : {}),
        ...(live ? { destination: await liveStream(live) } : {}),
      });
      return logger;
    },
    async stateStore(cfg) {
      const { createStateStore } = await import('../../app/state/index.ts');
      const store = createStateStore(cfg, io.env);
      if (store.close) resources.own(() => store.close!());
      return store;
    },
    async auditLog(cfg) {
      const { openAuditLog } = await import('../../app/audit/index.ts');
      const log = openAuditLog(cfg, {}, io.env);
      if (log.close) resources.own(() => log.close!());
      return log;
    },
    own: (release) => resources.own(release),
    exit(code) {
      state.exitCode = Math.max(state.exitCode, code);
    },
    setJson(on) {
      state.json = on;
    },
  };
}

/** A plain aligned table. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** A stream over the live area (pino and pino-pretty write log lines to it). */
async function liveStream(live: LiveArea): Promise<NodeJS.WritableStream> {
  const { Writable } = await import('node:stream');
  return new Writable({
    write(chunk: Buffer | string, _enc, done) {
      live.print(chunk.toString());
      done();
    },
  });
}

/**
 * What `rotate` and `resume` show while a rotation waits: a live line per waiting rotation on a TTY,
 * otherwise a log line at most every KEYROTOR_PROGRESS_INTERVAL (see src/app/progress.ts).
 */
export function cliProgress(ctx: CommandContext, logger: Logger): ReturnType<typeof progressObserver> {
  return progressObserver({
    tty: ctx.io.stderrIsTTY === true,
    write: ctx.io.stderr,
    ...(ctx.live ? { area: ctx.live } : {}),
    logger,
    intervalMs: progressIntervalFrom(ctx.io.env),
    ...(ctx.io.columns ? { columns: ctx.io.columns } : {}),
  });
}
