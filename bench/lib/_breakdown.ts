import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { rotateKey } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { fileLogger } from './util.ts';

const N = Number(process.env.N ?? 200);
const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-bd-'));
const openai = await startOpenAIFake({ projects: ['proj_bench'] });
const env = { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };
const sa = openai.state.addServiceAccount('sa').id;
const yaml = `version: 1
defaults:
  verify: { timeout: 10s, interval: 100ms }
  verifyRevoked: { timeout: 10s, interval: 100ms }
  revoke: { attempts: 3, backoff: 100ms }
keys:
  - name: bd
    issuer: { type: openai, project: proj_bench, serviceAccount: ${sa}, baseURL: "${openai.baseURL}", timeout: 10s, rateLimit: 10000 }
    stores:
      - { type: file }
    health:
      - { type: issuer-smoke-test, timeout: 10s, interval: 100ms }
`;
const file = path.join(dir, 'rotation.config.yaml');
writeFileSync(file, yaml);
const config = parseConfig(yaml, file, env);
const stateStore = createStateStore(config, env) as unknown as Record<string, unknown>;
await (stateStore.init as () => Promise<void>)?.();
const t = new Map<string, number>();
const c = new Map<string, number>();
for (const [k, v] of Object.entries(stateStore)) {
  if (typeof v !== 'function' || k === 'auditLog') continue;
  stateStore[k] = async (...a: unknown[]) => {
    const t0 = performance.now();
    try {
      return await (v as (...a: unknown[]) => unknown).apply(stateStore, a);
    } finally {
      t.set(k, (t.get(k) ?? 0) + performance.now() - t0);
      c.set(k, (c.get(k) ?? 0) + 1);
    }
  };
}
const logger = await fileLogger(path.join(dir, 'log.jsonl'));
const withObs = !process.env.NOOBS;
let total = 0;
for (let i = 0; i < N + 5; i++) {
  if (i === 5) {
    t.clear();
    c.clear();
    total = 0;
  }
  const observers = withObs
    ? defaultObservers({ config, logger, actor: 'bench', env, stateStore: stateStore as never })
    : [];
  const t0 = performance.now();
  const r = await rotateKey(config.keys[0]!, {
    config,
    stateStore: stateStore as never,
    logger,
    env,
    now: true,
    actor: 'bench',
    observers,
  });
  total += performance.now() - t0;
  if (r.outcome !== 'rotated') throw new Error('x');
}
console.log('per rotation', (total / N).toFixed(2), 'ms');
for (const [k, v] of [...t].sort((a, b) => b[1] - a[1]))
  console.log(k.padEnd(20), (v / N).toFixed(2), 'ms', (c.get(k)! / N).toFixed(1), 'calls');
await (stateStore.close as () => Promise<void>)?.();
await openai.close();
rmSync(dir, { recursive: true, force: true });
for (const [k, v] of Object.entries((globalThis as any).__bd ?? {}))
  console.log('  ', k.padEnd(20), ((v as number) / (N + 5)).toFixed(3), 'ms per rotation');
