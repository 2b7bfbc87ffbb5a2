/**
 * The operability commands spawned as real processes: history + audit verify after a rotated and a
 * rolled-back run (then one flipped byte), status (age vs schedule, waiting gate, colours), check
 * (missing service account, unusable store, missing admin key) and inventory (planted keys) against
 * the loopback OpenAI Admin API fake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, treeSnapshot, treeText, workspace, LOCAL_CONFIG } from '../entrypoints/cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { createMetrics } from '../../src/app/metrics.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake({ projects: ['proj_ops', 'proj_inv'] });
});
afterAll(async () => {
  await fake?.close();
});

const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: 'ab'.repeat(32) });
const config = (o: { project?: string; sa: string; extraStore?: string }) => `version: 1
defaults:
  verify: { timeout: 1500ms, interval: 50ms }
  verifyRevoked: { timeout: 3s, interval: 50ms }
  revoke: { attempts: 2, backoff: 50ms }
keys:
  - name: app
    issuer: { type: openai, project: ${o.project ?? 'proj_ops'}, serviceAccount: ${o.sa}, baseURL: ${fake.baseURL}, timeout: 5s }
    stores:
      - { type: file }${o.extraStore ? `\n      - ${o.extraStore}` : ''}
    health:
      - { type: issuer-smoke-test, timeout: 3s, interval: 50ms }
`;

/** one `rotate --now app` in this process, with the observers the CLI attaches (audit, metrics) */
function inProcess(dir: string) {
  const cfg = parseConfig(
    readFileSync(path.join(dir, 'rotation.config.yaml'), 'utf8'),
    path.join(dir, 'rotation.config.yaml'),
    env(),
  );
  const stateStore = createFileStateStore(cfg.stateDir);
  const logger = silentLogger();
  const observers = defaultObservers({
    config: cfg,
    logger,
    actor: 'cli',
    env: env(),
    stateStore,
    metrics: createMetrics(),
  });
  return () =>
    rotateKey(cfg.keys[0]!, { config: cfg, stateStore, logger, env: env(), now: true, actor: 'cli', observers });
}

interface History {
  rotations: Array<{
    rotationId: string;
    key: string;
    outcome: string;
    newKeyId: string;
    stages: Array<{ state: string; stage: string | null }>;
    error?: { code: string };
  }>;
}
const FORWARD = ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked', 'rotated'];
const ROLLED_BACK = ['preflight', 'issue', 'stage', 'verify', 'unstage', 'discard', 'rolledBack'];

