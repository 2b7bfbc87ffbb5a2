/**
 * GCP Secret Manager from the consumer's side: an application reading `versions/latest` (the default of
 * Cloud Run secret env vars and volumes, the GKE add-on, `gcloud secrets versions access latest`) and one
 * reading the `current` alias, at EVERY instant — after each gRPC call the store makes (observed inside
 * the loopback fake, before the answer is sent) — of a rotation, a rollback at each stage, and a crash at
 * every call of every step (before or after the change is applied) followed by a resume in a new store
 * instance (a new process: nothing remembered) or by a rollback.
 *
 * The issuer is modelled by which keys are alive: the old key until the rotation's revoke, the new key
 * from its creation (before stage) until a rollback's discard. A reader must always get a live key, and
 * exactly the old one until promote starts, the new one once promote finished, the old one again once a
 * rollback's demote finished; a failing read (disabled `latest`, missing alias) is an outage.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { SecretManagerServiceClient } from '@google-cloud/secret-manager';
import { startGcpFake, type GcpFake, type LogEntry } from '../fakes/gcp-secret-manager.ts';
import { meta, value } from './store-contract.ts';
import { createGcpSecretManagerStore } from '../../providers/stores/gcp-secret-manager/index.ts';
import { gcpSecretManagerStoreSchema } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { linesLogger } from '../helpers/logger.ts';

const PROJECT = 'reader';
const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';
const OLD = value(1).reveal();
const NEW = value(2).reveal();

let fake: GcpFake;
let raw: SecretManagerServiceClient;
let stateDir: string;
const logLines: string[] = [];
const open: Array<SecretStore & { close(): Promise<void> }> = [];
let seq = 0;

function ctx(): ProviderContext {
  return {
    keyName: 'reader',
    stateDir,
    configDir: stateDir,
    logger: linesLogger(logLines, {}),
    clock: systemClock,
    env: {},
    providerState: { get: () => undefined, set: async () => {} },
  };
}

async function newStore(id: string): Promise<SecretStore> {
  const cfg = gcpSecretManagerStoreSchema.parse({
    type: 'gcp-secret-manager',
    project: PROJECT,
    secret: id,
    apiEndpoint: '127.0.0.1',
    port: fake.port,
    insecure: true,
  });
  const s = await createGcpSecretManagerStore(cfg, ctx());
  open.push(s);
  return s;
}

type Phase = 'old' | 'promoting' | 'new' | 'demoting';
const allowed: Record<Phase, string[]> = {
  old: [OLD],
  promoting: [OLD, NEW],
  new: [NEW],
  demoting: [OLD, NEW],
};

/** One key's world: the secret, the issuer's live keys, and what the readers saw. */
class Scene {
  readonly id = `reader-${++seq}`;
  readonly name = `projects/${PROJECT}/secrets/${this.id}`;
  phase: Phase = 'old';
  live = new Set<string>([OLD]);
  readonly problems: string[] = [];
  checks = 0;
  #stop: (() => void) | undefined;

  /** what a reader of `ref` gets right now, straight from the fake's state (as AccessSecretVersion resolves it) */
  read(ref: 'latest' | 'current'): string {
    const s = fake.state.secret(this.name);
    const n = ref === 'latest' ? Math.max(0, ...s.versions.keys()) : s.aliases.current;
    const v = n === undefined ? undefined : s.versions.get(n);
    if (!v) throw new Error(`${ref}: NOT_FOUND`);
    if (v.state !== 'ENABLED') throw new Error(`${ref}: FAILED_PRECONDITION (version ${n} is ${v.state})`);
    return v.data.toString('utf8');
  }

  check(when: string): void {
    this.checks++;
    for (const ref of ['latest', 'current'] as const) {
      let got: string;
      try {
        got = this.read(ref);
      } catch (e) {
        this.problems.push(`${when}: ${(e as Error).message}`);
        continue;
      }
      const label = got === OLD ? 'old key' : got === NEW ? 'new key' : 'another value';
      if (!this.live.has(got)) this.problems.push(`${when}: ${ref} serves the ${label}, dead at the issuer`);
      if (!allowed[this.phase].includes(got))
        this.problems.push(`${when}: ${ref} serves the ${label} while ${this.phase}`);
    }
  }

