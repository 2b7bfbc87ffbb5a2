/**
 * The consumer helper end to end: two consumer processes on loopback use `keyrotor/consumer`
 * (src/consumer.ts) to read the file store and serve their key's fingerprint; one reloads on a timer,
 * the other on SIGHUP. A spawned `keyrotor rotate` waits at its `http` gate until both picked up the
 * new key, then revokes the old one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, runCli, treeText, workspace } from './cli-helpers.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { rotateKey } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { CANARY } from '../canary.ts';
import { capture } from '../helpers/artifacts.ts';
import { fileStateRecord } from '../helpers/file-state.ts';

let fake: OpenAIFake;
const children: ChildProcess[] = [];
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await fake?.close();
});

const MASTER = '56'.repeat(32);

/** a 10-line application using keyrotor/consumer, as in the README */
const APP = `
import { createServer } from 'node:http';
const { createConsumer } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'src/entrypoints/consumer.ts')).href)});
const keys = await createConsumer({ config: process.argv[2], key: 'app', refreshInterval: process.argv[3] === 'off' ? false : process.argv[3] });
const server = createServer((req, res) => (req.url === '/keyrotor/fingerprint' ? keys.handler(req, res) : (res.writeHead(404), res.end())));
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port, fingerprint: keys.fingerprint() })));
`;

async function startApp(
  dir: string,
  refresh: string,
  name: string,
): Promise<{ child: ChildProcess; url: string; fingerprint: string }> {
  const child = spawn(process.execPath, [path.join(dir, 'app.mjs'), path.join(dir, 'rotation.config.yaml'), refresh], {
    cwd: dir,
    env: { PATH: process.env.PATH, KEYROTOR_MASTER_KEY: MASTER },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.on('close', () => capture(`consumer-app-${name}.txt`, out + err));
  const first = await new Promise<{ port: number; fingerprint: string }>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(JSON.parse(line));
    });
    child.on('exit', (code) => reject(new Error(`consumer app exited ${code}: ${err}`)));
  });
  return { child, url: `http://127.0.0.1:${first.port}/keyrotor/fingerprint`, fingerprint: first.fingerprint };
}

const stage = (dir: string): string | undefined => {
  const r = fileStateRecord(path.join(dir, '.keyrotor'), 'app');
  return r ? String(r.active?.snapshot?.value) : undefined;
};

describe('keyrotor/consumer end to end', () => {
  it('a rotation waits until the consumers loaded the new key from the store, then completes', async () => {
    const sa = fake.state.addServiceAccount('consumer-e2e').id;
    const cfgText = (health: string) => `version: 1
defaults:
  verify: { timeout: 3s, interval: 100ms }
  verifyRevoked: { timeout: 3s, interval: 100ms }
  revoke: { attempts: 2, backoff: 100ms }
keys:
  - name: app
    issuer: { type: openai, project: ${fake.project}, serviceAccount: ${sa}, baseURL: ${fake.baseURL}, timeout: 5s }
    stores: [ { type: file } ]
    health:${health}
`;
    const env = { OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER };
    const dir = workspace(cfgText(' []'), 'gates-consumer');
    writeFileSync(path.join(dir, 'app.mjs'), APP);
    // bootstrap (in-process): the store holds the first key, which the consumers load at start
    const cfg = parseConfig(cfgText(' []'), path.join(dir, 'rotation.config.yaml'), env);
    const boot = await rotateKey(cfg.keys[0]!, {
      config: cfg,
      stateStore: createFileStateStore(cfg.stateDir),
      logger: silentLogger(),
      env,
      now: true,
    });
    expect(boot.outcome).toBe('rotated');
    const old = fake.state.keyById(boot.newKeyId!)!;

    const timer = await startApp(dir, '300ms', 'timer');
    const hup = await startApp(dir, 'off', 'sighup');
    expect(timer.fingerprint).toBe(fingerprint(old.value));
    expect(hup.fingerprint).toBe(fingerprint(old.value));
    writeFileSync(
      path.join(dir, 'rotation.config.yaml'),
      cfgText(
        `\n      - { type: http, name: consumers, urls: [${timer.url}, ${hup.url}], interval: 100ms, requestTimeout: 1s, timeout: 15s }`,
      ),
    );

    let revokedAt = 0;
    const unsub = fake.onRequest((e) => {
      if (e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old.id}`)) revokedAt ||= Date.now();
    });
    const run = runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env, name: 'gates-consumer' });
    // the operator's deploy hook: once the key is promoted (the rotation waits at confirm), SIGHUP the app
    for (let i = 0; i < 400 && stage(dir) !== 'confirm'; i++) await new Promise((r) => setTimeout(r, 25));
    expect(stage(dir)).toBe('confirm');
    await new Promise((r) => setTimeout(r, 800));
    const before = (await (await fetch(hup.url)).json()) as { fingerprint: string };
    expect(before.fingerprint).toBe(fingerprint(old.value)); // not reloaded yet: the gate is still waiting
    expect(revokedAt).toBe(0);
    const hupAt = Date.now();
    hup.child.kill('SIGHUP');
    const r = await run;
    unsub();
    expect(r.code, r.stderr).toBe(0);
    const res = (JSON.parse(r.stdout) as { results: { outcome: string; oldKeyId: string; newKeyId: string }[] })
      .results[0]!;
    expect(res).toMatchObject({ outcome: 'rotated', oldKeyId: old.id });
    expect(revokedAt).toBeGreaterThan(hupAt);
    const newFp = fingerprint(fake.state.keyById(res.newKeyId)!.value);
    for (const app of [timer, hup])
      expect(((await (await fetch(app.url)).json()) as { fingerprint: string }).fingerprint).toBe(newFp);
    expect(r.stdout + r.stderr + treeText(path.join(dir, '.keyrotor'))).not.toContain(CANARY);
  });
});
