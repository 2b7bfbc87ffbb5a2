/**
 * Preflight in-process: gate endpoints probed over loopback HTTP, stores that disagree, a current key
 * deleted behind keyrotor's back, and the rendering (one line per check, fix on failures).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { checkGate, colorEnabled, renderPreflight, runPreflight } from '../../src/app/preflight.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { systemClock } from '../../src/core/clock.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import { Secret } from '../../src/core/secret.ts';
import type { HealthGate, ProviderContext } from '../../src/core/ports.ts';
import { createFileStore } from '../../providers/stores/file/index.ts';
import { fileStoreSchema } from '../../providers/stores/file/file.schema.ts';
import { createLocalIssuer } from '../../providers/issuers/local/index.ts';
import { localIssuerSchema } from '../../providers/issuers/local/local.schema.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { tempDir } from '../helpers/artifacts.ts';

let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    res.writeHead(req.url?.startsWith('/fp') ? 401 : 200).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  server.unref();
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const gate = (type: string, extra: object = {}): HealthGate => ({
  type,
  name: type,
  timeoutMs: 1000,
  intervalMs: 100,
  check: async () => ({ pass: true, observation: '' }),
  ...extra,
});

describe('gate endpoints', () => {
  it('every configured URL must answer (any HTTP status); credentials and queries are never shown', async () => {
    const ok = await checkGate(
      'app',
      0,
      gate('http'),
      { urls: [`${base}/fp?token=s3cr3t`, `http://user:pw@127.0.0.1:${new URL(base).port}/health`] },
      2000,
    );
    expect(ok).toMatchObject({ status: 'ok', check: 'gate[0]' });
    expect(ok.detail).toContain(`${base}/fp 401`);
    expect(ok.detail).toContain(`${base}/health 200`);
    expect(ok.detail).not.toMatch(/s3cr3t|user:pw/);

    const closed = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const bad = await checkGate(
      'app',
      1,
      gate('http'),
      { urls: [`${base}/fp`, `http://127.0.0.1:${closed}/fp`] },
      2000,
    );
    expect(bad).toMatchObject({ status: 'fail', check: 'gate[1]', fix: expect.stringMatching(/consumer is running/) });
    expect(bad.detail).toMatch(new RegExp(`127\\.0\\.0\\.1:${closed}/fp cannot be reached`));
  });

  it('a gate with its own preflight is asked; one without endpoints is skipped; the smoke test relies on the issuer', async () => {
    expect(
      await checkGate('app', 0, gate('manual', { preflight: async () => 'approver channel reachable' }), {}, 500),
    ).toMatchObject({ status: 'ok', detail: expect.stringMatching(/approver channel reachable/) });
    const failing = gate('command', {
      preflight: async () =>
        Promise.reject(
          new KeyrotorError('GATE_ERROR', 'command ./probe.sh is not executable', { hint: 'chmod +x ./probe.sh' }),
        ),
    });
    expect(await checkGate('app', 0, failing, {}, 500)).toMatchObject({
      status: 'fail',
      code: 'GATE_ERROR',
      fix: 'chmod +x ./probe.sh',
    });
    expect(await checkGate('app', 0, gate('manual'), {}, 500)).toMatchObject({ status: 'skip' });
    expect(await checkGate('app', 0, gate('issuer-smoke-test'), {}, 500)).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/asks the issuer/),
    });
  });
});

const TWO_STORES = `version: 1
defaults:
  verify: { timeout: 5s, interval: 50ms }
  verifyRevoked: { timeout: 5s, interval: 50ms }
keys:
  - name: demo
    issuer: { type: local }
    stores: [ { type: file, path: a/demo.json }, { type: file, path: b/demo.json } ]
`;

function ctxFor(dir: string, stateDir: string): ProviderContext {
  return {
    keyName: 'demo',
    stateDir,
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env: {},
    providerState: { get: () => undefined, set: async () => {} },
  };
}

describe('runPreflight', () => {
  it('stores that serve different keys, and a current key deleted at the issuer, fail with their fix', async () => {
    const dir = tempDir('ops-preflight');
    const cfg = parseConfig(TWO_STORES, path.join(dir, 'rotation.config.yaml'), {});
    const stateStore = createFileStateStore(cfg.stateDir);
    const o = { config: cfg, keys: cfg.keys, stateStore, logger: silentLogger(), env: {} };
    const r = await rotateKey(cfg.keys[0]!, { config: cfg, stateStore, logger: silentLogger(), env: {}, now: true });
    expect(r.outcome).toBe('rotated');

    const good = await runPreflight(o);
    expect(good.ok).toBe(true);
    expect(good.checks.find((c) => c.check === 'stores.agree')).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/every store serves fp_/),
    });
    expect(good.checks.find((c) => c.check === 'issuer.current')).toMatchObject({ status: 'ok' });

    // someone changes store b by hand-ish (another rotation id, another value)
    const b = await createFileStore(
      fileStoreSchema.parse({ type: 'file', path: 'b/demo.json' }),
      ctxFor(dir, cfg.stateDir),
    );
    const v = Secret.of('kr-local-someone-else-put-this-here-0000000000');
    await b.stage({
      rotationId: 'rot-20260101t000000z-00000000',
      secret: v,
      meta: { rotationId: 'rot-20260101t000000z-00000000', fingerprint: fingerprint(v) },
    });
    await b.promote('rot-20260101t000000z-00000000');
    // and the current key is deleted at the issuer
    const issuer = await createLocalIssuer(localIssuerSchema.parse({ type: 'local' }), ctxFor(dir, cfg.stateDir));
    await issuer.revoke(r.newKeyId!);

    const bad = await runPreflight(o);
    expect(bad.ok).toBe(false);
    expect(bad.checks.find((c) => c.check === 'stores.agree')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/different current keys/),
      fix: expect.stringMatching(/same key/),
    });
    expect(bad.checks.find((c) => c.check === 'issuer.current')).toMatchObject({
      status: 'fail',
      fix: 'run `keyrotor rotate --now demo` to issue and store a new key',
    });
    const text = renderPreflight(bad);
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(bad.checks.length + 1);
    expect(lines.filter((l) => l.startsWith('FAIL')).every((l) => l.includes('→ fix: '))).toBe(true);
    expect(renderPreflight(bad, { color: true })).toContain('\u001b[31mFAIL');
  });

  it('colours: NO_COLOR wins, FORCE_COLOR forces, otherwise only on a TTY', () => {
    expect(colorEnabled({}, { isTTY: true })).toBe(true);
    expect(colorEnabled({}, { isTTY: false })).toBe(false);
    expect(colorEnabled({ NO_COLOR: '1' }, { isTTY: true })).toBe(false);
    expect(colorEnabled({ FORCE_COLOR: '1' }, { isTTY: false })).toBe(true);
    expect(colorEnabled({ FORCE_COLOR: '1', NO_COLOR: '1' }, { isTTY: true })).toBe(false);
    expect(colorEnabled({ TERM: 'dumb' }, { isTTY: true })).toBe(false);
  });
});
