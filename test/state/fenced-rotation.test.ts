/**
 * Fencing through the real run loop, on the file backend and on PostgreSQL: worker A freezes in the
 * middle of a rotation (its renewals stop, like a GC pause, SIGSTOP or a frozen Lambda) until its
 * lease expired and worker B resumed and finished the rotation. When A wakes, its next state write is
 * refused (LEASE_LOST), so it stops at the write-ahead barrier: it neither overwrites B's record nor
 * touches the issuer or the stores again.
 */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createStateAuditLog, createStateStore } from '../../src/app/state/index.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { isLease, type Lease, type StateStore } from '../../src/core/ports.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { keyConfig } from '../helpers/config.ts';

const MASTER = '5c'.repeat(32);

const configText = (state: string): string => keyConfig({ state, defaults: ['lease: { ttl: 1s }'] });

/**
 * Worker A's view of the store: renewals never happen; the write entering `promote` blocks until
 * `wake` — before it reaches the store, or (`afterWrite`) once it landed (the worker is paused right
 * after its write, before it hears back).
 */
function freezingStore(real: StateStore, afterWrite = false) {
  let wake!: () => void;
  const woken = new Promise<void>((r) => (wake = r));
  let frozen!: () => void;
  const isFrozen = new Promise<void>((r) => (frozen = r));
  let once = false;
  const store: StateStore = {
    ...real,
    label: real.label,
    read: (k) => real.read(k),
    keys: () => real.keys(),
    finish: (...a) => real.finish(...a),
    setProviderState: (...a) => real.setProviderState(...a),
    put: (...a) => real.put(...a),
    async saveActive(k, rot, fence, audit) {
      const freeze = !once && (rot.snapshot as { value?: unknown }).value === 'promote';
      if (freeze) once = true;
      if (freeze && !afterWrite) {
        frozen();
        await woken;
      }
      await real.saveActive(k, rot, fence, audit);
      if (freeze && afterWrite) {
        frozen();
        await woken;
      }
    },
    async acquire(k, owner, ttl) {
      const got = await real.acquire(k, owner, ttl);
      if (!isLease(got)) return got;
      const l: Lease = {
        owner: got.owner,
        token: got.token,
        get expiresAt() {
          return got.expiresAt;
        },
        renew: async () => {}, // frozen: the renewal timer fires, nothing reaches the store
        release: () => got.release(),
      };
      return l;
    },
  };
  return { store, isFrozen, wake };
}

async function scenario(dir: string, state: string, env: NodeJS.ProcessEnv, afterWrite = false) {
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, configText(state));
  const cfg = parseConfig(configText(state), file, env);
  const key = cfg.keys[0]!;
  const setup = createStateStore(cfg, env);
  await setup.init?.();
  // a first rotation bootstraps the store (it was empty)
  const boot = await rotateKey(key, { config: cfg, stateStore: setup, logger: silentLogger(), env, now: true });
  expect(boot.outcome).toBe('rotated');

  const a = freezingStore(createStateStore(cfg, env), afterWrite);
  const b = createStateStore(cfg, env);
  // both workers keep the audit trail (as the CLI, Lambda and daemon do)
  const observers = (actor: string, stateStore: StateStore) => ({
    actor,
    observers: defaultObservers({ config: cfg, logger: silentLogger(), actor, env, stateStore }),
  });
  const runA = rotateKey(key, {
    config: cfg,
    stateStore: a.store,
    logger: silentLogger(),
    env,
    now: true,
    ...observers('worker-a', a.store),
  });
  await a.isFrozen;
  const during = await b.read('app');
  expect(during?.active).not.toBeNull();
  const rotationId = during!.active!.rotationId;

  // B cannot take over while A's lease is still valid ...
  const early = await rotateKey(key, { config: cfg, stateStore: b, logger: silentLogger(), env, resumeOnly: true });
  expect(early.outcome).toBe('locked');
  // ... but after its ttl it resumes A's rotation and finishes it
  await new Promise((r) => setTimeout(r, 1_300));
  const resumed = await rotateKey(key, {
    config: cfg,
    stateStore: b,
    logger: silentLogger(),
    env,
    resumeOnly: true,
    ...observers('worker-b', b),
  });
  expect(resumed).toMatchObject({ outcome: 'rotated', rotationId });
  const after = await b.read('app');

  a.wake();
  const stale = await runA;
  expect(stale.outcome).toBe('locked');
  expect(stale.error?.code).toBe('LEASE_LOST');
  // nothing of A's landed after B's finish
  expect(await b.read('app')).toEqual(after);
  expect(after).toMatchObject({
    active: null,
    currentKeyId: resumed.newKeyId,
    last: { outcome: 'rotated', rotationId },
  });

  // the audit trail: A's records of this rotation all precede B's result (A's audit records are
  // fenced like its snapshots: written in the same write or not at all), and the chain verifies
  const log = createStateAuditLog(cfg, env);
  expect(await log.verify()).toMatchObject({ ok: true });
  const mine = (await log.read()).records.filter((r) => r.rotationId === rotationId);
  const end = mine.findIndex((r) => r.type === 'result');
  expect(mine[end]).toMatchObject({ type: 'result', outcome: 'rotated', actor: 'worker-b' });
  expect(mine.slice(end + 1)).toEqual([]);
  expect(mine.some((r) => r.actor === 'worker-a')).toBe(true);
  // the transition A's landed write entered is recorded by A, before B resumed from it (B records
  // its own entry into promote, marked resumed)
  if (afterWrite)
    expect(mine.filter((r) => r.state === 'promote').map((r) => [r.actor, r.resumed === true])).toEqual([
      ['worker-a', false],
      ['worker-b', true],
    ]);

  // and the next rotation works normally
  const next = await rotateKey(key, { config: cfg, stateStore: b, logger: silentLogger(), env, now: true });
  expect(next.outcome).toBe('rotated');
  expect(next.oldKeyId).toBe(resumed.newKeyId);
  for (const s of [setup, a.store, b]) await s.close?.();
}

describe('fenced leases in the run loop', () => {
  it('file backend: a frozen worker that lost its lease cannot write after its successor', async () => {
    await scenario(tempDir('fenced-file'), '', { KEYROTOR_MASTER_KEY: MASTER });
  }, 30_000);
  it('file backend: a worker paused right after a write landed appends no audit record when it wakes', async () => {
    await scenario(tempDir('fenced-file-after'), '', { KEYROTOR_MASTER_KEY: MASTER }, true);
  }, 30_000);

  const PG = postgresSupportOrSkip('fenced rotation on PostgreSQL');
  describe.skipIf(!PG)('postgres', () => {
    const db = usePostgresDatabase('fenced');
    it('postgres backend: a frozen worker that lost its lease cannot write after its successor', async () => {
      await scenario(tempDir('fenced-pg'), 'state: { type: postgres }', {
        KEYROTOR_MASTER_KEY: MASTER,
        KEYROTOR_DATABASE_URL: db.url(),
      });
    }, 30_000);
    it('postgres backend: a worker paused right after a write landed appends no audit record when it wakes', async () => {
      await scenario(
        tempDir('fenced-pg-after'),
        'state: { type: postgres, schema: after }',
        { KEYROTOR_MASTER_KEY: MASTER, KEYROTOR_DATABASE_URL: db.url() },
        true,
      );
    }, 30_000);
  });
});
