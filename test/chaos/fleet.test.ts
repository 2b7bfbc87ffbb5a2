/**
 * Many workers, one backend (issue 12): three real `keyrotor rotate` processes share due keys (90 in
 * `npm test`, 300 with KEYROTOR_FLEET=1) by claiming them in the backend
 * (OpenAI issuer on the loopback fake, file secret store) through one PostgreSQL state backend with a
 * short lease ttl. One worker is SIGKILLed at a seeded moment (after the n-th key create at the
 * issuer); another is SIGSTOPped while it holds leases, stays stopped past the ttl while a successor
 * (`keyrotor resume`) takes its rotations over and finishes them, and is then SIGCONTinued. A live
 * worker may also take over one of the stopped worker's expired leases (the per-key path at the end
 * of its run): the successor then finds that key `locked` by it, and the picture below is taken once
 * that worker is done with it. A final `keyrotor rotate` pass finishes what the killed worker left. Then:
 *   - every key was rotated exactly once: one key create per service account at the issuer, one
 *     `rotated` result per key in the audit trail, no rolled-back or failed rotation;
 *   - no stray key at the issuer: each service account has exactly one live key, the key's current one;
 *   - no state write from the paused worker after it lost its leases: the records of the keys whose
 *     lease was granted to another worker while it was stopped are unchanged since that worker finished
 *     them, no transition of those keys was audited after the paused worker woke up, and its results
 *     for the rotations it was running there are LEASE_LOST (a key whose expired lease nobody took
 *     is still its own: it carries on with it when it wakes, under the same fencing token);
 *   - `keyrotor audit verify` passes.
 * Keys are made due by bootstrapping them in this process with a clock 31 days in the past.
 *
 * Reproduce with KEYROTOR_CHAOS_SEED=<seed> (the kill and stop points are seeded; where they land
 * inside a rotation also depends on timing). KEYROTOR_FLEET_KEYS changes the number of keys.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CLI } from '../entrypoints/cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { postgresSupportOrSkip, startPostgres, type Postgres } from '../fakes/postgres.ts';
import { chaosSeed, mulberry32 } from './rng.ts';
import { parseConfig } from '../../src/app/config/load.ts';
import type { KeyResult } from '../../src/app/run.ts';
import { createStateAuditLog, createStateStore } from '../../src/app/state/index.ts';
import type { KeyRecord, StateStore } from '../../src/core/ports.ts';

const MASTER = '7f'.repeat(32);
const SEED = chaosSeed();
/**
 * Which runs: `npm test` runs 90 keys with the SIGKILL and the SIGSTOP (about 35 s on an idle 2-core
 * machine); KEYROTOR_FLEET=1 runs the full scenario with 300 keys; KEYROTOR_FLEET=off skips it
 * (KEYROTOR_FLEET_STOP=0 leaves the SIGSTOP out).
 *
 * Fixed, and replayable with KEYROTOR_CHAOS_SEED: audit records appended after the state write they
 * describe, in a transaction of their own, were lost when a worker was killed in between (seeds
 * 3322121634, 1467680240) or appended late by a worker that woke after its successor's result (seeds
 * 1084458607, 1416765100); now each goes in the same fenced write as its snapshot. A worker SIGSTOPped
 * inside a PostgreSQL transaction kept the lease row locked until it woke (seed 772640961; now the
 * server ends such a session after `idleInTransactionTimeout`, 2 s here); a worker killed between
 * `issue` and saving its first `stage` left a rotation that its successor rolled back at `stage` with
 * SECRET_UNAVAILABLE (seed 3547083255) or STORE_CONFLICT (seed 3106435461); now the successor reads the
 * value back from the store, or issues again under the same rotation.
 */
