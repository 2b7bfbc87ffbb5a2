import { z } from 'zod';
import { duration, envName } from '../../../src/core/config-fields.ts';

/**
 * Run a check program (no shell): exit 0 = consumers are on the new key. It gets the fingerprints and
 * key ids in its environment, never the key itself.
 */
export const commandGateSchema = z
  .object({
    type: z.literal('command'),
    name: z.string().min(1).optional(),
    /** argv: the program and its arguments, e.g. `[./check-consumers.sh, --region, eu]`; a program
     *  path with a `/` is relative to the config file, a bare name is looked up in PATH */
    command: z.array(z.string().min(1)).min(1, 'the command needs at least the program'),
    /** extra environment variables passed through by name (the program gets a minimal environment:
     *  PATH, HOME, LANG, LC_ALL, TZ, TMPDIR and the KEYROTOR_* variables) */
    passEnv: z.array(envName).default([]),
    /** working directory, relative to the config file (default: the config file's folder) */
    cwd: z.string().min(1).optional(),
    /** absolute deadline for the whole wait */
    timeout: duration.default(10 * 60_000),
    /** time between runs (backs off to 4x) */
    interval: duration.default(15_000),
    /** one run is killed (with its process group) after this long and counts as a failure */
    runTimeout: duration.default(60_000),
  })
  .strict();
export type CommandGateConfig = z.output<typeof commandGateSchema>;
