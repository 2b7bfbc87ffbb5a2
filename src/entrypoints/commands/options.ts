/** Option parsers shared by the command declarations (index.ts) and actions: light, no I/O. */
import { parseDuration } from '../../core/duration.ts';
import { KeyrotorError } from '../../core/errors.ts';

export const list = (v: string | undefined) =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export function durationOpt(name: string) {
  return (v: string) => {
    const ms = parseDuration(v);
    if (ms === undefined)
      throw new KeyrotorError('USAGE', `${name} must be a duration like 300s or 5m (got ${JSON.stringify(v)})`);
    return ms;
  };
}

export function intOpt(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new KeyrotorError('USAGE', `${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(v)})`);
    return n;
  };
}