  watch(): void {
    this.#stop = fake.observe((e: LogEntry) => {
      if (e.resource.startsWith(this.name) && !e.resource.startsWith(`${this.name}-`)) this.check(`after ${e.method}`);
      else if (e.resource.includes(this.id)) this.check(`after ${e.method} on the side secret`);
    });
  }

  unwatch(): void {
    this.#stop?.();
  }
}

async function bootstrapped(): Promise<Scene> {
  const sc = new Scene();
  await raw.createSecret({
    parent: `projects/${PROJECT}`,
    secretId: sc.id,
    secret: { replication: { automatic: {} } },
  });
  const s = await newStore(sc.id);
  await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
  await s.promote(R1);
  sc.watch();
  sc.check('after the bootstrap');
  return sc;
}

type Step = 'stage' | 'verify' | 'promote' | 'demote' | 'unstage';

/** run a step the way the workflow does (phases move as the workflow's would) */
async function step(sc: Scene, s: SecretStore, st: Step): Promise<void> {
  switch (st) {
    case 'stage':
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      return;
    case 'verify': {
      const p = await s.readPending(R2);
      if (p?.secret.reveal() !== NEW) throw new Error('verify read something else than the staged key');
      return;
    }
    case 'promote':
      sc.phase = 'promoting';
      await s.promote(R2);
      sc.phase = 'new';
      return;
    case 'demote':
      if (sc.phase !== 'old') sc.phase = 'demoting';
      await s.demote(R2);
      sc.phase = 'old';
      return;
    case 'unstage':
      await s.unstage(R2);
      return;
  }
}

const FORWARD: Step[] = ['stage', 'verify', 'promote'];
/** the compensations the workflow runs when `failed` failed (promote/confirm: demote first) */
const rollbackAfter = (failed: Step): Step[] => (failed === 'promote' ? ['demote', 'unstage'] : ['unstage']);

async function finish(sc: Scene, s: SecretStore, how: 'forward' | 'rollback', failed: Step): Promise<void> {
  if (how === 'forward') {
    for (const st of FORWARD.slice(FORWARD.indexOf(failed) + 1)) await step(sc, s, st);
    sc.live.delete(OLD); // revoke
  } else {
    for (const st of rollbackAfter(failed)) await step(sc, s, st);
    sc.live.delete(NEW); // discard
  }
  sc.check('at the end');
  sc.unwatch();
  const want = how === 'forward' ? NEW : OLD;
  expect(sc.read('latest')).toBe(want);
  expect(sc.read('current')).toBe(want);
  expect(sc.problems).toEqual([]);
}

/** how many gRPC calls one step makes on a straight run from this point */
async function callsOf(prefix: Step[], st: Step, fresh: boolean): Promise<number> {
  const sc = await bootstrapped();
  sc.live.add(NEW);
  const s = await newStore(sc.id);
  for (const p of prefix) await step(sc, s, p);
  const runner = fresh ? await newStore(sc.id) : s;
  const before = fake.log.length;
  await step(sc, runner, st);
  sc.unwatch();
  return fake.log.length - before;
}

beforeAll(async () => {
  process.env.METADATA_SERVER_DETECTION = 'none';
  stateDir = tempDir('gcp-reader');
  fake = await startGcpFake();
  raw = new SecretManagerServiceClient({
    apiEndpoint: '127.0.0.1',
    port: fake.port,
    sslCreds: grpc.credentials.createInsecure(),
    universeDomain: 'googleapis.com',
  });
});

afterAll(async () => {
  capture('gcp-reader-log.jsonl', logLines.join('\n'));
  await Promise.all(open.splice(0).map((s) => s.close()));
  await raw?.close();
  await fake?.close();
});

