/**
 * One durable write per transition, counted where the writes happen, on every state backend:
 *   - file: the CLI runs a rotation under `strace -f -y -e trace=fsync,fdatasync`; every fsync is
 *     attributed to its file by the kernel (`-y`), so nothing in keyrotor reports its own count;
 *   - PostgreSQL: write transactions counted by the server's transaction-id counter (an xid is
 *     assigned to every transaction that writes, and only to those; autovacuum is off for the tables);
 *   - DynamoDB (moto): write requests counted on the wire by a proxy in front of moto.
 * Each asserts: state writes = transitions (each transition's snapshot with its audit record; the
 * final transition's record goes with the result in `finish`), every audit record of the rotation
 * went out in one of those writes, and the audit chain verifies.
 * Before this change the count was about twice that (a snapshot write and an audit append each).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { silentLogger } from '../../src/app/log.ts';
import { defaultObservers } from '../../src/app/observers.ts';
import { createStateAuditLog, createStateStore } from '../../src/app/state/index.ts';
import type { AuditRecord } from '../../src/app/audit/record.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { CLI } from '../entrypoints/cli-helpers.ts';
import { postgresSupportOrSkip, startPostgres, type Postgres } from '../fakes/postgres.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { startAwsFaultProxy, type AwsFaultProxy } from '../fakes/aws-fault-proxy.ts';
import { keyConfig, SMOKE_TEST } from '../helpers/config.ts';

const MASTER = '3d'.repeat(32);

const configText = (state: string): string => keyConfig({ state, health: SMOKE_TEST });

/** the audit records of one rotation: its transitions and its result */
function ofRotation(records: AuditRecord[], rotationId: string) {
  const mine = records.filter((r) => r.rotationId === rotationId);
  return {
    transitions: mine.filter((r) => r.type === 'transition'),
    results: mine.filter((r) => r.type === 'result'),
  };
}

/** an in-process rotation as the CLI runs it (default observers: audit trail, metrics) */
async function rotateOnce(dir: string, state: string, env: NodeJS.ProcessEnv) {
  const file = path.join(dir, 'rotation.config.yaml');
  writeFileSync(file, configText(state));
  const config = parseConfig(configText(state), file, env);
  const stateStore = createStateStore(config, env);
  const logger = silentLogger();
  const run = () =>
    rotateKey(config.keys[0]!, {
      config,
      stateStore,
      logger,
      env,
      now: true,
      actor: 'test',
      observers: defaultObservers({ config, logger, actor: 'test', env, stateStore }),
    });
  return { config, stateStore, run, audit: () => createStateAuditLog(config, env) };
}

const STRACE = spawnSync('strace', ['-V']).status === 0;

