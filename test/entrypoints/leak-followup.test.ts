/**
 * A leak-mode rotation that fails leaves the compromised key current. Every later rotation of that key
 * runs in leak mode until one replaces it (found by the crash chaos, seed 2927940617: a scheduled
 * rotation after a failed `--leaked` one rolled back and put the leaked key back into two stores), and
 * the key is due at once.
 */
import { describe, expect, it } from 'vitest';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, unreplacedLeak, type TransitionEvent } from '../../src/app/run.ts';
import type { KeyRecord, RotationResult } from '../../src/core/ports.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { tempDir } from '../helpers/artifacts.ts';

const config = (health: string) => `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
  schedule: { every: 30d }
keys:
  - name: demo
    issuer: { type: local }
    stores: [ { type: file }, { type: file, path: b/demo.json } ]
    health: ${health}
`;

describe('after a leak-mode rotation that did not replace the key', () => {
  it('the key is due at once and the next (scheduled) rotation runs in leak mode: no gate wait, the leaked key revoked', async () => {
    const dir = tempDir('leak-followup');
    const env = { KEYROTOR_MASTER_KEY: '5a'.repeat(32) };
    const load = (health: string) => {
      writeFileSync(path.join(dir, 'rotation.config.yaml'), config(health));
      return parseConfig(config(health), path.join(dir, 'rotation.config.yaml'), env);
    };
    let cfg = load('[]');
    const stateStore = createFileStateStore(cfg.stateDir);
    const base = { stateStore, logger: silentLogger(), env };

    const boot = await rotateKey(cfg.keys[0]!, { ...base, config: cfg, now: true });
    expect(boot.outcome).toBe('rotated');
    const leakedId = boot.newKeyId!;

    // the second store cannot be read or written: the leak-mode rotation fails and the leaked key stays
    const b = path.join(dir, 'b');
    renameSync(b, `${b}.off`);
    writeFileSync(b, 'not a folder');
    const failed = await rotateKey(cfg.keys[0]!, { ...base, config: cfg, now: true, leaked: true });
    expect(failed.outcome).not.toBe('rotated');
    expect(failed.leaked).toBe(true);
    const after = await stateStore.read('demo');
    expect(after?.currentKeyId).toBe(leakedId);
    expect(unreplacedLeak(after)?.rotationId).toBe(failed.rotationId);
    rmSync(b);
    renameSync(`${b}.off`, b);

    // now with a manual gate that a normal rotation would wait on for a minute
    cfg = load('[ { type: manual, timeout: 60s, interval: 50ms } ]');
    const plan = await rotateKey(cfg.keys[0]!, { ...base, config: cfg, dryRun: true });
    expect(plan.plan).toMatchObject({ due: true, leaked: true });
    expect(plan.plan?.reason).toContain(`the current key ${leakedId} was reported leaked`);

    const states: string[] = [];
    const observer = { onTransition: (e: TransitionEvent) => void states.push(e.state) };
    const t0 = Date.now();
    const next = await rotateKey(cfg.keys[0]!, { ...base, config: cfg, observers: [observer] }); // a scheduled run: no --now, no --leaked
    expect(next).toMatchObject({ outcome: 'rotated', leaked: true, oldKeyId: leakedId });
    expect(states).not.toContain('confirm');
    expect(states).toContain('verifyRevoked');
    expect(Date.now() - t0).toBeLessThan(30_000); // it did not wait for the manual gate's minute

    // replaced: the next plan is an ordinary one, not due for 30 days
    const calm = await rotateKey(cfg.keys[0]!, { ...base, config: cfg, dryRun: true });
    expect(calm.plan).toMatchObject({ due: false, leaked: false });
    expect(unreplacedLeak(await stateStore.read('demo'))).toBeNull();
  }, 45_000);

  it('which results leave the key marked leaked', () => {
    const record = (current: string | null, last: Partial<RotationResult>): KeyRecord => ({
      keyName: 'k',
      active: null,
      lastRotatedAt: null,
      currentKeyId: current,
      providerState: {},
      last: {
        key: 'k',
        rotationId: 'rot-1',
        outcome: 'needs_attention',
        oldKeyId: 'old',
        newKeyId: 'new',
        leaked: true,
        ...last,
      },
    });
    expect(unreplacedLeak(record('old', {}))?.oldKeyId).toBe('old'); // failed before the new key was served
    expect(unreplacedLeak(record('old', { oldKeyId: null, newKeyId: null, outcome: 'rolled_back' }))?.oldKeyId).toBe(
      'old',
    ); // stopped in preflight
    expect(unreplacedLeak(record('new', { oldKeyId: null }))).toBeNull(); // replaced; only the old key's revoke needs a human
    expect(unreplacedLeak(record('new', {}))).toBeNull(); // replaced
    expect(unreplacedLeak(record('old', { outcome: 'rotated' }))).toBeNull();
    expect(unreplacedLeak(record('old', { leaked: false }))).toBeNull(); // not a leak rotation
    expect(unreplacedLeak(record(null, {}))).toBeNull(); // nothing current
  });
});
