/**
 * The layers of ARCHITECTURE.md hold: no product file imports from a layer above it, nothing above
 * the providers layer reaches past the registry, provider folders stay apart, and there is no import
 * cycle. The checker itself is shown to fail on each kind of violation (synthetic graphs below).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { graphOf, violations, type Graph } from '../helpers/layers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PRODUCT = execFileSync(
  'git',
  ['ls-files', '--cached', '--others', '--exclude-standard', '--', 'src', 'providers', 'workflows'],
  {
    cwd: ROOT,
    encoding: 'utf8',
  },
)
  .split('\n')
  .filter((f) => f.endsWith('.ts'));

describe('layers', () => {
  it('every product file imports only its own layer or below, providers only through the registry, and no cycle', () => {
    expect(PRODUCT.length).toBeGreaterThan(50);
    expect(violations(graphOf(ROOT, PRODUCT))).toEqual([]);
  });

  it('the checker names the file and the import of each kind of violation', () => {
    const g: Graph = new Map([
      ['src/core/ports.ts', ['src/app/run.ts']],
      ['src/app/run.ts', ['providers/stores/file/file.store.ts', 'src/core/ports.ts']],
      ['workflows/rotation/rotation.machine.ts', ['providers/index.ts']],
      ['providers/health/http/index.ts', ['providers/index.ts', 'providers/stores/file/file.crypto.ts']],
      ['providers/index.ts', ['providers/health/http/index.ts']],
      ['src/entrypoints/cli.ts', ['test/fakes/memory.ts']],
      ['src/odd.ts', []],
    ]);
    const v = violations(g);
    expect(v).toContain('src/core/ports.ts: imports src/app/run.ts (core -> app: upward)');
    expect(v).toContain(
      "src/app/run.ts: imports providers/stores/file/file.store.ts (a provider's internals; go through the registry providers/index.ts)",
    );
    expect(v).toContain(
      'workflows/rotation/rotation.machine.ts: imports providers/index.ts (workflows -> providers: workflows and providers do not import each other)',
    );
    expect(v).toContain(
      'providers/health/http/index.ts: imports providers/index.ts (a provider does not import the registry)',
    );
    expect(v).toContain(
      'providers/health/http/index.ts: imports providers/stores/file/file.crypto.ts (a provider imports only its own folder, providers/common and core)',
    );
    expect(v).toContain(
      'src/entrypoints/cli.ts: imports test/fakes/memory.ts, which is outside every layer (tests, bench and deploy are not product code)',
    );
    expect(v.some((l) => l.startsWith('src/odd.ts: not in a layer'))).toBe(true);
    expect(v).toContain(
      'import cycle: providers/health/http/index.ts -> providers/index.ts -> providers/health/http/index.ts',
    );
    expect(v).toContain('import cycle: src/app/run.ts -> src/core/ports.ts -> src/app/run.ts');
  });
});
