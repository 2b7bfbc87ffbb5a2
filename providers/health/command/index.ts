import { access, constants, stat } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { createCommandGateImpl } from './command.gate.ts';
import type { CommandGateConfig } from './command.schema.ts';

/**
 * Runs a check program until it exits 0. A program given as a path (with a `/`) must exist and be
 * executable when the gate is built, so a typo fails before the rotation changes anything.
 */
export async function createCommandGate(
  cfg: CommandGateConfig,
  ctx: ProviderContext,
  _deps: GateDeps,
): Promise<HealthGate> {
  const name = cfg.name ?? cfg.type;
  const [program, ...args] = cfg.command as [string, ...string[]];
  const resolved = program.includes('/') || program.includes(path.sep) ? path.resolve(ctx.configDir, program) : program;
  if (resolved !== program || path.isAbsolute(program)) {
    try {
      await access(resolved, constants.X_OK);
      if (!(await stat(resolved)).isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `command gate "${name}" of ${ctx.keyName}: ${resolved} ${code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not executable' : `cannot be run (${code ?? 'error'})`}`,
        {
          hint:
            code === 'EACCES'
              ? `chmod +x ${resolved}`
              : 'fix `command` in the gate config (a path is relative to the config file)',
        },
      );
    }
  }
  const cwd = cfg.cwd ? path.resolve(ctx.configDir, cfg.cwd) : ctx.configDir;
  return createCommandGateImpl({ cfg, name, argv: [resolved, ...args], cwd, env: ctx.env });
}
