/**
 * A/B of a full rotation (as fs-ops.ts runs it: OpenAI fake, the file secret store, one
 * `issuer-smoke-test` gate, default observers, file state backend) between two checkouts, in one
 * process, interleaved (noise on a shared machine hits both alike). For work on the hot path; not
 * part of `npm run bench`.
 *
 *   node bench/lib/ab.ts /path/to/other/checkout   # N=200 rotations each (env N), medians and ratio
 *   NOOBS=1 ...                                    # without observers
 */
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import { median } from './util.ts';

const other = process.argv[2];
if (!other) throw new Error('usage: node bench/lib/ab.ts <other checkout>');
const roots = { A: path.resolve(other), B: path.resolve(import.meta.dirname, '../..') };
const N = Number(process.env.N ?? 200);
const withObservers = !process.env.NOOBS;
const dir = mkdtempSync(path.join(os.tmpdir(), 'keyrotor-ab-'));
const openai = await startOpenAIFake({ projects: ['proj_bench'] });
const env = { ...process.env, OPENAI_ADMIN_KEY: openai.adminKey, KEYROTOR_MASTER_KEY: 'cd'.repeat(32) };

async function side(name: 'A' | 'B') {
  const root = roots[name];
  const imp = (p: string) => import(pathToFileURL(path.join(root, p)).href);
  const { parseConfig } = await imp('src/app/config/load.ts');
  const { createStateStore } = await imp('src/app/state/index.ts');
  const { rotateKey } = await imp('src/app/run.ts');
  const { defaultObservers } = await imp('src/app/observers.ts');
  const { fileLogger } = await imp('bench/lib/util.ts');
  const d = path.join(dir, name);
  const sa = openai.state.addServiceAccount(`sa-${name}`).id;
  const yaml = `version: 1
defaults:
  verify: { timeout: 10s, interval: 100ms }
  verifyRevoked: { timeout: 10s, interval: 100ms }
  revoke: { attempts: 3, backoff: 100ms }
keys:
  - name: ab-${name.toLowerCase()}
    issuer: { type: openai, project: proj_bench, serviceAccount: ${sa}, baseURL: "${openai.baseURL}", timeout: 10s, rateLimit: 10000 }
    stores:
      - { type: file }
    health:
      - { type: issuer-smoke-test, timeout: 10s, interval: 100ms }
`;
  const { mkdirSync } = await import('node:fs');
  mkdirSync(d, { recursive: true });
  const file = path.join(d, 'rotation.config.yaml');
  writeFileSync(file, yaml);
  const config = parseConfig(yaml, file, env);
  const stateStore = createStateStore(config, env);
  await stateStore.init?.();
  const logger = await fileLogger(path.join(d, 'log.jsonl'));
  return {
    close: () => stateStore.close?.(),
    async rotate() {
      const observers = withObservers ? defaultObservers({ config, logger, actor: 'bench', env, stateStore }) : [];
      const t0 = performance.now();
      const r = await rotateKey(config.keys[0], {
        config,
        stateStore,
        logger,
        env,
        now: true,
        actor: 'bench',
        observers,
      });
      const t = performance.now() - t0;
      if (r.outcome !== 'rotated') throw new Error(`${name}: rotation ended ${r.outcome}`);
      return t;
    },
  };
}

const A = await side('A');
const B = await side('B');
try {
  for (let i = 0; i < 5; i++) {
    await A.rotate();
    await B.rotate();
  }
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < N; i++) {
    if (i % 2) {
      ta.push(await A.rotate());
      tb.push(await B.rotate());
    } else {
      tb.push(await B.rotate());
      ta.push(await A.rotate());
    }
  }
  const a = median(ta);
  const b = median(tb);
  console.log(
    `A ${roots.A}: ${a.toFixed(2)} ms  B ${roots.B}: ${b.toFixed(2)} ms  B/A ${(b / a).toFixed(3)} (medians of ${N}, ${withObservers ? 'default observers' : 'no observers'})`,
  );
} finally {
  await A.close();
  await B.close();
  await openai.close();
  rmSync(dir, { recursive: true, force: true });
}