const FLEET = process.env.KEYROTOR_FLEET === '1';
const RUN = process.env.KEYROTOR_FLEET !== 'off';
if (!RUN) console.warn('chaos: fleet tests skipped (KEYROTOR_FLEET=off)');
const STOP = process.env.KEYROTOR_FLEET_STOP !== '0';
const N = Number(process.env.KEYROTOR_FLEET_KEYS ?? (FLEET ? '300' : '90')) || 90;
/** DynamoDB on moto is slow: fewer keys */
const N_DYNAMO = Number(process.env.KEYROTOR_FLEET_DYNAMO_KEYS ?? (FLEET ? '60' : '15')) || 15;
const TTL_MS = 3_000;
const DAY = 86_400_000;
const PG = RUN && postgresSupportOrSkip('chaos: a fleet of workers on PostgreSQL');
/**
 * The DynamoDB fleet is part of `npm test` with 15 keys (moto, serialised, is slow: 18-36 s per run on
 * 2026-12-06 at load 2-3, 8 of 8 runs green; 68-126 s at load 9-13); KEYROTOR_FLEET=1 runs 60,
 * KEYROTOR_FLEET_DYNAMO_KEYS sets the count, KEYROTOR_FLEET_DYNAMO=0 (or KEYROTOR_FLEET=off) skips it.
 * Seed 2004905767 used to fail: once the successor's `resume` of a key the stopped worker held
 * answered LOCKED, once a key the stopped worker held was audited issue -> rotated after it woke. Both
 * were a live worker taking an expired lease of the stopped worker over (allowed), which the checks
 * did not expect; they now wait for that worker and judge only the leases the stopped worker lost.
 * With 15 keys and 8 slots per worker, the worker to start last could find every key claimed, stop
 * claiming and hold nothing to be stopped with (seeds 4198564644, 2004905767): workers take fewer
 * slots when there are few keys. Replay with KEYROTOR_FLEET_DYNAMO_KEYS=15 KEYROTOR_CHAOS_SEED=<seed>.
 */
const MOTO =
  RUN && process.env.KEYROTOR_FLEET_DYNAMO !== '0' && motoSupportOrSkip('chaos: a fleet of workers on DynamoDB (moto)');

interface Proc {
  child: ChildProcess;
  name: string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function spawnCli(args: string[], cwd: string, env: Record<string, string>, name: string): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
      KEYROTOR_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => {
        capture(`fleet-${name}.stdout`, stdout);
        capture(`fleet-${name}.stderr`, stderr);
        resolve({ code, signal, stdout, stderr });
      });
    },
  );
  return { child, name, done };
}

