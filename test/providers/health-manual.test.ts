/**
 * The `manual` gate and `keyrotor confirm` (the CLI's main() in-process; the spawned CLI is covered
 * in test/entrypoints/gates-manual.test.ts): decision files per rotation, confirm, reject, repeat,
 * conflicts, a race between two people, unreadable files.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { createGate, healthConfigSchema } from '../../providers/index.ts';
import { decisionFile } from '../../providers/health/manual/manual.decision.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { HealthGate, Issuer } from '../../src/core/ports.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { gateContext } from '../fakes/consumer.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { cliInProcess } from '../entrypoints/cli-helpers.ts';

const ROT = 'rot-20261123t151500z-0a1b2c3d';
const OTHER = 'rot-20261123t151600z-99999999';

const CONFIG = `version: 1
keys:
  - name: app
    issuer: { type: local }
    stores: [ { type: file } ]
    health:
      - { type: manual, timeout: 5s, interval: 50ms }
  - name: plain
    issuer: { type: local }
    stores: [ { type: file } ]
`;

async function workspace(active: Record<string, string> = { app: ROT }) {
  const dir = tempDir('manual');
  writeFileSync(path.join(dir, 'rotation.config.yaml'), CONFIG);
  const stateDir = path.join(dir, '.keyrotor');
  const store = createFileStateStore(stateDir);
  for (const [key, rotationId] of Object.entries(active)) {
    await store.saveActive(key, {
      rotationId,
      keyName: key,
      machineVersion: 1,
      keyrotorVersion: '0.1.0',
      updatedAt: new Date().toISOString(),
      snapshot: { status: 'active', value: 'confirm', context: { rotationId, keyName: key } },
    });
  }
  const gate: HealthGate = await createGate(
    healthConfigSchema.parse({ type: 'manual', interval: '50ms' }),
    {
      keyName: 'app',
      stateDir,
      configDir: dir,
      logger: silentLogger(),
      clock: systemClock,
      env: {},
      providerState: { get: () => undefined, set: async () => {} },
    },
    { issuer: { type: 'none' } as unknown as Issuer, index: 0 },
  );
  return { dir, stateDir, gate };
}

const cli = (dir: string, ...args: string[]) =>
  cliInProcess(['--config', path.join(dir, 'rotation.config.yaml'), ...args], {
    env: { KEYROTOR_LOG_LEVEL: 'silent' },
    name: `health-manual-${args.join('_')}`,
  });

const ctx = (rotationId = ROT) => gateContext({ rotationId });

describe('manual gate + keyrotor confirm', () => {
  it('waits until `keyrotor confirm <key>`, then passes; the decision file is private and atomic', async () => {
    const { dir, stateDir, gate } = await workspace();
    expect(gate).toMatchObject({ type: 'manual', name: 'manual', timeoutMs: 24 * 3_600_000, intervalMs: 50 });
    expect(await gate.check(ctx())).toEqual({
      pass: false,
      observation: `waiting for \`keyrotor confirm app\` (or --reject) for rotation ${ROT}`,
    });
    const r = await cli(dir, 'confirm', 'app');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`app: rotation ${ROT} confirmed: the manual gate passes on its next check`);
    const o = await gate.check(ctx());
    expect(o.pass).toBe(true);
    expect(o.observation).toMatch(/^confirmed by .+@.+ at \d{4}-/);
    const file = decisionFile(stateDir, 'app', ROT);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({
      format: 'keyrotor-confirm/1',
      key: 'app',
      rotationId: ROT,
      decision: 'confirm',
    });
    // a decision belongs to one rotation only
    expect((await gate.check(ctx(OTHER))).pass).toBe(false);
  });

  it('--reject ends the wait at once (final) with the reason; by rotation id, --json', async () => {
    const { dir, gate } = await workspace();
    const r = await cli(dir, 'confirm', ROT, '--reject', '--reason', 'consumers  still\nfailing', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      key: 'app',
      rotationId: ROT,
      decision: 'reject',
      reason: 'consumers still failing',
      alreadyRecorded: false,
      stage: 'confirm',
    });
    const o = await gate.check(ctx());
    expect(o).toMatchObject({ pass: false, final: true });
    expect(o.observation).toMatch(/^rejected by .+ at .+: consumers still failing$/);
  });

  it('repeating a decision is a no-op; changing it is refused (exit 2)', async () => {
    const { dir } = await workspace();
    expect((await cli(dir, 'confirm', 'app')).code).toBe(0);
    const again = await cli(dir, 'confirm', 'app');
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('(already recorded)');
    const flip = await cli(dir, 'confirm', 'app', '--reject');
    expect(flip.code).toBe(2);
    expect(flip.stderr).toMatch(/USAGE: rotation .* of app was already confirmed by .*; a decision cannot be changed/);
  });

  it('two people deciding at once: exactly one decision is recorded', async () => {
    const { dir, stateDir } = await workspace();
    const [a, b] = await Promise.all([cli(dir, 'confirm', 'app'), cli(dir, 'confirm', 'app', '--reject')]);
    expect([a.code, b.code].sort()).toEqual([0, 2]);
    const winner = a.code === 0 ? 'confirm' : 'reject';
    expect(JSON.parse(readFileSync(decisionFile(stateDir, 'app', ROT), 'utf8')).decision).toBe(winner);
  });

  it('refuses: no rotation in progress, a key without a manual gate, an unknown key or rotation (exit 2)', async () => {
    const { dir } = await workspace({ plain: OTHER });
    const none = await cli(dir, 'confirm', 'app');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('USAGE: app has no rotation in progress: nothing to confirm');
    const plain = await cli(dir, 'confirm', 'plain');
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('plain has no manual gate');
    const unknown = await cli(dir, 'confirm', 'nope');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('UNKNOWN_KEY: unknown key "nope"');
    const rot = await cli(dir, 'confirm', 'rot-20261123t151500z-ffffffff');
    expect(rot.code).toBe(2);
    expect(rot.stderr).toContain('no rotation rot-20261123t151500z-ffffffff is in progress');
    const help = await cli(dir, 'confirm', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--reject');
  });

  it('an unreadable decision file never passes the gate and is not overwritten', async () => {
    const { dir, stateDir, gate } = await workspace();
    const file = decisionFile(stateDir, 'app', ROT);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '{"decision":"confirm"');
    expect(await gate.check(ctx())).toMatchObject({
      pass: false,
      observation: expect.stringContaining('decision unreadable'),
    });
    writeFileSync(
      file,
      JSON.stringify({
        format: 'keyrotor-confirm/1',
        key: 'app',
        rotationId: OTHER,
        decision: 'confirm',
        at: 'x',
        by: 'y',
      }),
    );
    expect(await gate.check(ctx())).toMatchObject({
      pass: false,
      observation: expect.stringContaining('names another rotation'),
    });
    const r = await cli(dir, 'confirm', 'app');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('STATE_UNREADABLE');
  });
});
