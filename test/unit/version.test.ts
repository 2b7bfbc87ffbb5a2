import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { KEYROTOR_VERSION, MIN_NODE, unsupportedNode } from '../../src/app/version.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
  engines: { node: string };
};

describe('version and supported Node, from package.json', () => {
  it('the version is package.json’s (one source for --version, snapshots and audit records)', () => {
    expect(KEYROTOR_VERSION).toBe(pkg.version);
  });

  it('the minimum Node is engines.node; older versions get one line naming both', () => {
    expect(pkg.engines.node).toMatch(/^>=\d+\.\d+$/);
    const [major, minor] = MIN_NODE;
    expect(`>=${major}.${minor}`).toBe(pkg.engines.node);
    expect(unsupportedNode(`${major}.${minor}.0`)).toBeUndefined();
    expect(unsupportedNode(`${major}.${minor + 1}.0`)).toBeUndefined();
    expect(unsupportedNode(`${major + 2}.0.0`)).toBeUndefined();
    expect(unsupportedNode('20.20.2')).toBe(`needs Node >= ${major}.${minor} (this is Node 20.20.2)`);
    if (minor > 0) expect(unsupportedNode(`${major}.${minor - 1}.9`)).toMatch(/^needs Node >= /);
  });
});