function resultsOf(stdout: string): KeyResult[] {
  if (!stdout.trim()) return [];
  return (JSON.parse(stdout) as { results: KeyResult[] }).results;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface AuditRow {
  seq: number;
  type: string;
  key?: string | undefined;
  state?: string | undefined;
  outcome?: string | null | undefined;
  error?: { code: string; message: string } | undefined;
}

/** a lease a worker holds (unexpired), with its fencing token */
interface Held {
  key_name: string;
  token: string;
}

/** a key's lease as the backend has it now */
interface LeaseRow {
  owner: string;
  token: string;
  live: boolean;
}

interface Backend {
  stateYaml: string;
  env: Record<string, string>;
  /** the unexpired leases whose owner is this worker process */
  leasesOf(pid: number): Promise<Held[]>;
  /** one key's lease (null: never leased) */
  leaseOf(key: string): Promise<LeaseRow | null>;
}

/**
 * One fleet run; the backend-specific parts are the state config and listing a worker's leases (the
 * owner is `<host>:<pid>:<random>`).
 */
async function fleetScenario(fake: OpenAIFake, backend: Backend, count: number, stop: boolean): Promise<void> {
  console.log(`fleet: seed ${SEED} (replay with KEYROTOR_CHAOS_SEED=${SEED}), ${count} keys`);
  const rng = mulberry32(SEED);
  const t0 = Date.now();
  const names = Array.from({ length: count }, (_, i) => `k${String(i).padStart(3, '0')}`);
  const sa = new Map(names.map((n) => [n, fake.state.addServiceAccount(`fleet-${n}`).id]));
  const config = `version: 1
${backend.stateYaml}
defaults:
  verify: { timeout: 5s, interval: 100ms }
  verifyRevoked: { timeout: 5s, interval: 100ms }
  revoke: { attempts: 2, backoff: 100ms }
  lease: { ttl: ${TTL_MS / 1000}s }
keys:
${names
  .map(
    (n) =>
      `  - { name: ${n}, issuer: { type: openai, project: ${fake.project}, serviceAccount: ${sa.get(n)}, baseURL: ${fake.baseURL}, timeout: 10s }, stores: [ { type: file } ] }`,
  )
  .join('\n')}
`;
  const dir = tempDir('fleet');
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, config);
  const env = { OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER, ...backend.env };
  const cfg = parseConfig(config, file, env);
  const store: StateStore = createStateStore(cfg, env);
  await store.init?.();
  const audit = createStateAuditLog(cfg, env);
  const lastSeq = async () => (await audit.read()).records.at(-1)?.seq ?? 0;

  // bootstrap every key (three CLI processes), then date the bootstraps 31 days back: all keys are due
  const thirds = [0, 1, 2].map((i) => names.filter((_, j) => j % 3 === i));
  const boots = await Promise.all(
    thirds.map(
      (ns, i) => spawnCli(['rotate', '--now', '--json', '--concurrency', '8', ...ns], dir, env, `boot${i}`).done,
    ),
  );
  const boot = boots.flatMap((b) => resultsOf(b.stdout));
  expect(boot.filter((r) => r.outcome !== 'rotated')).toEqual([]);
  expect(boot).toHaveLength(count);
  const longAgo = new Date(Date.now() - 31 * DAY).toISOString();
  for (const k of names) {
    const rec = await store.read(k);
    await store.put({ ...rec!, lastRotatedAt: longAgo });
  }
  const bootKey = new Map(boot.map((r) => [r.key, r.newKeyId]));
  const logMark = fake.log.length;
  const auditMark = await lastSeq();
  console.log(`fleet: bootstrapped ${count} keys in ${Date.now() - t0} ms`);

  // the chaos points: after the n-th key create of the fleet
  // (create #1 at the earliest: with few keys `count * 0.05` rounds to 0, a create that never comes,
  // and worker 0 then ran to its end unkilled: seed 3006825054 with 15 keys)
  const killAt = rng.int(Math.max(1, Math.floor(count * 0.05)), Math.floor(count * 0.4));
  const stopAt = rng.int(Math.max(1, Math.floor(count * 0.1)), Math.floor(count * 0.5));
  console.log(
    `fleet: SIGKILL worker 0 after create #${killAt}${stop ? `, SIGSTOP worker 1 after create #${stopAt}` : ' (no SIGSTOP)'}`,
  );
  let creates = 0;
  const onCreate: Array<{ at: number; fire: () => void }> = [];
  const unsubscribe = fake.onRequest((e) => {
    if (e.route !== 'serviceAccounts.apiKeys.create') return;
    creates += 1;
    for (const w of onCreate.filter((x) => x.at === creates)) w.fire();
  });
  const reached = (at: number) => new Promise<void>((fire) => onCreate.push({ at, fire }));

  const t1 = Date.now();
  // each worker's slots: 8, fewer with few keys, so that a worker started a little later still gets
  // work (one whose first claim grants nothing stops claiming: what is due is held elsewhere)
  const slots = String(Math.max(2, Math.min(8, Math.floor(count / 6))));
  const workers = [0, 1, 2].map((i) => spawnCli(['rotate', '--json', '--concurrency', slots], dir, env, `worker${i}`));
  const pidOf = (w: Proc) => w.child.pid!;

  /** keys whose rotation a worker left half done (killed, or stopped and taken over) */
  const interrupted: string[] = [];
  const killed = (async () => {
    await Promise.race([reached(killAt), workers[0]!.done]);
    workers[0]!.child.kill('SIGKILL');
    await workers[0]!.done;
    // the rotations it left (its leases still name it until someone takes them over)
    interrupted.push(...(await backend.leasesOf(pidOf(workers[0]!))).map((r) => r.key_name));
  })();

  // the pause: once worker 1 holds leases, stop it; a successor resumes its rotations after the ttl
  let held: Held[] = [];
  /** the keys whose lease another worker was granted while worker 1 was stopped */
  const lost: Held[] = [];
  /** the keys worker 1 was running a rotation of (a saved snapshot) when it was stopped */
  const activeAtStop = new Set<string>();
  let wokeAtSeq = 0;
  const frozenRecords = new Map<string, KeyRecord | null>();
  let successor: KeyResult[] = [];
  let blocked = false;
  let unsettled: string[] = [];
  const mineOwner = (owner: string) => owner.includes(`:${pidOf(workers[1]!)}:`);
  const paused = (async () => {
    if (!stop) return;
    await Promise.race([reached(stopAt), workers[1]!.done]);
    for (let i = 0; i < 200 && workers[1]!.child.exitCode === null; i++) {
      const r = await backend.leasesOf(pidOf(workers[1]!));
      if (r.length) {
        workers[1]!.child.kill('SIGSTOP');
        held = r;
        break;
      }
      await sleep(5);
    }
    if (!held.length) return;
    // re-read what it holds now that it is stopped (a grant may have landed in between)
    held = await backend.leasesOf(pidOf(workers[1]!));
    for (const h of held) if ((await store.read(h.key_name))?.active) activeAtStop.add(h.key_name);
    console.log(`fleet: worker 1 stopped holding ${held.length} lease(s): ${held.map((h) => h.key_name).join(' ')}`);
    await sleep(TTL_MS + 1_000);
    try {
      const s = spawnCli(['resume', '--json', ...held.map((h) => h.key_name)], dir, env, 'successor');
      // a successor that cannot finish while worker 1 is stopped is a finding (e.g. a row lock the
      // stopped worker holds inside an open transaction): fail with it instead of hanging
      const timer = setTimeout(() => s.child.kill('SIGKILL'), 45_000);
      const res = await s.done.finally(() => clearTimeout(timer));
      blocked = res.signal === 'SIGKILL';
      successor = resultsOf(res.stdout);
      // a live worker that took one of these keys over (its lease had expired) runs it now: wait until
      // it is done, so that whatever is written to these keys from here on can only be worker 1's
      const until = Date.now() + 45_000;
      do {
        unsettled = [];
        for (const h of held) {
          const l = await backend.leaseOf(h.key_name);
          if (l?.live && !mineOwner(l.owner)) unsettled.push(`${h.key_name} (${l.owner})`);
        }
        if (unsettled.length) await sleep(100);
      } while (unsettled.length && Date.now() < until);
      for (const h of held) {
        const l = await backend.leaseOf(h.key_name);
        if (l && l.token !== h.token) lost.push(h);
      }
      for (const h of lost) frozenRecords.set(h.key_name, await store.read(h.key_name));
      wokeAtSeq = await lastSeq();
      const kept = held.filter((h) => !lost.includes(h)).map((h) => h.key_name);
      console.log(
        `fleet: while worker 1 was stopped, ${lost.length} of its lease(s) went to other workers` +
          (kept.length ? `; nobody took ${kept.join(' ')} (still its own)` : ''),
      );
    } finally {
      workers[1]!.child.kill('SIGCONT');
    }
  })();

  const ends = await Promise.all(workers.map((w) => w.done));
  await Promise.all([killed, paused]);
  unsubscribe();
  console.log(
    `fleet: workers ended after ${Date.now() - t1} ms: ${ends.map((e, i) => `worker${i} ${e.signal ?? e.code}`).join(', ')}`,
  );
  // claiming: the worker nobody disturbed got its share of the work (no idle worker while keys were due)
  const tally = ends.map((e) => {
    const rs = resultsOf(e.stdout);
    const n = (o: string) => rs.filter((r) => r.outcome === o).length;
    return `rotated ${n('rotated')}, skipped ${n('skipped')}, locked ${n('locked')}`;
  });
  console.log(`fleet: results per worker: ${tally.map((t, i) => `worker${i} ${t}`).join('; ')}`);
  expect(resultsOf(ends[2]!.stdout).filter((r) => r.outcome === 'rotated').length).toBeGreaterThan(0);
  expect(blocked, 'the successor could not take over from the stopped worker within 45 s').toBe(false);
  expect(ends[0]!.signal).toBe('SIGKILL');
  if (stop) expect(held.length, 'worker 1 was stopped while it held leases').toBeGreaterThan(0);
  expect(unsettled, 'the live workers that took over keys of the stopped worker finished them within 45 s').toEqual([]);
  const takenByOther = (message: string) => {
    const holder = / is being rotated by (\S+) /.exec(message)?.[1];
    return holder !== undefined && !mineOwner(holder);
  };
  // the successor finished every rotation worker 1 left, except one a live worker had taken over
  // (`locked` by that worker, never by the stopped one, whose leases had expired)
  expect(
    successor.filter(
      (r) =>
        r.outcome !== 'rotated' &&
        r.outcome !== 'skipped' &&
        !(r.outcome === 'locked' && takenByOther(r.error?.message ?? '')),
    ),
  ).toEqual([]);

  // the paused worker: it lost the leases granted to others while it was stopped, and wrote nothing after
  const pausedResults = resultsOf(ends[1]!.stdout);
  const tookOver = successor.filter((r) => r.outcome === 'rotated').map((r) => r.key);
  const lostKeys = lost.map((h) => h.key_name);
  for (const k of tookOver)
    expect(lostKeys, `the successor rotated ${k}: worker 1's lease was granted again`).toContain(k);
  for (const k of lostKeys.filter((x) => tookOver.includes(x) || activeAtStop.has(x))) {
    const mine = pausedResults.find((r) => r.key === k);
    expect(mine?.error?.code, `worker 1's result for ${k}`).toBe('LEASE_LOST');
  }

  // the final pass finishes what the killed worker left (its leases expire after the ttl)
  let final: KeyResult[] = [];
  for (let pass = 0; pass < 5; pass++) {
    await sleep(TTL_MS);
    const f = await spawnCli(['rotate', '--json', '--concurrency', '8'], dir, env, `final${pass}`).done;
    final = resultsOf(f.stdout);
    if (!final.some((r) => r.outcome === 'locked' || r.outcome === 'in_progress')) break;
  }
  const unfinished = final
    .filter((r) => r.outcome !== 'skipped' && r.outcome !== 'rotated')
    .map((r) => `${r.key}: ${r.outcome} at ${r.stage} ${r.error?.code}: ${r.error?.message} [${r.rotationId}]`);
  expect(unfinished, `the final pass (seed ${SEED})`).toEqual([]);
  console.log(
    `fleet: done after ${Date.now() - t1} ms (final pass rotated ${final.filter((r) => r.outcome === 'rotated').length})`,
  );

  // every key rotated exactly once at the issuer: all creates of a key since the bootstrap carry one
  // name (one rotation); a second create only where a worker died or froze inside that rotation
  // (a resumed issue stage deletes the earlier attempt's key, whose value nobody holds, and mints again)
  interrupted.push(...held.map((h) => h.key_name));
  const createsBySa = new Map<string, string[]>();
  for (const e of fake.log.slice(logMark))
    if (e.route === 'serviceAccounts.apiKeys.create') {
      const id = /service_accounts\/([^/]+)\/api_keys/.exec(e.path)?.[1] ?? '?';
      createsBySa.set(id, [...(createsBySa.get(id) ?? []), (e.body as { name?: string } | undefined)?.name ?? '?']);
    }
  const wrong: string[] = [];
  let recreated = 0;
  for (const n of names) {
    const made = createsBySa.get(sa.get(n)!) ?? [];
    if (new Set(made).size !== 1) wrong.push(`${n}: creates named ${made.join(', ') || 'nothing'}`);
    if (made.length > 1) recreated += 1;
    if (made.length > 2 || (made.length === 2 && !interrupted.includes(n)))
      wrong.push(`${n}: ${made.length} creates, interrupted: ${interrupted.includes(n)}`);
  }
  console.log(
    `fleet: ${recreated} key(s) minted twice by a resumed issue stage; interrupted: ${interrupted.join(' ')}`,
  );
  expect(wrong).toEqual([]);

  // the audit trail: one `rotated` result per key, nothing failed, and no transition after it
  const rows: AuditRow[] = (await audit.read()).records.filter((r) => r.seq > auditMark);
  const problems: string[] = [];
  for (const n of names) {
    const mine = rows.filter((r) => r.key === n);
    const rotated = mine.filter((r) => r.type === 'result' && r.outcome === 'rotated');
    if (rotated.length !== 1) problems.push(`${n}: ${rotated.length} rotated results`);
    const bad = mine.filter((r) => r.type === 'result' && r.outcome !== 'rotated' && r.outcome !== 'locked');
    for (const b of bad) problems.push(`${n}: result ${b.outcome} ${b.error?.code ?? ''} (seq ${b.seq})`);
    const last = rotated.at(-1);
    const after = last ? mine.filter((r) => r.type === 'transition' && r.seq > last.seq) : [];
    for (const a of after) problems.push(`${n}: transition ${a.state} after its rotated result (seq ${a.seq})`);
  }
  // the keys worker 1 lost: nothing of theirs audited after it woke, the records as their new holder left them
  for (const h of lost) {
    const late = rows.filter((r) => r.key === h.key_name && r.seq > wokeAtSeq && r.type === 'transition');
    for (const l of late)
      problems.push(`${h.key_name}: transition ${l.state} audited after worker 1 woke (seq ${l.seq})`);
    expect(await store.read(h.key_name), `record of ${h.key_name}`).toEqual(frozenRecords.get(h.key_name));
  }
  expect(problems).toEqual([]);

  // no stray key at the issuer: each service account has one live key, the key's current one
  const records = new Map(await Promise.all(names.map(async (n) => [n, await store.read(n)] as const)));
  const stray: string[] = [];
  for (const n of names) {
    const live = fake.state
      .liveKeys()
      .filter((k) => k.owner.type === 'service_account' && k.owner.serviceAccountId === sa.get(n));
    const rec = records.get(n);
    if (rec?.active) stray.push(`${n}: still active (${rec.active.rotationId})`);
    if (live.length !== 1 || live[0]!.id !== rec?.currentKeyId)
      stray.push(`${n}: live ${live.map((k) => k.id).join(',') || 'none'}, current ${rec?.currentKeyId}`);
    if (rec?.currentKeyId === bootKey.get(n)) stray.push(`${n}: still on its bootstrap key`);
  }
  expect(stray).toEqual([]);
  expect(fake.state.liveKeys()).toHaveLength(count);

  const verify = await spawnCli(['audit', 'verify'], dir, env, 'audit-verify').done;
  expect(verify.code, verify.stderr).toBe(0);
  await store.close?.();
}

