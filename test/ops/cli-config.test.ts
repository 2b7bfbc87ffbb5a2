/**
 * The `audit:` and `notifications:` config sections end to end through the spawned CLI: the rotate
 * command flushes pending webhooks before it exits, `rotate --dry-run` runs the preflight checks.
 * These need the lead's patches (config schema fields, rotate.ts: flushObservers + preflight on
 * --dry-run); until they land the test is skipped, and it turns itself on when they do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { configSchema } from '../../src/app/config/schema.ts';
import { capture } from '../helpers/artifacts.ts';
import { runCli, workspace, LOCAL_CONFIG, treeSnapshot } from '../entrypoints/cli-helpers.ts';

const landed = ['audit', 'notifications'].every(
  (f) => f in ((configSchema as unknown as { shape?: object }).shape ?? {}),
);

const bodies: string[] = [];
let answered = 0;
let server: Server;
let url = '';
beforeAll(async () => {
  server = createServer((req, res) => {
    let b = '';
    req.on('data', (d: Buffer) => (b += d.toString()));
    req.on('end', () => {
      bodies.push(b);
      capture('cli-webhook.json', b);
      answered++;
      res.writeHead(answered === 1 ? 503 : 200).end(); // the first try fails: the CLI must retry before exiting
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  server.unref();
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe.skipIf(!landed)('audit and notifications from the config (CLI)', () => {
  it('a webhook that fails once is retried and delivered before the CLI exits; the audit path is configurable; dry-run runs the preflight', async () => {
    const cfg = `${LOCAL_CONFIG}audit: { path: trail/audit.jsonl }\nnotifications:\n  - { urlEnv: HOOK_URL, on: [rotated], backoff: 200ms, format: slack }\n`;
    const dir = workspace(cfg, 'ops-cli-config');
    const r = await runCli(['rotate', '--now', 'demo'], { cwd: dir, env: { HOOK_URL: url } });
    expect(r.code, r.stderr).toBe(0);
    expect(bodies).toHaveLength(2);
    expect(JSON.parse(bodies[1]!)).toMatchObject({
      text: expect.stringMatching(/keyrotor: demo rotated/),
      blocks: expect.any(Array),
    });
    expect(r.stderr).not.toContain(url);

    const v = await runCli(['audit', 'verify'], { cwd: dir });
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/audit log trail\/audit\.jsonl: 8 record\(s\), chain intact/);

    const before = treeSnapshot(dir);
    const d = await runCli(['rotate', '--dry-run', '--json'], { cwd: dir, env: { HOOK_URL: url } });
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout)).toMatchObject({
      results: [{ dryRun: true }],
      preflight: {
        ok: true,
        checks: expect.arrayContaining([expect.objectContaining({ check: 'store[0]', status: 'ok' })]),
      },
    });
    expect(treeSnapshot(dir)).toEqual(before);
    expect(bodies).toHaveLength(2);

    const noEnv = await runCli(['rotate', '--now', 'demo'], { cwd: dir });
    expect(noEnv.code).toBe(2);
    expect(noEnv.stderr).toMatch(/CONFIG_ENV_MISSING: notifications\[0\]: environment variable HOOK_URL/);
  });
});