describe('history and audit verify (CLI)', () => {
  it(
    'after a rotated and a rolled-back run: history shows both with every stage, verify passes; one flipped byte fails naming the record',
    { timeout: 90_000 },
    async () => {
      const sa = fake.state.addServiceAccount('ops-app', 'proj_ops').id;
      const dir = workspace(config({ sa }), 'ops-history');
      const run = (args: string[], name: string) => runCli(args, { cwd: dir, env: env(), name });
      // bootstrap and the rotated run in-process, with the observers \`keyrotor rotate\` attaches
      const rotate = inProcess(dir);
      expect((await rotate()).outcome).toBe('rotated');
      const rotated = await rotate();
      expect(rotated.outcome).toBe('rotated');
      // the rolled-back run through the spawned CLI
      fake.state.newKeys.lackScopes = true;
      let failed;
      try {
        failed = await run(['rotate', '--now', 'app', '--json'], 'ops-rollback');
      } finally {
        fake.state.newKeys.lackScopes = false;
      }
      expect(failed.code, failed.stderr).toBe(1);
      const rolled = (JSON.parse(failed.stdout) as { results: Array<{ rotationId: string; outcome: string }> })
        .results[0]!;
      expect(rolled.outcome).toBe('rolled_back');

      const h = await run(['history', '--json'], 'ops-history-json');
      expect(h.code, h.stderr).toBe(0);
      const hist = JSON.parse(h.stdout) as History;
      expect(hist.rotations.map((r) => r.outcome)).toEqual(['rotated', 'rotated', 'rolled_back']);
      const r1 = hist.rotations.find((r) => r.rotationId === rotated.rotationId)!;
      expect(r1).toMatchObject({ key: 'app', outcome: 'rotated', newKeyId: rotated.newKeyId });
      expect(r1.stages.map((s) => s.state)).toEqual(FORWARD);
      const r2 = hist.rotations.find((r) => r.rotationId === rolled.rotationId)!;
      expect(r2).toMatchObject({ outcome: 'rolled_back', error: { code: 'KEY_MISSING_SCOPES' } });
      expect(r2.stages.map((s) => s.state)).toEqual(ROLLED_BACK);

      const human = await run(['history', 'app'], 'ops-history');
      expect(human.stdout).toMatch(/app {2}ROLLED_BACK {2}rot-/);
      expect(human.stdout).toContain(
        `stages: ${ROLLED_BACK.slice(0, 4).join(' → ')} → unstage ✗ KEY_MISSING_SCOPES → discard → rolledBack`,
      );
      expect(human.stdout).toContain('error: KEY_MISSING_SCOPES');

      const v = await run(['audit', 'verify'], 'ops-verify');
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(v.stdout).toMatch(
        /audit log \.keyrotor\/audit\/audit\.jsonl: \d+ record\(s\), chain intact \(head #\d+ sha256:[0-9a-f]{64}\)/,
      );

      // no secret anywhere in the trail
      expect(treeText(path.join(dir, '.keyrotor', 'audit'))).not.toContain(CANARY);

      // flip one byte: a digit of the time of the rolled-back run's `verify` record
      const file = path.join(dir, '.keyrotor', 'audit', 'audit.jsonl');
      const bytes = readFileSync(file);
      const lines = bytes.toString('utf8').split('\n');
      const idx = lines.findIndex(
        (l) => l.includes(`"rotationId":"${rolled.rotationId}"`) && l.includes('"state":"verify"'),
      );
      expect(idx).toBeGreaterThan(0);
      const seq = (JSON.parse(lines[idx]!) as { seq: number }).seq;
      const offset =
        lines.slice(0, idx).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0) + lines[idx]!.indexOf('"time":"') + 10;
      bytes[offset] = bytes[offset]! ^ 0x01;
      writeFileSync(file, bytes);

      const bad = await run(['audit', 'verify'], 'ops-verify-bad');
      expect(bad.code).toBe(1);
      expect(bad.stdout).toContain(
        `BROKEN at record #${seq} (line ${idx + 1}, key app, rotation ${rolled.rotationId}, state verify): record does not match its hash: the record was edited`,
      );
      const badJson = await run(['audit', 'verify', '--json'], 'ops-verify-bad-json');
      expect(badJson.code).toBe(1);
      expect(JSON.parse(badJson.stdout)).toMatchObject({
        ok: false,
        broken: { seq, line: idx + 1, rotationId: rolled.rotationId },
      });
    },
  );
});

