/**
 * A Logger that keeps every line as JSON in `lines` (tests capture them, so the global canary scan
 * reads every log line the code under test wrote).
 */
import type { Logger } from '../../src/core/ports.ts';

export function linesLogger(lines: string[], bindings: object = {}): Logger {
  const write = (level: string) => (obj: object, msg?: string) =>
    void lines.push(JSON.stringify({ level, ...bindings, ...obj, msg }));
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    child: (b) => linesLogger(lines, { ...bindings, ...b }),
  };
}
