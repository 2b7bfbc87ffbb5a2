/**
 * Durable waits (issue 12): a rotation waiting at a health gate is parked — saved with `wakeAt`, its
 * actor stopped, its lease released, result `waiting` — and any worker (a fresh store instance, another
 * process) continues it once the gate can be checked again. Real gates: `manual` decisions through
 * `keyrotor confirm` (the CLI spawned), the local issuer and the encrypted file store.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import { rotateKey, rotateKeys, resumableAt, type KeyResult } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { isLease, type StateStore } from '../../src/core/ports.ts';
import { startDaemon, type DaemonRun } from '../../src/entrypoints/daemon.ts';
import { runCli, workspace } from './cli-helpers.ts';

const MASTER = '7e'.repeat(32);
const ENV = { KEYROTOR_MASTER_KEY: MASTER };

function configText(o: { gate?: string; park?: string } = {}): string {
  return `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
  lease: { ttl: 3s }
  park: { after: ${o.park ?? '200ms'} }
keys:
  - name: app
    issuer: { type: local }
    stores: [ { type: file } ]
    health:${o.gate ? `\n      - ${o.gate}` : ' []'}
`;
}

/** a workspace whose key was bootstrapped without gates; then the config gets `gate` */
async function world(name: string, o: { gate: string; park?: string }) {
  const dir = workspace(configText(), name);
  const file = path.join(dir, 'rotation.config.yaml');
  const boot = parseConfig(configText(), file, ENV);
  const first = await rotateKey(boot.keys[0]!, {
    config: boot,
    stateStore: createFileStateStore(boot.stateDir),
    logger: silentLogger(),
    env: ENV,
    now: true,
  });
  expect(first.outcome).toBe('rotated');
  writeFileSync(file, configText(o));
  const cfg = parseConfig(readFileSync(file, 'utf8'), file, ENV);
  /** a worker: a fresh state store instance each time, as another process would have */
  const worker = (extra: Partial<Parameters<typeof rotateKey>[1]> = {}): Promise<KeyResult> =>
    rotateKey(cfg.keys[0]!, {
      config: cfg,
      stateStore: createFileStateStore(cfg.stateDir),
      logger: silentLogger(),
      env: ENV,
      ...extra,
    });
  return { dir, cfg, worker, oldKeyId: first.newKeyId!, store: createFileStateStore(cfg.stateDir) };
}

