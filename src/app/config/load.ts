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

/** One problem in a config file: `rotation.config.yaml:14:7 keys[0].stores[1].region: required`. */
export interface ConfigProblem {
  code: 'CONFIG_INVALID' | 'CONFIG_ENV_MISSING';
  /** `file:line:col` (or just the file when there is no position) */
  at: string;
  /** e.g. `keys[0].stores[1].region` (empty for the whole file or a YAML syntax error) */
  path: string;
  message: string;
  /** where in the text, for ordering */
  offset: number;
}

/** the one-line form of a problem */
export function problemLine(p: ConfigProblem): string {
  return p.path ? `${p.at} ${p.path}: ${p.message}` : `${p.at} ${p.message}`;
}

/**
 * A config that is not valid: `message` is the first problem (plus how many more), `problems` all of
 * them (`keyrotor validate` prints each on its own line).
 */
export class ConfigError extends KeyrotorError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[], hint?: string) {
    const first = problems[0]!;
    const more = problems.length > 1 ? ` (+${problems.length - 1} more; keyrotor validate lists them all)` : '';
    const code = problems.some((p) => p.code === 'CONFIG_INVALID') ? 'CONFIG_INVALID' : 'CONFIG_ENV_MISSING';
    super(code, `${problemLine(first)}${more}`, hint ? { hint } : {});
    this.problems = problems;
  }
}

/**
 * Read, interpolate `${ENV}` / `${ENV:-default}`, validate. Every problem is one line:
 * `rotation.config.yaml:14:7 keys[0].stores[1].region: required`; a ConfigError carries all of them.
 */
export async function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  return parseConfig(await readConfigText(file), file, env);
}

/**
 * `keyrotor validate`: every problem of the config at once (syntax, schema, unknown keys, unset
 * `${VAR}`s) plus every environment variable the config names (`adminKeyEnv`, `urlEnv`,
 * `headersFromEnv`, `passEnv`, an explicit `masterKeyEnv`) that is not set. Throws ConfigError.
 */
export async function validateConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  const checked = checkConfig(await readConfigText(file), file, env, { namedEnv: true });
  if (checked.problems.length) throw new ConfigError(checked.problems);
  return checked.config!;
}