describe('status (CLI)', () => {
  it(
    'age vs schedule, last outcome, an unfinished rotation waiting at a gate with its deadline; colours only when wanted',
    { timeout: 90_000 },
    async () => {
      const dir = workspace(LOCAL_CONFIG, 'ops-status');
      const cfg = parseConfig(LOCAL_CONFIG, path.join(dir, 'rotation.config.yaml'), {});
      const stateStore = createFileStateStore(cfg.stateDir);
      const logger = silentLogger();
      const observers = defaultObservers({
        config: cfg,
        logger,
        actor: 'daemon',
        env: {},
        stateStore,
        metrics: createMetrics(),
      });
      const base = { config: cfg, stateStore, logger, env: {}, now: true, observers };
      const key = cfg.keys[0]!;
      const boot = await rotateKey(key, base);
      // pause the next rotation while it waits for its gate (as a daemon stopped by SIGTERM would)
      const ac = new AbortController();
      const pauseAtGate = {
        onStage: (_k: string, _r: string, e: { stage: string; phase: string }) =>
          void (e.stage === 'confirm' && e.phase === 'start' && ac.abort()),
      };
      const paused = await rotateKey(key, { ...base, signal: ac.signal, observers: [...observers, pauseAtGate] });
      expect(paused).toMatchObject({ outcome: 'in_progress', stage: 'confirm' });

      const s = await runCli(['status', '--json'], { cwd: dir, name: 'ops-status-json' });
      expect(s.code, s.stderr).toBe(0);
      const k = (JSON.parse(s.stdout) as { keys: Array<Record<string, unknown>> }).keys[0]!;
      expect(k).toMatchObject({
        name: 'demo',
        currentKeyId: boot.newKeyId,
        lastRotatedAt: expect.any(String),
        nextDueAt: expect.any(String),
        lastOutcome: 'rotated',
        due: false,
        activeRotation: paused.rotationId,
        scheduleEveryMs: 30 * 86_400_000,
        ageMs: expect.any(Number),
        overdueMs: 0,
        active: {
          rotationId: paused.rotationId,
          stage: 'confirm',
          leaked: false,
          waiting: [{ what: 'gate', name: 'issuer-smoke-test', deadline: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) }],
        },
      });
      expect(k.ageMs as number).toBeLessThan(3_600_000);

      const human = await runCli(['status'], { cwd: dir, name: 'ops-status' });
      expect(human.stdout).toMatch(
        /^KEY\s+CURRENT KEY ID\s+LAST ROTATED\s+NEXT DUE\s+LAST OUTCOME\s+AGE \/ SCHEDULE\s+UNFINISHED/,
      );
      expect(human.stdout).toMatch(/demo\s+lk_\w+\s+\S+\s+in 29d .*rotated .*0m \/ 30d\s+confirm \(rot-/);
      expect(human.stdout).toMatch(
        new RegExp(
          `demo: rotation ${paused.rotationId} is at confirm .*waiting for gate "issuer-smoke-test" until \\d{4}-`,
        ),
      );
      expect(human.stdout).not.toContain('\u001b[');
      const colored = await runCli(['status'], { cwd: dir, env: { FORCE_COLOR: '1' }, name: 'ops-status-color' });
      expect(colored.stdout).toContain('\u001b[32mrotated\u001b[0m');
      const noColor = await runCli(['status'], {
        cwd: dir,
        env: { FORCE_COLOR: '1', NO_COLOR: '1' },
        name: 'ops-status-nocolor',
      });
      expect(noColor.stdout).not.toContain('\u001b[');
    },
  );
});