describe.skipIf(!PG)('fleet: 3 workers on one PostgreSQL backend', () => {
  let server: Postgres;
  let fake: OpenAIFake;
  let db: pg.Client;
  let url = '';
  beforeAll(async () => {
    [server, fake] = await Promise.all([startPostgres(), startOpenAIFake()]);
    url = await server.createDatabase('fleet');
    db = new pg.Client({ connectionString: url });
    await db.connect();
  }, 60_000);
  afterAll(async () => {
    await db?.end();
    await fake?.close();
    await server?.close();
  });

  it(`${N} due keys, one worker SIGKILLed${STOP ? ', one SIGSTOPped past its lease' : ''}: every key rotated exactly once (seed ${SEED})`, async () => {
    await fleetScenario(
      fake,
      {
        stateYaml: 'state: { type: postgres, idleInTransactionTimeout: 2s }',
        env: { KEYROTOR_DATABASE_URL: url },
        leasesOf: async (pid) =>
          (
            await db.query<Held>(
              `SELECT key_name, token::text AS token FROM keyrotor.leases WHERE owner LIKE $1 AND expires_at > now()`,
              [`%:${pid}:%`],
            )
          ).rows,
        leaseOf: async (key) =>
          (
            await db.query<LeaseRow>(
              `SELECT owner, token::text AS token, expires_at > now() AS live FROM keyrotor.leases WHERE key_name = $1`,
              [key],
            )
          ).rows[0] ?? null,
      },
      N,
      STOP,
    );
  }, 180_000);
});

