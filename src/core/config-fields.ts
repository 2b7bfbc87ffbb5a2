import { z } from 'zod';
import { parseDuration } from './duration.ts';

/** `90s`, `15m`, `2h`, `30d`, `1w`, `1h30m` or milliseconds; parsed to ms. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `invalid duration ${JSON.stringify(v)} (use e.g. 90s, 15m, 2h, 30d)` });
    return z.NEVER;
  }
  return ms;
});

/** Name of an environment variable (holds a secret we must never write into the config file). */
export const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

export const httpUrl = z.string().refine((s) => {
  try {
    const u = new URL(s);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}, 'must be an http(s) URL');
