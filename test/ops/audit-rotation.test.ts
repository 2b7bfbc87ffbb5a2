/**
 * Audit records of real rotations (src/run.ts rotateKey, real providers): the OpenAI issuer over its
 * wire protocol against the loopback Admin API fake, the file store, the observers of
 * `defaultObservers`. Every stage of a rotated, a rolled-back, a leaked and a paused-then-resumed
 * run is recorded, in order, with references only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey, type TransitionEvent } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { buildHistory, openAuditLog, type AuditRecord } from '../../src/app/audit/index.ts';
import { createMetrics } from '../../src/app/metrics.ts';
import { tempDir, capture } from '../helpers/artifacts.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { LOCAL_CONFIG } from '../entrypoints/cli-helpers.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

const FORWARD = ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked', 'rotated'];

function openaiSetup() {
  const sa = fake.state.addServiceAccount(`app-${Math.random().toString(16).slice(2, 8)}`).id;
  const dir = tempDir('ops-audit-rot');
  const text = `version: 1
defaults:
  verify: { timeout: 1500ms, interval: 50ms }
  verifyRevoked: { timeout: 3s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
keys:
  - name: app
    issuer: { type: openai, project: ${fake.project}, serviceAccount: ${sa}, baseURL: ${fake.baseURL}, timeout: 5s }
    stores: [ { type: file } ]
    health:
      - { type: issuer-smoke-test, timeout: 3s, interval: 50ms }
`;
  const env = { OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };
  const cfg = parseConfig(text, path.join(dir, 'rotation.config.yaml'), env);
  const stateStore = createFileStateStore(cfg.stateDir);
  const logger = silentLogger();
  const observers = defaultObservers({
    config: cfg,
    logger,
    actor: 'daemon',
    env,
    stateStore,
    metrics: createMetrics(),
  });
  return {
    dir,
    cfg,
    key: cfg.keys[0]!,
    stateStore,
    base: { config: cfg, stateStore, logger, env, now: true, actor: 'daemon', observers },
  };
}

async function recordsOf(cfg: ReturnType<typeof openaiSetup>['cfg']): Promise<AuditRecord[]> {
  const log = openAuditLog(cfg);
  const text = readFileSync(log.file, 'utf8');
  capture('ops-audit-rotation.jsonl', text);
  expect(text).not.toContain(CANARY);
  expect(await log.verify()).toMatchObject({ ok: true, warnings: [] });
  return (await log.read()).records;
}

describe('audit records of real rotations', () => {
  it('a rotated run: one record per stage in order, then the result; ids and fingerprints, never values', async () => {
    const { cfg, key, base } = openaiSetup();
    const boot = await rotateKey(key, base);
    expect(boot).toMatchObject({ outcome: 'rotated', bootstrap: true });
    fake.resetFaults();
    const r = await rotateKey(key, base);
    expect(r).toMatchObject({ outcome: 'rotated', oldKeyId: boot.newKeyId });

    const recs = (await recordsOf(cfg)).filter((x) => x.rotationId === r.rotationId);
    const transitions = recs.filter((x) => x.type === 'transition');
    expect(transitions.map((x) => x.state)).toEqual(FORWARD);
    expect(transitions.map((x) => x.stage)).toEqual([...FORWARD.slice(0, -1), null]);
    for (const t of transitions)
      expect(t).toMatchObject({
        key: 'app',
        actor: 'daemon',
        leaked: false,
        user: expect.any(String),
        host: expect.any(String),
      });
    // references appear as soon as the workflow knows them
    expect(transitions.find((x) => x.state === 'stage')).toMatchObject({
      oldKeyId: boot.newKeyId,
      newKeyId: r.newKeyId,
      newFingerprint: expect.stringMatching(/^fp_[0-9a-f]{12}$/),
    });
    const result = recs.at(-1)!;
    expect(result).toMatchObject({
      type: 'result',
      outcome: 'rotated',
      oldKeyId: boot.newKeyId,
      newKeyId: r.newKeyId,
      actor: 'daemon',
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
    });
    // times are ordered, seqs consecutive
    const seqs = recs.map((x) => x.seq);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
  });

  it('a rolled-back run: the failing stage, every compensation, the error and the result', async () => {
    const { cfg, key, base } = openaiSetup();
    await rotateKey(key, base);
    fake.state.newKeys.lackScopes = true; // the new key never passes verify: roll back
    try {
      const r = await rotateKey(key, base);
      expect(r).toMatchObject({ outcome: 'rolled_back', error: { code: 'KEY_MISSING_SCOPES', stage: 'verify' } });
      const recs = (await recordsOf(cfg)).filter((x) => x.rotationId === r.rotationId);
      const transitions = recs.filter((x) => x.type === 'transition');
      expect(transitions.map((x) => x.state)).toEqual([
        'preflight',
        'issue',
        'stage',
        'verify',
        'unstage',
        'discard',
        'rolledBack',
      ]);
      // the error is recorded once, on the transition it caused (entering the first compensation)
      const withError = transitions.filter((x) => x.error);
      expect(withError.map((x) => x.state)).toEqual(['unstage']);
      expect(withError[0]!.error).toMatchObject({ code: 'KEY_MISSING_SCOPES', stage: 'verify' });
      expect(recs.at(-1)).toMatchObject({
        type: 'result',
        outcome: 'rolled_back',
        error: { code: 'KEY_MISSING_SCOPES' },
        newKeyId: r.newKeyId,
      });
      const h = buildHistory(
        await openAuditLog(cfg)
          .read()
          .then((x) => x.records),
        { key: 'app' },
      );
      expect(h.map((x) => x.outcome)).toEqual(['rotated', 'rolled_back']);
    } finally {
      fake.state.newKeys.lackScopes = false;
    }
  });

  it('a leaked rotation is marked in every record; its result carries the old key last use', async () => {
    const { cfg, key, base } = openaiSetup();
    const boot = await rotateKey(key, base);
    const r = await rotateKey(key, { ...base, leaked: true });
    expect(r).toMatchObject({ outcome: 'rotated', leaked: true, oldKeyId: boot.newKeyId });
    const recs = (await recordsOf(cfg)).filter((x) => x.rotationId === r.rotationId);
    expect(recs.every((x) => x.leaked === true)).toBe(true);
    // leak mode skips confirm
    expect(recs.filter((x) => x.type === 'transition').map((x) => x.state)).toEqual(
      FORWARD.filter((s) => s !== 'confirm'),
    );
    expect(recs.at(-1)).toMatchObject({ type: 'result', leaked: true, oldKeyLastUsedAt: expect.any(String) });
  });

  it('a paused rotation and its resume: one history entry, the resume marked', async () => {
    const dir = tempDir('ops-audit-pause');
    const cfg = parseConfig(LOCAL_CONFIG, path.join(dir, 'rotation.config.yaml'), {});
    const stateStore = createFileStateStore(cfg.stateDir);
    const logger = silentLogger();
    const observers = defaultObservers({
      config: cfg,
      logger,
      actor: 'lambda',
      env: {},
      stateStore,
      metrics: createMetrics(),
    });
    const base = { config: cfg, stateStore, logger, env: {}, now: true, actor: 'lambda', observers };
    const key = cfg.keys[0]!;
    await rotateKey(key, base);
    const ac = new AbortController();
    const stopAtPromote = { onTransition: (e: TransitionEvent) => void (e.state === 'promote' && ac.abort()) };
    const r1 = await rotateKey(key, { ...base, signal: ac.signal, observers: [...observers, stopAtPromote] });
    expect(r1.outcome).toBe('in_progress');
    const r2 = await rotateKey(key, { ...base, resumeOnly: true });
    expect(r2).toMatchObject({ outcome: 'rotated', rotationId: r1.rotationId });

    const log = openAuditLog(cfg);
    expect(await log.verify()).toMatchObject({ ok: true });
    const h = buildHistory((await log.read()).records).filter((x) => x.rotationId === r1.rotationId);
    expect(h).toHaveLength(1);
    expect(h[0]!.outcome).toBe('rotated');
    const states = h[0]!.stages.map((s) => s.state);
    for (const s of FORWARD) expect(states).toContain(s);
    expect(h[0]!.stages.filter((s) => s.resumed)).toHaveLength(1);
    expect(h[0]!.stages.find((s) => s.resumed)!.state).toBe(r1.stage);
  });
});