describe('check (CLI)', () => {
  it(
    'a service account that does not exist and an unusable store fail with their fix, one line each; nothing is written',
    { timeout: 90_000 },
    async () => {
      const dir = workspace(
        config({ sa: 'svc_acct_doesnotexist', extraStore: '{ type: file, path: blocker/app.json }' }),
        'ops-check',
      );
      writeFileSync(path.join(dir, 'blocker'), 'a file where a folder should be');
      const before = treeSnapshot(dir);

      const j = await runCli(['check', '--json'], { cwd: dir, env: env(), name: 'ops-check-json' });
      expect(j.code, j.stderr).toBe(1);
      const report = JSON.parse(j.stdout) as {
        ok: boolean;
        checks: Array<{ key: string; check: string; status: string; detail: string; fix?: string; code?: string }>;
      };
      expect(report.ok).toBe(false);
      const by = (c: string) => report.checks.find((x) => x.check === c)!;
      expect(by('state')).toMatchObject({ status: 'ok' });
      expect(by('providers')).toMatchObject({ status: 'ok' });
      expect(by('issuer.list')).toMatchObject({
        status: 'ok',
        detail: expect.stringMatching(/can list the keys of project proj_ops/),
      });
      expect(by('issuer.check')).toMatchObject({
        status: 'fail',
        code: 'ISSUER_NOT_FOUND',
        detail: expect.stringMatching(/service account svc_acct_doesnotexist not found in project proj_ops/),
        fix: expect.stringMatching(/fix serviceAccount in the issuer config/),
      });
      expect(by('issuer.create')).toMatchObject({ status: 'skip' });
      expect(by('store[0]')).toMatchObject({ status: 'ok' });
      expect(by('store[1]')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/blocker.*ENOTDIR/) });
      expect(by('gate[0]')).toMatchObject({ status: 'ok' });

      const h = await runCli(['check'], { cwd: dir, env: env(), name: 'ops-check' });
      expect(h.code).toBe(1);
      const lines = h.stdout.trim().split('\n');
      expect(lines).toHaveLength(report.checks.length + 1);
      expect(lines.find((l) => l.includes('issuer.check'))).toMatch(
        /^FAIL\s+app\s+issuer\.check\s+ISSUER_NOT_FOUND: .* → fix: fix serviceAccount/,
      );
      expect(lines.at(-1)).toBe('2 check(s) failed');

      // no admin key: a failing line with the fix, exit 1
      const noKey = await runCli(['check', '--json'], {
        cwd: dir,
        env: { KEYROTOR_MASTER_KEY: 'ab'.repeat(32) },
        name: 'ops-check-nokey',
      });
      expect(noKey.code).toBe(1);
      const nk = JSON.parse(noKey.stdout) as typeof report;
      // (the issuer refuses to be built without it, or its first call fails: either way one line names the fix)
      expect(nk.checks.filter((x) => x.status === 'fail')).toEqual([
        expect.objectContaining({
          check: expect.stringMatching(/^(providers|issuer\.list)$/),
          code: 'CONFIG_ENV_MISSING',
          fix: expect.stringMatching(/export OPENAI_ADMIN_KEY=/),
        }),
      ]);

      expect(treeSnapshot(dir)).toEqual(before);
      expect(j.stdout + h.stdout + noKey.stdout + j.stderr + h.stderr).not.toContain(CANARY);
    },
  );

  it('a healthy local setup passes every check and writes nothing', async () => {
    const dir = workspace(LOCAL_CONFIG, 'ops-check-ok');
    const before = treeSnapshot(dir);
    const r = await runCli(['check'], { cwd: dir, name: 'ops-check-ok' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^ok\s+demo\s+store\[0\]\s+file:\.keyrotor\/secrets\/demo\.json: reachable and readable; empty/m,
    );
    expect(r.stdout.trim().split('\n').at(-1)).toBe('all checks passed');
    expect(treeSnapshot(dir)).toEqual(before);
  });
});

