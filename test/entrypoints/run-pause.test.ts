/**
 * Graceful pause (Lambda / Cloud Run time budget, daemon SIGTERM): the run stops between stages or in
 * the middle of a wait, reports in_progress, keeps the snapshot; the next run resumes and finishes
 * with the original deadlines.
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, type TransitionEvent } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { LOCAL_CONFIG } from './cli-helpers.ts';

function setup(config = LOCAL_CONFIG) {
  const dir = tempDir('pause');
  const cfg = parseConfig(config, path.join(dir, 'rotation.config.yaml'), {});
  const stateStore = createFileStateStore(cfg.stateDir);
  return {
    cfg,
    stateStore,
    key: cfg.keys[0]!,
    base: { config: cfg, stateStore, logger: silentLogger(), env: {}, now: true },
  };
}

describe('graceful pause and resume', () => {
  it('a budget already spent stops before the first stage; the next run finishes it', async () => {
    const { key, base, stateStore } = setup();
    const r1 = await rotateKey(key, { ...base, pauseAt: Date.now() - 1 });
    expect(r1).toMatchObject({ outcome: 'in_progress', stage: 'preflight' });
    expect((await stateStore.read('demo'))?.active?.rotationId).toBe(r1.rotationId);
    const r2 = await rotateKey(key, { ...base, resumeOnly: true });
    expect(r2).toMatchObject({ outcome: 'rotated', rotationId: r1.rotationId, bootstrap: true });
    expect((await stateStore.read('demo'))?.active).toBeNull();
    // resume-only with nothing unfinished starts nothing
    expect(await rotateKey(key, { ...base, resumeOnly: true })).toMatchObject({ outcome: 'skipped' });
  });

  it('an abort while promoting stops at the next safe point; the next run finishes the same rotation', async () => {
    const { key, base, stateStore } = setup();
    await rotateKey(key, base); // bootstrap
    const ac = new AbortController();
    const seen: string[] = [];
    const observer = {
      onTransition(e: TransitionEvent) {
        seen.push(e.state);
        if (e.state === 'promote') ac.abort(); // stop at the next safe point after promote
      },
    };
    const r1 = await rotateKey(key, { ...base, signal: ac.signal, observers: [observer] });
    expect(r1.outcome).toBe('in_progress');
    expect(['promote', 'confirm']).toContain(r1.stage);
    const saved = (await stateStore.read('demo'))!.active!;
    const r2 = await rotateKey(key, { ...base, resumeOnly: true });
    expect(r2).toMatchObject({ outcome: 'rotated', rotationId: r1.rotationId });
    expect(saved.rotationId).toBe(r1.rotationId);
    expect(seen).toContain('promote');
  });
});
