/**
 * One pino base logger. Logs go to stderr (stdout is reserved for results, e.g. `--json`), as JSON
 * unless stderr is a TTY, where pino-pretty renders compact lines. `redact` is the second line of
 * defence; the first is that secret values are `Secret` objects that print as `[REDACTED]`.
 */
import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino';
import type { Logger } from '../core/ports.ts';

export const REDACT_PATHS = [
  'secret',
  'value',
  'apiKey',
  'adminKey',
  'authorization',
  '*.secret',
  '*.value',
  '*.apiKey',
  '*.adminKey',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
];

export interface LogOptions {
  level?: string;
  /** force pretty (TTY) or JSON output; default: pretty when stderr is a TTY */
  pretty?: boolean;
  /** where to write (tests); default stderr */
  destination?: DestinationStream | NodeJS.WritableStream;
  base?: Record<string, unknown>;
}

export async function createLogger(opts: LogOptions = {}): Promise<PinoLogger> {
  const level = opts.level ?? process.env.KEYROTOR_LOG_LEVEL ?? 'info';
  const pretty = opts.pretty ?? (process.stderr.isTTY === true && !process.env.CI);
  const common = {
    level,
    base: opts.base ?? null,
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (pretty) {
    const { default: pinoPretty } = await import('pino-pretty');
    const stream = pinoPretty({
      destination: opts.destination ?? 2,
      colorize: !process.env.NO_COLOR && process.stderr.isTTY === true,
      translateTime: 'HH:MM:ss',
      ignore: 'pid,hostname,rotationId',
      singleLine: true,
      sync: true,
    });
    return pino(common, stream);
  }
  return pino(common, opts.destination ?? pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything (library use, tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