async function readConfigText(file: string): Promise<string> {
  const abs = path.resolve(file);
  try {
    return await readFile(abs, 'utf8');
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
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const checked = checkConfig(text, file, env, { namedEnv: false });
  if (checked.problems.length) {
    const first = checked.problems[0]!;
    const name = first.code === 'CONFIG_ENV_MISSING' ? /variable (\w+)/.exec(first.message)?.[1] : undefined;
    throw new ConfigError(checked.problems, name ? `export ${name}=... or write \${${name}:-default}` : undefined);
  }
  return checked.config!;
}

/**
 * Every problem of a config text, in this order: YAML syntax (then nothing else is checked), unset
 * `${VAR}`s, schema problems, and with `namedEnv` unset variables named by `*Env` fields; each group
 * in document order.
 */
export function checkConfig(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv,
  o: { namedEnv: boolean },
): { config?: LoadedConfig; problems: ConfigProblem[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const where = (offset: number | undefined) => {
    if (offset === undefined) return file;
    const p = lc.linePos(offset);
    return `${file}:${p.line}:${p.col}`;
  };
  if (doc.errors.length)
    return {
      problems: doc.errors.map((e) => ({
        code: 'CONFIG_INVALID' as const,
        at: where(e.pos[0]),
        path: '',
        message: e.message.split('\n')[0]!,
        offset: e.pos[0],
      })),
    };

  const envProblems: ConfigProblem[] = [];
  const unresolved = new Set<unknown>();
  interpolate(doc.contents, env, (node, name) => {
    unresolved.add(node);
    const offset = node.range?.[0] ?? 0;
    envProblems.push({
      code: 'CONFIG_ENV_MISSING',
      at: where(offset),
      path: '',
      message: `environment variable ${name} is not set`,
      offset,
    });
  });
  const data: unknown = doc.toJS();
  const result = configSchema.safeParse(data);
  if (!result.success) {
    // an issue about a value whose ${VAR} is unset is a consequence of that, already reported
    const schemaProblems = zodProblems(result.error, doc.contents, where).filter((p) => !unresolved.has(p.node));
    // without a parsed config, the variables named in the file itself (defaults are not known yet)
    const named = o.namedEnv ? namedEnvProblems(data, doc.contents, env, where) : [];
    return { problems: byOffset([...envProblems, ...schemaProblems, ...named]) };
  }

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
  const named = o.namedEnv ? namedEnvProblems(raw, doc.contents, env, where) : [];
  return { config: { file: abs, dir, stateDir, raw, keys }, problems: byOffset([...envProblems, ...named]) };
}

const byOffset = <T extends { offset: number }>(ps: T[]): T[] =>
  ps
    .map((p, i) => ({ p, i }))
    .sort((a, b) => a.p.offset - b.p.offset || a.i - b.i)
    .map((x) => x.p);

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function interpolate(
  node: YamlNode | null,
  env: NodeJS.ProcessEnv,
  missing: (node: YamlNode & { range?: [number, number, number] | null }, name: string) => void,
): void {
  if (!node) return;
  if (isMap(node) || isSeq(node)) {
    for (const item of node.items as unknown[]) {
      if (isMap(node)) interpolate((item as { value: YamlNode | null }).value, env, missing);
      else interpolate(item as YamlNode, env, missing);
    }
    return;
  }
  if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
    node.value = node.value.replace(ENV_REF, (m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      missing(node, name);
      return m;
    });
  }
}

/** the deepest YAML node along a path, and the offset to report (a map key's own position) */
function locate(root: YamlNode | null, p: readonly (string | number)[]): { node: unknown; offset: number | undefined } {
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
  return { node, offset };
}

function pathText(p: readonly (string | number)[]): string {
  return p.reduce<string>((acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc ? `${acc}.${seg}` : seg), '');
}

type LocatedProblem = ConfigProblem & { node: unknown };

function zodProblems(err: ZodError, root: YamlNode | null, where: (o: number | undefined) => string): LocatedProblem[] {
  const out: LocatedProblem[] = [];
  const issues = err.issues;
  const pathOf = (i: (typeof issues)[number]) => i.path.filter((s): s is string | number => typeof s !== 'symbol');
  const isMissing = (i: (typeof issues)[number]) =>
    (i.code === 'invalid_type' || i.code === 'invalid_union') && !written(root, pathOf(i));
  // an unknown key next to a missing field it is close to is most likely a typo of it
  const typoOf = new Map<string, string>();
  const guesses = new Map<(typeof issues)[number], Map<string, string>>();
  for (const issue of issues) {
    if (issue.code !== 'unrecognized_keys') continue;
    const p = pathOf(issue);
    const missing = issues
      .filter((o) => o.path.length === p.length + 1 && p.every((seg, i) => o.path[i] === seg) && isMissing(o))
      .map((o) => String(o.path[p.length]));
    const g = new Map<string, string>();
    for (const k of issue.keys) {
      const guess = closest(k, missing);
      if (guess) {
        g.set(k, guess);
        typoOf.set(pathText([...p, guess]), k);
      }
    }
    guesses.set(issue, g);
  }
  for (const issue of issues) {
    const p = pathOf(issue);
    if (issue.code === 'unrecognized_keys') {
      // one problem per unknown key, at that key
      for (const k of issue.keys) {
        const { node, offset } = locate(root, [...p, k]);
        const guess = guesses.get(issue)?.get(k);
        out.push({
          code: 'CONFIG_INVALID',
          at: where(offset),
          path: pathText(p) || '(root)',
          message: `unknown key "${k}"${guess ? ` (did you mean "${guess}"?)` : ''}`,
          offset: offset ?? 0,
          node,
        });
      }
      continue;
    }
    const { node, offset } = locate(root, p);
    let message = issue.message;
    if (isMissing(issue)) {
      const typo = typoOf.get(pathText(p));
      message = typo ? `required (is the unknown key "${typo}" a typo of it?)` : 'required';
    }
    out.push({
      code: 'CONFIG_INVALID',
      at: where(offset),
      path: pathText(p) || '(root)',
      message,
      offset: offset ?? 0,
      node,
    });
  }
  return out;
}

/** the candidate within edit distance 2 of `word` (the nearest), if any */
function closest(word: string, candidates: string[]): string | undefined {
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d <= 2 && (!best || d < best.d)) best = { c, d };
  }
  return best?.c;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * `*Env` fields name environment variables the run reads (an admin key, a webhook URL, headers, the
 * variables passed to a command gate). Unset ones are problems. A defaulted `masterKeyEnv` is not: the
 * file store then uses its generated key file (see providers/stores/file/file.master-key.ts).
 */
const OPTIONAL_WHEN_DEFAULTED = new Set(['masterKeyEnv']);

function namedEnvProblems(
  raw: unknown,
  root: YamlNode | null,
  env: NodeJS.ProcessEnv,
  where: (o: number | undefined) => string,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const check = (p: (string | number)[], name: unknown, what: string) => {
    if (typeof name !== 'string') return;
    if (env[name]?.trim()) return;
    const { offset } = locate(root, p);
    out.push({
      code: 'CONFIG_ENV_MISSING',
      at: where(offset),
      path: pathText(p),
      message: `environment variable ${name} (${what}) is not set`,
      offset: offset ?? 0,
    });
  };
  const walk = (v: unknown, p: (string | number)[]) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, [...p, i]));
    if (!v || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const at = [...p, k];
      if (k.endsWith('FromEnv') && x && typeof x === 'object' && !Array.isArray(x)) {
        for (const [h, n] of Object.entries(x as Record<string, unknown>)) check([...at, h], n, `${k} ${h}`);
      } else if (k.endsWith('Env') && Array.isArray(x)) {
        x.forEach((n, i) => check([...at, i], n, k));
      } else if (k.endsWith('Env') && typeof x === 'string') {
        if (OPTIONAL_WHEN_DEFAULTED.has(k) && !written(root, at)) continue;
        check(at, x, k);
      } else walk(x, at);
    }
  };
  walk(raw, []);
  return out;
}

/** is this path written in the YAML (rather than filled in by a default)? */
function written(root: YamlNode | null, p: (string | number)[]): boolean {
  let node: unknown = root;
  for (const seg of p) {
    if (isMap(node)) node = node.items.find((it) => isScalar(it.key) && it.key.value === seg)?.value;
    else if (isSeq(node) && typeof seg === 'number') node = node.items[seg];
    else return false;
    if (node === undefined) return false;
  }
  return true;
}