describe('gcp-secret-manager: `latest` and `current` readers always get a working key', () => {
  it('a straight rotation: the old key through stage and verify, the new key once promoted', async () => {
    const sc = await bootstrapped();
    sc.live.add(NEW); // issued
    const s = await newStore(sc.id);
    for (const st of FORWARD) {
      await step(sc, s, st);
      sc.check(`after ${st}`);
    }
    await finish(sc, s, 'forward', 'promote');
    expect(sc.checks).toBeGreaterThan(8);
  });

  for (const failed of FORWARD) {
    it(`a rollback after ${failed}: the old key at every instant and at the end`, async () => {
      const sc = await bootstrapped();
      sc.live.add(NEW);
      const s = await newStore(sc.id);
      for (const st of FORWARD.slice(0, FORWARD.indexOf(failed) + 1)) await step(sc, s, st);
      await finish(sc, s, 'rollback', failed);
    });
  }

  // a crash at every call of every step, before or after the call's change is applied, then a resume
  // of that step in a new process (or a rollback); every instant is checked
  const cases: Array<{ failed: Step; prefix: Step[] }> = [
    { failed: 'stage', prefix: [] },
    { failed: 'verify', prefix: ['stage'] },
    { failed: 'promote', prefix: ['stage', 'verify'] },
  ];
  for (const { failed, prefix } of cases) {
    it(`a crash at each call of ${failed}, then resume or roll back in a new process`, async () => {
      let scenarios = 0;
      let expected = 0;
      // the step run by the process that ran the steps before it (what it remembers saves reads), or
      // by a new process (a resumed rotation: it reads everything)
      for (const fresh of [false, true]) {
        const n = await callsOf(prefix, failed, fresh);
        if (fresh) expect(n).toBeGreaterThan(0);
        expected += n * 4;
        for (let k = 1; k <= n; k++) {
          for (const afterApply of [false, true]) {
            for (const how of ['forward', 'rollback'] as const) {
              const sc = await bootstrapped();
              sc.live.add(NEW);
              const s = await newStore(sc.id);
              for (const p of prefix) await step(sc, s, p);
              const runner = fresh ? await newStore(sc.id) : s;
              fake.failCall(k, { code: grpc.status.INTERNAL, afterApply, message: 'crash' });
              const crashed = await step(sc, runner, failed).then(
                () => false,
                () => true,
              );
              fake.resetKnobs();
              expect(crashed, `call ${k} of ${failed} failed`).toBe(true);
              // a new process: the workflow re-runs the step it was in, or rolls back
              const t = await newStore(sc.id);
              if (how === 'forward') await step(sc, t, failed);
              await finish(sc, t, how, failed);
              scenarios++;
            }
          }
        }
      }
      expect(scenarios).toBe(expected);
    });
  }

  it('a crash at each call of demote and of unstage, then the compensation re-run in a new process', async () => {
    for (const failed of ['demote', 'unstage'] as const) {
      const n = await callsOf(failed === 'demote' ? ['stage', 'verify', 'promote'] : ['stage'], failed, false);
      expect(n).toBeGreaterThan(0);
      for (let k = 1; k <= n; k++) {
        for (const afterApply of [false, true]) {
          const sc = await bootstrapped();
          sc.live.add(NEW);
          const s = await newStore(sc.id);
          for (const p of failed === 'demote' ? FORWARD : (['stage'] as Step[])) await step(sc, s, p);
          fake.failCall(k, { code: grpc.status.INTERNAL, afterApply, message: 'crash' });
          const crashed = await step(sc, s, failed).then(
            () => false,
            () => true,
          );
          fake.resetKnobs();
          expect(crashed, `call ${k} of ${failed} failed`).toBe(true);
          const t = await newStore(sc.id);
          for (const st of failed === 'demote' ? (['demote', 'unstage'] as Step[]) : (['unstage'] as Step[]))
            await step(sc, t, st);
          sc.live.delete(NEW);
          sc.check('at the end');
          sc.unwatch();
          expect(sc.read('latest')).toBe(OLD);
          expect(sc.read('current')).toBe(OLD);
          expect(sc.problems).toEqual([]);
        }
      }
    }
  });
});