describe('inventory (CLI)', () => {
  it(
    'flags exactly the planted keys: unmanaged, orphaned, stale, non-expiring, user-owned; exit 1; read-only',
    { timeout: 90_000 },
    async () => {
      const project = 'proj_inv';
      const sa = fake.state.addServiceAccount('inv-app', project).id;
      const dir = workspace(config({ project, sa }), 'ops-inventory');
      const boot = await inProcess(dir)();
      expect(boot.outcome).toBe('rotated');
      const managed = boot.newKeyId!;

      const clean = await runCli(['inventory', '--json'], { cwd: dir, env: env(), name: 'ops-inv-clean' });
      expect(clean.code, clean.stderr).toBe(0);
      const c = JSON.parse(clean.stdout) as {
        flagged: number;
        keys: Array<{ keyId: string; managedBy: string; role: string; flags: unknown[] }>;
      };
      expect(c.flagged).toBe(0);
      expect(c.keys).toEqual([
        expect.objectContaining({ keyId: managed, managedBy: 'app', role: 'current', flags: [] }),
      ]);

      const now = Math.floor(Date.now() / 1000);
      const day = 86_400;
      const legacy = fake.state.addServiceAccount('legacy-batch', project).id;
      const planted = {
        userKey: fake.state.plantKey({ projectId: project, name: 'laptop key' }), // user-owned, no expiry, unmanaged
        stale: fake.state.plantKey({
          projectId: project,
          name: 'old batch',
          owner: { type: 'service_account', serviceAccountId: legacy },
          createdAt: now - 200 * day,
          lastUsedAt: now - 90 * day,
          expiresAt: now + 30 * day,
        }),
        neverUsed: fake.state.plantKey({
          projectId: project,
          name: 'never used',
          owner: { type: 'service_account', serviceAccountId: legacy },
          createdAt: now - 60 * day,
          lastUsedAt: null,
          expiresAt: now + 30 * day,
        }),
        noExpiry: fake.state.plantKey({
          projectId: project,
          name: 'forever',
          owner: { type: 'service_account', serviceAccountId: legacy },
          createdAt: now - day,
          lastUsedAt: now - 3600,
          expiresAt: null,
        }),
        orphan: fake.state.plantKey({
          projectId: project,
          name: 'keyrotor.app.rot-20260101t000000z-deadbeef',
          owner: { type: 'service_account', serviceAccountId: sa },
          createdAt: now - 2 * day,
          lastUsedAt: null,
          expiresAt: now + 20 * day,
        }),
      };
      const before = fake.state
        .liveKeys(project)
        .map((k) => k.id)
        .sort();
      const beforeTree = treeSnapshot(dir);
      const mark = fake.log.length;

      const r = await runCli(['inventory', '--json'], { cwd: dir, env: env(), name: 'ops-inv-json' });
      expect(r.code, r.stderr).toBe(1);
      const inv = JSON.parse(r.stdout) as {
        flagged: number;
        projects: Array<{ project: string; keys: string[]; listed: number }>;
        keys: Array<{
          keyId: string;
          owner: { type: string };
          ageDays: number;
          lastUsedAt: string | null;
          expiresAt: string | null;
          managedBy: string | null;
          flags: Array<{ flag: string; reason: string }>;
        }>;
      };
      expect(inv.projects).toEqual([{ project, keys: ['app'], listed: 6 }]);
      const flagsOf = (id: string) =>
        inv.keys
          .find((k) => k.keyId === id)!
          .flags.map((f) => f.flag)
          .sort();
      expect(
        inv.keys
          .filter((k) => k.flags.length)
          .map((k) => k.keyId)
          .sort(),
      ).toEqual(
        Object.values(planted)
          .map((k) => k.id)
          .sort(),
      );
      expect(inv.flagged).toBe(5);
      expect(flagsOf(planted.userKey.id)).toEqual(['no_expiry', 'unmanaged', 'user_owned']);
      expect(flagsOf(planted.stale.id)).toEqual(['stale', 'unmanaged']);
      expect(flagsOf(planted.neverUsed.id)).toEqual(['stale', 'unmanaged']);
      expect(flagsOf(planted.noExpiry.id)).toEqual(['no_expiry', 'unmanaged']);
      expect(flagsOf(planted.orphan.id)).toEqual(['orphaned']);
      expect(flagsOf(managed)).toEqual([]);
      expect(inv.keys.find((k) => k.keyId === planted.stale.id)).toMatchObject({
        owner: { type: 'service_account' },
        ageDays: 200,
        lastUsedAt: new Date((now - 90 * day) * 1000).toISOString(),
      });

      const human = await runCli(['inventory', '--unused-days', '100'], { cwd: dir, env: env(), name: 'ops-inv' });
      expect(human.code).toBe(1);
      expect(human.stdout).toMatch(/^PROJECT\s+KEY ID\s+NAME\s+OWNER\s+AGE\s+LAST USED\s+EXPIRES\s+MANAGED BY\s+FLAGS/);
      expect(human.stdout).toContain(`! ${planted.userKey.id} user_owned: owned by user Ada Admin`);
      expect(human.stdout).toContain(
        `! ${planted.orphan.id} orphaned: made by keyrotor for app in rotation rot-20260101t000000z-deadbeef`,
      );
      // with a 100-day window the 90-day-idle key is no longer stale (the never-used one is 60 days old: not stale either)
      expect(human.stdout).not.toContain(`! ${planted.stale.id} stale`);
      expect(human.stdout).toMatch(/6 key\(s\) in 1 project\(s\); 5 flagged \(stale = unused for 100 days\)/);

      // read-only: nothing deleted at the issuer, nothing written locally, no secret printed
      expect(
        fake.state
          .liveKeys(project)
          .map((k) => k.id)
          .sort(),
      ).toEqual(before);
      expect(fake.log.slice(mark).filter((e) => e.method !== 'GET')).toEqual([]);
      expect(fake.log.slice(mark).map((e) => e.route)).toContain('projects.apiKeys.list');
      expect(treeSnapshot(dir)).toEqual(beforeTree);
      expect(r.stdout + human.stdout + r.stderr + human.stderr).not.toContain(CANARY);
    },
  );
});