describe.skipIf(!MOTO)('fleet: 3 workers on one DynamoDB table (moto)', () => {
  let moto: Moto;
  let fake: OpenAIFake;
  const table = 'keyrotor-fleet';
  const aws = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_EC2_METADATA_DISABLED: 'true' };
  const saved = Object.fromEntries(Object.keys(aws).map((k) => [k, process.env[k]]));
  beforeAll(async () => {
    Object.assign(process.env, aws); // this process's state store uses the SDK's default chain
    // serial: concurrent conditional writes to one item must be serialised as DynamoDB does (see fakes/moto.ts)
    [moto, fake] = await Promise.all([startMoto({ serial: true }), startOpenAIFake()]);
  }, 60_000);
  afterAll(async () => {
    await fake?.close();
    await moto?.close();
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  });

  it(`${N_DYNAMO} due keys, one worker SIGKILLed, one SIGSTOPped past its lease: every key rotated exactly once (seed ${SEED})`, async () => {
    const { DynamoDBClient, GetItemCommand, ScanCommand } = await import('@aws-sdk/client-dynamodb');
    const client = new DynamoDBClient({
      region: 'us-east-1',
      endpoint: moto.endpoint,
      credentials: { accessKeyId: aws.AWS_ACCESS_KEY_ID, secretAccessKey: aws.AWS_SECRET_ACCESS_KEY },
    });
    try {
      await fleetScenario(
        fake,
        {
          stateYaml: `state: { type: dynamodb, table: ${table}, region: us-east-1, endpoint: ${moto.endpoint} }`,
          env: aws,
          leasesOf: async (pid) => {
            const out: Held[] = [];
            let start: Record<string, unknown> | undefined;
            do {
              const r = await client.send(
                new ScanCommand({
                  TableName: table,
                  FilterExpression: 'sk = :l AND contains(#o, :pid) AND expiresAt > :now',
                  ExpressionAttributeNames: { '#o': 'owner' },
                  ExpressionAttributeValues: {
                    ':l': { S: 'lease' },
                    ':pid': { S: `:${pid}:` },
                    ':now': { N: String(Date.now()) },
                  },
                  ConsistentRead: true,
                  ...(start ? { ExclusiveStartKey: start as never } : {}),
                }),
              );
              for (const it of r.Items ?? [])
                out.push({ key_name: it.pk!.S!.replace(/^key#/, ''), token: it.token!.N! });
              start = r.LastEvaluatedKey;
            } while (start);
            return out;
          },
          leaseOf: async (key) => {
            const r = await client.send(
              new GetItemCommand({
                TableName: table,
                Key: { pk: { S: `key#${key}` }, sk: { S: 'lease' } },
                ConsistentRead: true,
              }),
            );
            const it = r.Item;
            if (!it) return null;
            return {
              owner: it.owner?.S ?? '',
              token: it.token?.N ?? '0',
              live: Number(it.expiresAt?.N ?? 0) > Date.now(),
            };
          },
        },
        N_DYNAMO,
        true,
      );
    } finally {
      client.destroy();
    }
  }, 180_000);
});
