import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { GateDeps, HealthGate, ProviderContext } from '../../../src/core/ports.ts';
import { Secret } from '../../../src/core/secret.ts';
import { createHttpGateImpl, type StreakMemory } from './http.gate.ts';
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
  return createHttpGateImpl({ cfg, name, headers, ca, memory: streakMemory(ctx, name) });
}

/**
 * The streak kept as one remembered fact of the key (`http.<gate>`: rotation id and rounds in a row),
 * written under the rotation's lease when it changes, read fresh by the first check of a process.
 */
function streakMemory(ctx: ProviderContext, gateName: string): StreakMemory {
  const fact = `http.${gateName}`;
  return {
    async load(rotationId) {
      const text = ctx.providerState.fresh ? await ctx.providerState.fresh(fact) : ctx.providerState.get(fact);
      if (!text) return undefined;
      try {
        const v = JSON.parse(text) as { rotationId?: unknown; streak?: unknown };
        return v.rotationId === rotationId &&
          typeof v.streak === 'number' &&
          Number.isInteger(v.streak) &&
          v.streak >= 0
          ? v.streak
          : undefined;
      } catch {
        return undefined; // unreadable: count afresh (stricter)
      }
    },
    async save(rotationId, streak) {
      try {
        await ctx.providerState.set(fact, JSON.stringify({ rotationId, streak }));
      } catch (e) {
        ctx.logger.warn(
          { gate: gateName, err: e instanceof Error ? e.message : String(e) },
          'http gate: could not remember the streak (kept in memory only)',
        );
      }
    },
  };
}
