/**
 * Manual-confirm decisions through a database state backend: a rotation waits at its manual gate on
 * one "host" (its own state dir); `keyrotor confirm` runs as a separate process on another "host"
 * (another directory, another state dir) that shares only the PostgreSQL database. The decision
 * reaches the gate; a decision is created once and never changed.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { runCli, workspace } from '../entrypoints/cli-helpers.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { keyConfig } from '../helpers/config.ts';

const MASTER = '4d'.repeat(32);
const CONFIG = keyConfig({
  state: 'state: { type: postgres, schema: confirms }',
  health: '\n      - { type: manual, timeout: 30s, interval: 100ms }',
});

const PG = postgresSupportOrSkip('manual confirm through PostgreSQL');

describe.skipIf(!PG)('keyrotor confirm through the PostgreSQL state backend', () => {
  const db = usePostgresDatabase('confirms');

  it('a confirm from another machine reaches the waiting rotation; the decision is created once and kept', async () => {
    const env = { KEYROTOR_MASTER_KEY: MASTER, KEYROTOR_DATABASE_URL: db.url() };
    const hostA = workspace(CONFIG, 'confirm-host-a');
    const hostB = workspace(CONFIG, 'confirm-host-b');
    const file = path.join(hostA, 'rotation.config.yaml');
    const cfg = parseConfig(readFileSync(file, 'utf8'), file, env);
    const store = createStateStore(cfg, env);
    await store.init!();
    // bootstrap without the gate (the store was empty), then a real rotation that waits at the gate
    const noGate = CONFIG.replace(/\n {4}health:\n.*\n$/, '\n');
    expect(noGate).not.toContain('manual');
    const boot = parseConfig(noGate, file, env);
    expect(
      (await rotateKey(boot.keys[0]!, { config: boot, stateStore: store, logger: silentLogger(), env, now: true }))
        .outcome,
    ).toBe('rotated');
    const running = rotateKey(cfg.keys[0]!, { config: cfg, stateStore: store, logger: silentLogger(), env, now: true });
    let rotationId: string | undefined;
    for (let i = 0; i < 100 && !rotationId; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const rec = await store.read('app');
      if ((rec?.active?.snapshot as { value?: unknown } | undefined)?.value === 'confirm')
        rotationId = rec!.active!.rotationId;
    }
    expect(rotationId).toBeDefined();

    const yes = await runCli(['confirm', 'app', '--reason', 'dashboards are green', '--json'], { cwd: hostB, env });
    expect(yes.code, yes.stderr).toBe(0);
    expect(JSON.parse(yes.stdout)).toMatchObject({
      key: 'app',
      rotationId,
      decision: 'confirm',
      alreadyRecorded: false,
      file: expect.stringMatching(/^postgres:/),
    });
    const result = await running;
    expect(result).toMatchObject({ outcome: 'rotated', rotationId });

    // the decision is kept; repeating it is a no-op, changing it is refused
    const again = await runCli(['confirm', rotationId!], { cwd: hostB, env });
    expect(again.code).toBe(2); // the rotation ended: nothing to confirm
    expect(again.stderr).toMatch(/already ended \(rotated\)/);
    const rec = await store.read('app');
    expect(JSON.parse(rec!.providerState[`confirm.${rotationId}`]!)).toMatchObject({
      decision: 'confirm',
      reason: 'dashboards are green',
    });
    // create-once: a concurrent second decision never replaces the first
    const [x, y] = await Promise.all([
      store.setProviderStateIfAbsent!('app', 'confirm.rot-x', 'first'),
      createStateStore(cfg, env).setProviderStateIfAbsent!('app', 'confirm.rot-x', 'second'),
    ]);
    expect(x).toBe(y);
    expect(await store.setProviderStateIfAbsent!('app', 'confirm.rot-x', 'third')).toBe(x);
    await store.close!();
  }, 60_000);
});