async function leaseIsFree(store: StateStore, key: string): Promise<boolean> {
  const got = await store.acquire(key, 'test-probe', 1000);
  if (!isLease(got)) return false;
  await got.release();
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('durable waits: parking at a health gate', () => {
  it('parks at confirm, holds nothing, and a fresh worker continues it after `keyrotor confirm`', async () => {
    const w = await world('park-manual', { gate: '{ type: manual, name: ops, timeout: 60s, interval: 20s }' });
    const t0 = Date.now();
    const parked = await w.worker({ now: true, park: true });
    expect(parked).toMatchObject({ outcome: 'waiting', stage: 'confirm', oldKeyId: w.oldKeyId });
    expect(parked.untouched).toBeUndefined();
    const wakeAt = Date.parse(parked.wakeAt!);
    // the gate was checked once (no decision yet); its next check is one interval later
    expect(wakeAt).toBeGreaterThanOrEqual(t0 + 20_000);
    expect(wakeAt).toBeLessThan(Date.now() + 20_000);

    // durable: the record says when, the deadline is in the snapshot, and nobody holds the lease
    const rec = await w.store.read('app');
    expect(rec?.active).toMatchObject({ rotationId: parked.rotationId, wakeAt: parked.wakeAt });
    expect((rec!.active!.snapshot as { value: string }).value).toBe('confirm');
    expect(resumableAt(rec)).toBe(wakeAt);
    expect(await leaseIsFree(w.store, 'app')).toBe(true);

    // `status` shows it parked and when it wakes
    const st = await runCli(['status', '--json'], { cwd: w.dir, env: ENV, name: 'park-status' });
    expect(st.code, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout).keys[0].active).toMatchObject({
      rotationId: parked.rotationId,
      stage: 'confirm',
      wakeAt: parked.wakeAt,
    });
    const human = await runCli(['status'], { cwd: w.dir, env: ENV, name: 'park-status-text' });
    expect(human.stdout).toContain(`parked until ${parked.wakeAt}`);

    // a `keyrotor confirm` on the parked rotation records the decision and wakes it
    const c = await runCli(['confirm', 'app', '--json'], { cwd: w.dir, env: ENV, name: 'park-confirm' });
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ rotationId: parked.rotationId, decision: 'confirm', woken: true });
    expect((await w.store.read('app'))?.active?.wakeAt).toBeUndefined();

    // another worker continues it (a new store instance, nothing in memory) and finishes it
    const done = await w.worker({ resumeOnly: true, park: true });
    expect(done).toMatchObject({ outcome: 'rotated', rotationId: parked.rotationId, oldKeyId: w.oldKeyId });
    expect((await w.store.read('app'))?.active).toBeNull();
  });

  it('a worker leaves a parked rotation alone until its wake time, then checks the gate again', async () => {
    const w = await world('park-later', { gate: '{ type: manual, name: ops, timeout: 30s, interval: 1500ms }' });
    const parked = await w.worker({ now: true, park: true });
    expect(parked.outcome).toBe('waiting');
    const before = (await w.store.read('app'))!.active!;

    // before wakeAt: not touched (no lease, no write), reported as waiting
    const early = await w.worker({ park: true });
    expect(early).toMatchObject({ outcome: 'waiting', rotationId: parked.rotationId, untouched: true });
    expect(early.wakeAt).toBe(parked.wakeAt);
    expect((await w.store.read('app'))!.active).toEqual(before);

    // after wakeAt: a worker takes it, checks the gate (no decision yet) and parks it again, later
    await sleep(Date.parse(parked.wakeAt!) - Date.now() + 50);
    const again = await w.worker({ park: true });
    expect(again).toMatchObject({ outcome: 'waiting', rotationId: parked.rotationId });
    expect(again.untouched).toBeUndefined();
    expect(Date.parse(again.wakeAt!)).toBeGreaterThan(Date.parse(parked.wakeAt!));
    // the gate's deadline did not move
    const ctx = (r: { snapshot: unknown }) => (r.snapshot as { context: { deadlines: unknown } }).context.deadlines;
    expect(ctx((await w.store.read('app'))!.active!)).toEqual(ctx(before));

    // `resume --now` checks it now, whatever its wake time; reject it: it rolls back
    const c = await runCli(['confirm', 'app', '--reject'], { cwd: w.dir, env: ENV, name: 'park-reject' });
    expect(c.code, c.stderr).toBe(0);
    const r = await runCli(['resume', 'app', '--now', '--json'], { cwd: w.dir, env: ENV, name: 'park-resume-now' });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).results[0]).toMatchObject({
      rotationId: parked.rotationId,
      outcome: 'rolled_back',
      error: { code: 'GATE_REJECTED' },
    });
  });

  it('a rotation parked past its deadline times out on the next check and rolls back', async () => {
    const w = await world('park-deadline', { gate: '{ type: manual, name: ops, timeout: 1200ms, interval: 800ms }' });
    const parked = await w.worker({ now: true, park: true });
    expect(parked.outcome).toBe('waiting');
    const deadline = (
      (await w.store.read('app'))!.active!.snapshot as { context: { deadlines: { confirm: number[] } } }
    ).context.deadlines.confirm[0]!;
    // nobody comes back until well past the deadline
    await sleep(deadline - Date.now() + 500);
    const r = await w.worker({ park: true });
    expect(r).toMatchObject({
      outcome: 'rolled_back',
      rotationId: parked.rotationId,
      oldKeyId: w.oldKeyId,
      error: { code: 'GATE_TIMEOUT', stage: 'confirm' },
    });
    const rec = await w.store.read('app');
    expect(rec?.active).toBeNull();
    expect(rec?.currentKeyId).toBe(w.oldKeyId);
  });

  it('without park (the interactive rotate) the rotation waits in the process as before', async () => {
    const w = await world('park-off', { gate: '{ type: manual, name: ops, timeout: 1s, interval: 300ms }' });
    const r = await w.worker({ now: true });
    expect(r).toMatchObject({ outcome: 'rolled_back', error: { code: 'GATE_TIMEOUT' } });
  });

  it('`park.after: off` never parks, even where workers park', async () => {
    const w = await world('park-cfg-off', {
      gate: '{ type: manual, name: ops, timeout: 1s, interval: 300ms }',
      park: 'off',
    });
    const r = await w.worker({ now: true, park: true });
    expect(r).toMatchObject({ outcome: 'rolled_back', error: { code: 'GATE_TIMEOUT' } });
  });

  it('short checks are not parked: a wait whose next check is nearer than park.after stays live', async () => {
    const w = await world('park-short', {
      gate: '{ type: manual, name: ops, timeout: 1s, interval: 100ms }',
      park: '5s',
    });
    const r = await w.worker({ now: true, park: true });
    expect(r).toMatchObject({ outcome: 'rolled_back', error: { code: 'GATE_TIMEOUT' } });
  });

  it('crash between the park write and the lease release: safe, the next worker takes over after the ttl', async () => {
    const w = await world('park-crash', { gate: '{ type: manual, name: ops, timeout: 30s, interval: 400ms }' });
    // a worker whose lease release never reaches the store (it died right after the park write)
    const real = createFileStateStore(w.cfg.stateDir);
    const dying: StateStore = {
      ...real,
      label: real.label,
      read: (k) => real.read(k),
      keys: () => real.keys(),
      saveActive: (...a) => real.saveActive(...a),
      finish: (...a) => real.finish(...a),
      setProviderState: (...a) => real.setProviderState(...a),
      put: (...a) => real.put(...a),
      async acquire(k, owner, ttl) {
        const got = await real.acquire(k, owner, ttl);
        if (!isLease(got)) return got;
        return {
          owner: got.owner,
          token: got.token,
          expiresAt: got.expiresAt,
          renew: () => got.renew(),
          release: async () => {},
        };
      },
    };
    const parked = await rotateKey(w.cfg.keys[0]!, {
      config: w.cfg,
      stateStore: dying,
      logger: silentLogger(),
      env: ENV,
      now: true,
      park: true,
    });
    expect(parked.outcome).toBe('waiting');
    expect((await w.store.read('app'))?.active?.wakeAt).toBe(parked.wakeAt);
    // the lease is still held (ttl 3s): a worker after the wake time is told so and changes nothing
    await sleep(Date.parse(parked.wakeAt!) - Date.now() + 50);
    const c = await runCli(['confirm', 'app'], { cwd: w.dir, env: ENV, name: 'park-crash-confirm' });
    expect(c.code, c.stderr).toBe(0);
    const locked = await w.worker({ park: true });
    expect(locked.outcome).toBe('locked');
    // after the ttl the next worker continues it and finishes
    await sleep(3200);
    const done = await w.worker({ park: true });
    expect(done).toMatchObject({ outcome: 'rotated', rotationId: parked.rotationId });
  });

  it('rotateKeys parks many rotations and a second call continues only the ones whose time has come', async () => {
    const dir = workspace('', 'park-many');
    const file = path.join(dir, 'rotation.config.yaml');
    const keysYaml = (health: string) =>
      Array.from(
        { length: 6 },
        (_, i) => `  - name: k${i}
    issuer: { type: local }
    stores: [ { type: file } ]
    health:${health}
`,
      ).join('');
    const head = `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
  park: { after: 200ms }
keys:
`;
    writeFileSync(file, head + keysYaml(' []'));
    const boot: LoadedConfig = parseConfig(readFileSync(file, 'utf8'), file, ENV);
    const base = { logger: silentLogger(), env: ENV, now: true } as const;
    expect(
      (await rotateKeys(boot.keys, { ...base, config: boot, stateStore: createFileStateStore(boot.stateDir) })).map(
        (r) => r.outcome,
      ),
    ).toEqual(Array(6).fill('rotated'));
    writeFileSync(file, head + keysYaml('\n      - { type: manual, timeout: 60s, interval: 20s }'));
    const cfg = parseConfig(readFileSync(file, 'utf8'), file, ENV);
    const parked = await rotateKeys(cfg.keys, {
      ...base,
      config: cfg,
      stateStore: createFileStateStore(cfg.stateDir),
      park: true,
      concurrency: 2,
    });
    expect(parked.map((r) => r.outcome)).toEqual(Array(6).fill('waiting'));
    // confirm half of them
    for (const k of ['k0', 'k2', 'k4']) {
      const c = await runCli(['confirm', k], { cwd: dir, env: ENV, name: `park-many-confirm-${k}` });
      expect(c.code, c.stderr).toBe(0);
    }
    const next = await rotateKeys(cfg.keys, {
      config: cfg,
      stateStore: createFileStateStore(cfg.stateDir),
      logger: silentLogger(),
      env: ENV,
      park: true,
    });
    expect(next.map((r) => `${r.key}:${r.outcome}${r.untouched ? ':untouched' : ''}`)).toEqual([
      'k0:rotated',
      'k1:waiting:untouched',
      'k2:rotated',
      'k3:waiting:untouched',
      'k4:rotated',
      'k5:waiting:untouched',
    ]);
  });

  it('the daemon parks, and runs again by itself when the earliest parked rotation wakes (before its tick)', async () => {
    const w = await world('park-daemon', { gate: '{ type: manual, name: ops, timeout: 60s, interval: 5s }' });
    const runs: DaemonRun[] = [];
    let told: (() => void) | null = null;
    const daemon = startDaemon({
      config: w.cfg,
      stateStore: createFileStateStore(w.cfg.stateDir),
      logger: silentLogger(),
      env: ENV,
      tick: '0 0 1 1 *', // once a year: every run here is the start run or a wake run
      jitterMs: 0,
      onRun: (r) => {
        runs.push(r);
        told?.();
      },
    });
    const nextRun = () => new Promise<void>((r) => (told = r));
    try {
      // the start run: nothing is due (the key was just bootstrapped)
      await nextRun();
      expect(runs[0]!.results[0]!.outcome).toBe('skipped');
      // a rotation started elsewhere (`rotate --now --park`) parks at the gate
      const parked = await w.worker({ now: true, park: true });
      expect(parked.outcome).toBe('waiting');
      // the daemon learns of it on its next run only; make one now (its result: untouched, waiting)
      const seen = await daemon.runNow();
      expect(seen?.results[0]).toMatchObject({ outcome: 'waiting', untouched: true, wakeAt: parked.wakeAt });
      const c = await runCli(['confirm', 'app'], { cwd: w.dir, env: ENV, name: 'park-daemon-confirm' });
      expect(c.code, c.stderr).toBe(0);
      // no tick comes for a year: the wake timer starts the run that finishes it
      const woke = nextRun();
      await woke;
      const last = runs.at(-1)!;
      expect(last.results[0]).toMatchObject({ outcome: 'rotated', rotationId: parked.rotationId });
      expect(Date.parse(last.startedAt)).toBeGreaterThanOrEqual(Date.parse(parked.wakeAt!));
    } finally {
      await daemon.stop();
    }
  });
});
