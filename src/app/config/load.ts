import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import type { ZodError } from 'zod';
import { KeyrotorError } from '../../core/errors.ts';
import { configSchema, type RawConfig, type ResolvedKey } from './schema.ts';

export interface LoadedConfig {
  file: string;
  dir: string;
  stateDir: string;
  raw: RawConfig;
  keys: ResolvedKey[];
}

export const DEFAULT_CONFIG_FILE = 'rotation.config.yaml';

/**
 * Read, interpolate `${ENV}` / `${ENV:-default}`, validate. Every problem is one line:
 * `rotation.config.yaml:14:7 keys[0].stores[1].region: required`.
 */
export async function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new KeyrotorError(
      code === 'ENOENT' ? 'CONFIG_NOT_FOUND' : 'CONFIG_INVALID',
      `${file}: cannot read config (${code ?? 'error'})`,
      {
        cause: e,
        hint: code === 'ENOENT' ? 'pass --config <file> or create rotation.config.yaml' : undefined,
      },
    );
  }
  return parseConfig(text, file, env);
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const where = (offset: number | undefined) => {
    if (offset === undefined) return file;
    const p = lc.linePos(offset);
    return `${file}:${p.line}:${p.col}`;
  };
  const first = doc.errors[0];
  if (first) throw new KeyrotorError('CONFIG_INVALID', `${where(first.pos[0])} ${first.message.split('\n')[0]}`);

  interpolate(doc.contents, env, where);
  const data: unknown = doc.toJS();
  const result = configSchema.safeParse(data);
  if (!result.success) throw new KeyrotorError('CONFIG_INVALID', formatZodError(result.error, doc.contents, where));

  const raw = result.data;
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const stateDir = path.resolve(dir, raw.stateDir);
  const keys = raw.keys.map<ResolvedKey>((k) => ({
    ...k,
    schedule: k.schedule ?? raw.defaults.schedule,
    grace: k.grace ?? raw.defaults.grace,
    defaults: raw.defaults,
  }));
  return { file: abs, dir, stateDir, raw, keys };
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function interpolate(node: YamlNode | null, env: NodeJS.ProcessEnv, where: (o: number | undefined) => string): void {
  if (!node) return;
  if (isMap(node) || isSeq(node)) {
    for (const item of node.items as unknown[]) {
      if (isMap(node)) interpolate((item as { value: YamlNode | null }).value, env, where);
      else interpolate(item as YamlNode, env, where);
    }
    return;
  }
  if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
    node.value = node.value.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      throw new KeyrotorError(
        'CONFIG_ENV_MISSING',
        `${where(node.range?.[0])} environment variable ${name} is not set`,
        {
          hint: `export ${name}=... or write \${${name}:-default}`,
        },
      );
    });
  }
}

function formatZodError(err: ZodError, root: YamlNode | null, where: (o: number | undefined) => string): string {
  const issue = err.issues[0]!;
  const p = issue.path.filter((s): s is string | number => typeof s !== 'symbol');
  // find the deepest YAML node along the path for a position
  let node: unknown = root;
  let offset: number | undefined = (root as { range?: [number] } | null)?.range?.[0];
  for (const seg of p) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((it) => isScalar(it.key) && it.key.value === seg);
      if (pair) {
        offset = (pair.key as { range?: [number] }).range?.[0] ?? offset;
        next = pair.value;
      }
    } else if (isSeq(node) && typeof seg === 'number') {
      next = node.items[seg];
      offset = (next as { range?: [number] } | undefined)?.range?.[0] ?? offset;
    }
    if (next === undefined) break;
    node = next;
  }
  const pathText = p.reduce<string>(
    (acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc ? `${acc}.${seg}` : seg),
    '',
  );
  let message = issue.message;
  if (issue.code === 'invalid_type' && /received undefined/.test(message)) message = 'required';
  const more = err.issues.length > 1 ? ` (+${err.issues.length - 1} more)` : '';
  return `${where(offset)} ${pathText || '(root)'}: ${message}${more}`;
}
