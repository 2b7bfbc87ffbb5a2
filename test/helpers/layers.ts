/**
 * The layer rule of ARCHITECTURE.md, as code: reads the imports of every product file (static,
 * `export … from`, type-only and dynamic `import()`) and reports each upward import, each reach into
 * a provider's internals from above the providers layer, each import between two provider folders,
 * and each import cycle, naming the file and the import.
 *
 *   entrypoints  src/entrypoints/**   CLI, Lambda, Cloud Run / serve, daemon, library and consumer API
 *   app          src/app/**           run, compose, due/leak, persistence, results, config, state, audit…
 *   workflows    workflows/**         the xstate machine and its stages (imports core only)
 *   providers    providers/**         issuers, stores, health gates; registry providers/index.ts
 *   core         src/core/**          ports, errors, secret, clock, duration, fs primitives, config fields
 *
 * A file may import its own layer or any layer below. workflows and providers sit side by side and do
 * not import each other. Above the providers layer, the only provider file anyone imports is the
 * registry `providers/index.ts`. A provider folder (`providers/<kind>/<name>/`) imports core, its own
 * folder and `providers/common/` only.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

export type Layer = 'core' | 'workflows' | 'providers' | 'app' | 'entrypoints';
export const RANK: Record<Layer, number> = { core: 0, workflows: 1, providers: 1, app: 2, entrypoints: 3 };
export const REGISTRY = 'providers/index.ts';

export function layerOf(file: string): Layer | undefined {
  if (file.startsWith('src/core/')) return 'core';
  if (file.startsWith('src/app/')) return 'app';
  if (file.startsWith('src/entrypoints/')) return 'entrypoints';
  if (file.startsWith('workflows/')) return 'workflows';
  if (file.startsWith('providers/')) return 'providers';
  return undefined;
}

/** `providers/stores/aws-secrets-manager/x.ts` -> `providers/stores/aws-secrets-manager/` (the registry and common/ have none) */
function providerFolder(file: string): string | undefined {
  const parts = file.split('/');
  if (parts[0] !== 'providers' || parts.length < 4 || parts[1] === 'common') return undefined;
  return parts.slice(0, 3).join('/') + '/';
}

/** repo-relative, '/'-separated paths of the files `file` imports (relative specifiers only) */
export function importsOf(root: string, file: string): string[] {
  const info = ts.preProcessFile(readFileSync(path.join(root, file), 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((s) => s.startsWith('./') || s.startsWith('../'))
    .map((s) => path.posix.normalize(path.posix.join(path.posix.dirname(file), s)));
}

export type Graph = Map<string, string[]>;

export function graphOf(root: string, files: string[]): Graph {
  return new Map(files.map((f) => [f, importsOf(root, f)]));
}

/** every violation of the rule in `graph`, one line each */
export function violations(graph: Graph): string[] {
  const out: string[] = [];
  for (const [file, imports] of graph) {
    const from = layerOf(file);
    if (!from) {
      out.push(
        `${file}: not in a layer (product code lives in src/core, src/app, src/entrypoints, workflows or providers)`,
      );
      continue;
    }
    for (const to of imports) {
      const layer = layerOf(to);
      if (!layer) {
        out.push(`${file}: imports ${to}, which is outside every layer (tests, bench and deploy are not product code)`);
      } else if (RANK[layer] > RANK[from]) {
        out.push(`${file}: imports ${to} (${from} -> ${layer}: upward)`);
      } else if (RANK[layer] === RANK[from] && layer !== from) {
        out.push(`${file}: imports ${to} (${from} -> ${layer}: workflows and providers do not import each other)`);
      } else if (layer === 'providers' && from !== 'providers' && to !== REGISTRY) {
        out.push(`${file}: imports ${to} (a provider's internals; go through the registry ${REGISTRY})`);
      } else if (layer === 'providers' && from === 'providers') {
        const own = providerFolder(file);
        const their = providerFolder(to);
        if (own && to === REGISTRY) out.push(`${file}: imports ${to} (a provider does not import the registry)`);
        else if (own && their && own !== their)
          out.push(`${file}: imports ${to} (a provider imports only its own folder, providers/common and core)`);
      }
    }
  }
  for (const cycle of cycles(graph)) out.push(`import cycle: ${cycle.join(' -> ')}`);
  return out;
}

/** elementary cycles found by a depth-first search (each reported once, from its smallest file) */
export function cycles(graph: Graph): string[][] {
  const found = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const to of graph.get(f) ?? []) {
      if (!graph.has(to)) continue;
      if (state.get(to) === 'open') {
        const ring = stack.slice(stack.indexOf(to));
        const start = ring.indexOf([...ring].sort()[0]!);
        const norm = [...ring.slice(start), ...ring.slice(0, start)];
        found.set(norm.join(' '), [...norm, norm[0]!]);
      } else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of [...graph.keys()].sort()) if (!state.has(f)) visit(f);
  return [...found.values()];
}
