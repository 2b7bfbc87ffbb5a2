import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { Secret } from '../../../src/core/secret.ts';
import { createHttpGateImpl } from './http.gate.ts';
import type { HttpGateConfig } from './http.schema.ts';

/**
 * Polls consumer endpoints until each reports the new key's fingerprint. Header values and the CA
 * file are resolved here, so a missing env var or file fails before the rotation changes anything.
 */
export async function createHttpGate(cfg: HttpGateConfig, ctx: ProviderContext, _deps: GateDeps): Promise<HealthGate> {
  const name = cfg.name ?? cfg.type;
  const headers: Record<string, Secret> = {};
  for (const [header, envName] of Object.entries(cfg.headers)) {
    const v = ctx.env[envName];
    if (v === undefined || v === '') {
      throw new KeyrotorError(
        'CONFIG_ENV_MISSING',
        `http gate "${name}" of ${ctx.keyName}: environment variable ${envName} (value of header ${header}) is not set`,
        {
          hint: `export ${envName}=... before running keyrotor`,
        },
      );
    }
    headers[header] = Secret.of(v);
  }
  let ca: string | undefined;
  if (cfg.caFile) {
    const file = path.resolve(ctx.configDir, cfg.caFile);
    try {
      ca = await readFile(file, 'utf8');
    } catch (e) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `http gate "${name}" of ${ctx.keyName}: cannot read caFile ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
        {
          cause: e,
        },
      );
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `http gate "${name}" of ${ctx.keyName}: caFile ${file} holds no PEM certificate`,
      );
    }
  }
  return createHttpGateImpl({ cfg, name, headers, ca });
}