describe('one durable write per transition', () => {
  it.skipIf(!STRACE)(
    'file backend: one fsync per transition (the journal append), none for the audit log; counted by strace',
    async () => {
      const dir = tempDir('durable-file');
      writeFileSync(path.join(dir, 'rotation.config.yaml'), configText(''));
      const env = { ...process.env, KEYROTOR_MASTER_KEY: MASTER, NO_COLOR: '1' };
      const cli = (args: string[], trace?: string) =>
        new Promise<number>((resolve, reject) => {
          const argv = [CLI, ...args];
          const child = trace
            ? spawn(
                'strace',
                ['-f', '-y', '-qq', '-e', 'trace=fsync,fdatasync', '-o', trace, process.execPath, ...argv],
                {
                  cwd: dir,
                  env,
                  stdio: 'ignore',
                },
              )
            : spawn(process.execPath, argv, { cwd: dir, env, stdio: 'ignore' });
          child.on('error', reject);
          child.on('exit', (code) => resolve(code ?? -1));
        });
      // the first rotation bootstraps; the second is the one counted (its journal already exists)
      expect(await cli(['rotate', '--now', 'app'])).toBe(0);
      const trace = path.join(dir, 'strace.txt');
      expect(await cli(['rotate', '--now', 'app'], trace)).toBe(0);

      const stateDir = path.join(dir, '.keyrotor');
      const fsyncs = readFileSync(trace, 'utf8')
        .split('\n')
        .map((l) => /(?:fsync|fdatasync)\(\d+<([^>]*)>\)\s*=\s*0/.exec(l)?.[1])
        .filter((p): p is string => p !== undefined);
      const under = (sub: string) => fsyncs.filter((p) => p.startsWith(path.join(stateDir, sub)));
      const journal = path.join(stateDir, 'state', 'app.journal');

      const log = createStateAuditLog(parseConfig(configText(''), path.join(dir, 'rotation.config.yaml'), env), env);
      expect(await log.verify()).toMatchObject({ ok: true });
      const { records } = await log.read();
      const last = records.filter((r) => r.type === 'result').at(-1)!;
      const { transitions, results } = ofRotation(records, last.rotationId!);
      expect(results).toHaveLength(1);
      expect(transitions.length).toBeGreaterThanOrEqual(8); // preflight ... rotated

      // the state: one fsync'd append per transition (the last one with the result), nothing else
      expect(fsyncs.filter((p) => p === journal)).toHaveLength(transitions.length);
      expect(under('state').filter((p) => p !== journal)).toEqual([]);
      // the audit trail: no fsync of its own (its records went into those appends)
      expect(under('audit')).toEqual([]);
      // the lease: the fencing counter of the grant is durable (one fsync'd append to the key's fence
      // file, which the first rotation created); the lock file is not fsync'd (a lock matters only
      // among live processes: file-lease.ts)
      expect(under('fences')).toEqual([path.join(stateDir, 'fences', 'app.json')]);
      expect(under('locks')).toEqual([]);

      // and each journal line carries its audit records: together, in order, the rotation's records
      const lines = readFileSync(journal, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { audit?: AuditRecord[] });
      const carried = lines.flatMap((l) => l.audit ?? []).filter((r) => r.rotationId === last.rotationId);
      expect(carried.map((r) => r.hash)).toEqual([...transitions, ...results].map((r) => r.hash));
      const mine = lines.slice(-transitions.length);
      expect(mine.map((l) => l.audit?.length)).toEqual([...Array<number>(transitions.length - 1).fill(1), 2]);
    },
    60_000,
  );

  const PG = postgresSupportOrSkip('durable writes on PostgreSQL');
  describe.skipIf(!PG)('postgres', () => {
    // a server of its own: the transaction-id counter is the whole server's, and the run's shared
    // server also serves the test files running beside this one
    let server: Postgres | undefined;
    let url = '';
    beforeAll(async () => {
      server = await startPostgres();
      url = await server.createDatabase('durable');
    }, 60_000);
    afterAll(async () => {
      await server?.close();
    });
    const db = { url: () => url };

    it('PostgreSQL: one write transaction per transition (record, audit records and head together)', async () => {
      const env = { KEYROTOR_MASTER_KEY: MASTER, KEYROTOR_DATABASE_URL: db.url() };
      const w = await rotateOnce(tempDir('durable-pg'), 'state: { type: postgres }', env);
      await w.stateStore.init!();
      const c = new pg.Client({ connectionString: db.url() });
      await c.connect();
      try {
        for (const t of ['key_records', 'leases', 'audit_records', 'audit_head', 'outbox'])
          await c.query(`ALTER TABLE keyrotor.${t} SET (autovacuum_enabled = false)`);
        expect((await w.run()).outcome).toBe('rotated'); // bootstrap
        // pg_current_xact_id() assigns this transaction an xid itself: hence the - 1
        const xid = async () =>
          Number((await c.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0]!.x);
        const before = await xid();
        const r = await w.run();
        const after = await xid();
        expect(r.outcome).toBe('rotated');

        const log = w.audit();
        expect(await log.verify()).toMatchObject({ ok: true });
        const { transitions, results } = ofRotation((await log.read()).records, r.rotationId!);
        expect(results).toHaveLength(1);
        expect(transitions.length).toBeGreaterThanOrEqual(8);
        // lease grant + one per transition (the last with the result) + lease release
        expect(after - before - 1).toBe(1 + transitions.length + 1);
      } finally {
        await c.end();
        await w.stateStore.close?.();
      }
    }, 60_000);
  });

  const MOTO = motoSupportOrSkip('durable writes on DynamoDB');
  describe.skipIf(!MOTO)('dynamodb', () => {
    let moto: Moto;
    let proxy: AwsFaultProxy;
    const saved = { ...process.env };
    beforeAll(async () => {
      // the SDK's default credential chain reads process.env
      Object.assign(process.env, {
        AWS_ACCESS_KEY_ID: 'testing',
        AWS_SECRET_ACCESS_KEY: 'testing',
        AWS_EC2_METADATA_DISABLED: 'true',
      });
      moto = await startMoto();
      proxy = await startAwsFaultProxy(moto.endpoint);
    }, 60_000);
    afterAll(async () => {
      await proxy?.close();
      await moto?.close();
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_EC2_METADATA_DISABLED'])
        if (saved[k] === undefined) delete process.env[k];
    });

    it('DynamoDB: one TransactWriteItems per transition (lease check, record, audit records, head)', async () => {
      const env = {
        KEYROTOR_MASTER_KEY: MASTER,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        AWS_EC2_METADATA_DISABLED: 'true',
      };
      const w = await rotateOnce(
        tempDir('durable-ddb'),
        `state: { type: dynamodb, table: durable, region: us-east-1, endpoint: "${proxy.endpoint}" }`,
        env,
      );
      await w.stateStore.init!();
      try {
        expect((await w.run()).outcome).toBe('rotated'); // bootstrap
        const from = proxy.log.length;
        const r = await w.run();
        expect(r.outcome).toBe('rotated');
        const writes = proxy.log
          .slice(from)
          .filter((e) => /PutItem|UpdateItem|DeleteItem|TransactWriteItems/.test(e.op));

        const log = w.audit();
        expect(await log.verify()).toMatchObject({ ok: true });
        const { transitions, results } = ofRotation((await log.read()).records, r.rotationId!);
        expect(results).toHaveLength(1);
        expect(transitions.length).toBeGreaterThanOrEqual(8);
        // every state write of the rotation is one transaction; the lease grant and release are updates
        expect(writes.filter((e) => e.op === 'TransactWriteItems')).toHaveLength(transitions.length);
        expect(writes.filter((e) => e.op !== 'TransactWriteItems').map((e) => e.op)).toEqual([
          'UpdateItem',
          'UpdateItem',
        ]);
      } finally {
        await w.stateStore.close?.();
      }
    }, 90_000);
  });
});
