/**
 * The state-backend contract against every backend on a real server: the file backend, PostgreSQL 15
 * (a throwaway cluster started by test/fakes/postgres.ts) and DynamoDB (moto). Plus what is specific
 * to each: `init` (idempotent, versioned, refuses a newer schema), a missing schema/table, an
 * unreachable server, and moving state file -> postgres -> dynamodb -> file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { createPostgresStateStore, POSTGRES_SCHEMA_VERSION } from '../../src/app/state/postgres-state-store.ts';
import { createDynamoStateStore } from '../../src/app/state/dynamodb-state-store.ts';
import { exportState, importState, parseExportFull } from '../../src/app/state/transfer.ts';
import { createJsonlAuditLog } from '../../src/app/audit/jsonl.ts';
import type { AuditLog } from '../../src/app/audit/sink.ts';
import path from 'node:path';
import type { OutboxEntry, StateStore } from '../../src/core/ports.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { freePort, motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { startDynamoFaultProxy } from '../fakes/dynamodb-fault-proxy.ts';
import { postgresSupportOrSkip, type Postgres } from '../fakes/postgres.ts';
import { sharedPostgres } from '../helpers/postgres-db.ts';
import { describeStateBackendContract, rejection, result, rotation } from './backend-contract.ts';
import { auditBackendCases } from './audit-backend.ts';

let n = 0;
const unique = (p: string) => `${p}${process.pid}x${++n}`;

describeStateBackendContract('file', async () => {
  const dir = tempDir(unique('state-contract-'));
  return { open: () => createFileStateStore(dir) };
});

// ------------------------------------------------------------------ PostgreSQL

const PG = postgresSupportOrSkip('PostgreSQL state backend tests');

describe.skipIf(!PG)('PostgreSQL state backend', () => {
  let server: Postgres;
  let url = '';
  beforeAll(async () => {
    server = await sharedPostgres();
    url = await server.createDatabase('keyrotor');
  });
  afterAll(async () => {
    await server?.close();
  });

  const pgStore = (schema: string, u = url) =>
    createPostgresStateStore(
      { type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema },
      { KEYROTOR_DATABASE_URL: u },
      { version: 'test' },
    );
  async function sql(text: string, values: unknown[] = []) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await c.query(text, values);
    } finally {
      await c.end();
    }
  }

  describeStateBackendContract('postgres', async () => {
    const schema = unique('c_');
    const s = pgStore(schema);
    await s.init!();
    await s.close!();
    return { open: () => pgStore(schema), cleanup: async () => void (await sql(`DROP SCHEMA ${schema} CASCADE`)) };
  });

  auditBackendCases(async () => {
    const schema = unique('a_');
    await pgStore(schema).init!();
    return {
      open: () => pgStore(schema).auditLog(),
      editLine: async (seq, edit) => {
        const r = await sql(`SELECT line FROM ${schema}.audit_records WHERE seq = $1`, [seq]);
        await sql(`UPDATE ${schema}.audit_records SET line = $2 WHERE seq = $1`, [seq, edit(r.rows[0].line)]);
      },
      deleteRecord: async (seq) => void (await sql(`DELETE FROM ${schema}.audit_records WHERE seq = $1`, [seq])),
    };
  });

  it('state init: creates the schema with versioned migrations, is idempotent, refuses a newer schema', async () => {
    const schema = unique('i_');
    const s = pgStore(schema);
    try {
      const missing = await rejection(s.read('app'));
      expect(missing.code).toBe('STATE_NOT_INITIALIZED');
      expect(missing.exitCode).toBe(2);
      expect(missing.hint).toMatch(/keyrotor state init/);

      const first = await s.init!();
      expect(first.changed).toBe(true);
      expect(first.steps).toEqual([
        `created schema ${schema}`,
        'applied migration 1',
        'applied migration 2',
        'applied migration 3',
        'applied migration 4',
      ]);
      const second = await s.init!();
      expect(second).toEqual({ changed: false, steps: [`schema ${schema} is at version 4: nothing to do`] });
      const rows = await sql(`SELECT version, keyrotor_version FROM ${schema}.keyrotor_migrations ORDER BY version`);
      expect(POSTGRES_SCHEMA_VERSION).toBe(4);
      expect(rows.rows).toEqual([
        { version: 1, keyrotor_version: 'test' },
        { version: 2, keyrotor_version: 'test' },
        { version: 3, keyrotor_version: 'test' },
        { version: 4, keyrotor_version: 'test' },
      ]);

      // a schema left at version 1 by an older keyrotor: the store asks for init, init applies only 2, 3 and 4
      const old = unique('o_');
      const o = pgStore(old);
      await o.init!();
      await sql(`DROP TABLE ${old}.audit_records, ${old}.audit_head, ${old}.outbox`);
      await sql(`ALTER TABLE ${old}.leases DROP COLUMN holder`);
      await sql(`DELETE FROM ${old}.keyrotor_migrations WHERE version >= 2`);
      const o2 = pgStore(old);
      const behind = await rejection(o2.read('app'));
      expect(behind.code).toBe('STATE_NOT_INITIALIZED');
      expect(behind.message).toMatch(/is at version 1; this keyrotor needs 4/);
      expect(behind.hint).toMatch(/keyrotor state init/);
      expect(await o2.init!()).toEqual({
        changed: true,
        steps: ['applied migration 2', 'applied migration 3', 'applied migration 4'],
      });
      expect(await o2.read('app')).toBeNull();
      await o.close!();
      await o2.close!();
      // two inits at once: both succeed, the migration is applied once
      const other = unique('j_');
      const [x, y] = await Promise.all([pgStore(other).init!(), pgStore(other).init!()]);
      expect([x.changed, y.changed].sort()).toEqual([false, true]);

      // a schema migrated by a newer keyrotor: one clear error, exit 2, nothing changed
      await sql(`INSERT INTO ${schema}.keyrotor_migrations (version, keyrotor_version) VALUES (99, '9.0.0')`);
      const fresh = pgStore(schema);
      const newer = await rejection(fresh.read('app'));
      expect(newer.code).toBe('STATE_VERSION');
      expect(newer.exitCode).toBe(2);
      const initNewer = await rejection(fresh.init!());
      expect(initNewer.code).toBe('STATE_VERSION');
      expect(initNewer.message).toMatch(/version 99.*nothing was changed/);
      await fresh.close!();
    } finally {
      await s.close!();
    }
  });

  it('a damaged row is STATE_UNREADABLE naming the row, never reset', async () => {
    const schema = unique('d_');
    const s = pgStore(schema);
    await s.init!();
    await s.saveActive('app', rotation('rot-20261101t000000z-00000001'));
    await sql(`UPDATE ${schema}.key_records SET record = jsonb_set(record, '{currentKeyId}', '5')`);
    const e = await rejection(s.read('app'));
    expect(e.code).toBe('STATE_UNREADABLE');
    expect(e.message).toMatch(
      /key_records row "app" is unreadable.*currentKeyId.*rotation rot-20261101t000000z-00000001/,
    );
    await s.close!();
  });

  it('unreachable server, bad URL, missing env: one clear line without the password', async () => {
    const port = await freePort();
    const down = pgStore('x', `postgres://keyrotor:hunter2secret@127.0.0.1:${port}/keyrotor`);
    const e = await rejection(down.read('app'));
    expect(e.code).toBe('STATE_UNAVAILABLE');
    expect(e.message).toMatch(new RegExp(`PostgreSQL 127.0.0.1:${port}/keyrotor is unreachable`));
    expect(e.message + (e.hint ?? '')).not.toMatch(/hunter2secret|keyrotor:/);
    await down.close!();

    const noEnv = await rejection(
      Promise.resolve().then(() =>
        createPostgresStateStore({ type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema: 'k' }, {}),
      ),
    );
    expect(noEnv.code).toBe('CONFIG_ENV_MISSING');
    const bad = await rejection(
      Promise.resolve().then(() =>
        createPostgresStateStore({ type: 'postgres', urlEnv: 'U', schema: 'k' }, { U: 'mysql://x@y/z' }),
      ),
    );
    expect(bad.code).toBe('CONFIG_INVALID');
    expect(bad.message).not.toMatch(/mysql/);
  });

  it('a role without grants gets one line naming the permission to add', async () => {
    const schema = unique('p_');
    const s = pgStore(schema);
    await s.init!();
    await s.close!();
    await sql(`CREATE ROLE ${schema}_ro LOGIN`);
    const u = new URL(url);
    u.username = `${schema}_ro`;
    const ro = pgStore(schema, u.toString());
    const e = await rejection(ro.read('app'));
    expect(e.code).toBe('STATE_UNAVAILABLE');
    expect(e.message).toMatch(/permission denied/);
    expect(e.hint).toMatch(new RegExp(`USAGE on schema ${schema}`));
    await ro.close!();
  });
});

// ------------------------------------------------------------------ DynamoDB (moto)

const MOTO = motoSupportOrSkip('DynamoDB state backend tests');

describe.skipIf(!MOTO)('DynamoDB state backend (moto)', () => {
  let moto: Moto;
  const saved = { ...process.env };
  beforeAll(async () => {
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_EC2_METADATA_DISABLED: 'true',
    });
    // serial: concurrent conditional writes to one item must be serialised as DynamoDB does (see fakes/moto.ts)
    moto = await startMoto({ serial: true });
  });
  afterAll(async () => {
    await moto?.close();
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_EC2_METADATA_DISABLED'])
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
  });
  const ddbStore = (table: string): StateStore =>
    createDynamoStateStore({ type: 'dynamodb', table, region: 'us-east-1', endpoint: moto.endpoint }, {});

  it('a request throttled on every attempt the SDK makes is asked again: 6 throttles in a row, then the answer', async () => {
    const proxy = await startDynamoFaultProxy(moto.endpoint);
    const table = unique('keyrotor-throttle-');
    const s = createDynamoStateStore({ type: 'dynamodb', table, region: 'us-east-1', endpoint: proxy.endpoint }, {});
    try {
      await s.init!();
      await s.read('nothing-yet');
      // every request is throttled until 6 in a row were: more than the SDK's 4 attempts for one call
      proxy.chaos({ next: () => 0 }, { throttle: 1, maxInARow: 6 });
      expect(await s.read('app')).toBeNull();
      const throttled =
        (proxy.stats.ThrottlingException ?? 0) + (proxy.stats.ProvisionedThroughputExceededException ?? 0);
      expect(throttled).toBe(6);
    } finally {
      proxy.calm();
      await s.close?.();
      await proxy.close();
    }
  }, 60_000);

  describeStateBackendContract('dynamodb', async () => {
    const table = unique('keyrotor-state-');
    const s = ddbStore(table);
    await s.init!();
    await s.close!();
    return { open: () => ddbStore(table) };
  });

  auditBackendCases(async () => {
    const table = unique('audit-');
    await ddbStore(table).init!();
    const { DynamoDBClient, GetItemCommand, UpdateItemCommand, DeleteItemCommand } =
      await import('@aws-sdk/client-dynamodb');
    const c = new DynamoDBClient({ region: 'us-east-1', endpoint: moto.endpoint });
    const key = (seq: number) => ({ pk: { S: 'audit' }, sk: { S: `rec#${String(seq).padStart(12, '0')}` } });
    return {
      open: () =>
        createDynamoStateStore(
          { type: 'dynamodb', table, region: 'us-east-1', endpoint: moto.endpoint },
          {},
        ).auditLog(),
      editLine: async (seq, edit) => {
        const r = await c.send(new GetItemCommand({ TableName: table, Key: key(seq) }));
        await c.send(
          new UpdateItemCommand({
            TableName: table,
            Key: key(seq),
            UpdateExpression: 'SET line = :l',
            ExpressionAttributeValues: { ':l': { S: edit(r.Item!.line!.S!) } },
          }),
        );
      },
      deleteRecord: async (seq) => void (await c.send(new DeleteItemCommand({ TableName: table, Key: key(seq) }))),
    };
  });

  it('state init: creates the table (pk/sk, on demand, TTL attribute ttl), idempotent; missing table is one clear line', async () => {
    const table = unique('init-');
    const s = ddbStore(table);
    const missing = await rejection(s.read('app'));
    expect(missing.code).toBe('STATE_NOT_INITIALIZED');
    expect(missing.exitCode).toBe(2);
    expect(missing.hint).toMatch(/keyrotor state init/);
    const first = await s.init!();
    expect(first.changed).toBe(true);
    expect(first.steps[0]).toBe(`created table ${table} (pk S HASH, sk S RANGE, PAY_PER_REQUEST)`);
    expect(await s.init!()).toEqual({
      changed: false,
      steps: [`table ${table} is at layout version 1: nothing to do`],
    });

    const { DynamoDBClient, DescribeTableCommand, DescribeTimeToLiveCommand, PutItemCommand, CreateTableCommand } =
      await import('@aws-sdk/client-dynamodb');
    const c = new DynamoDBClient({ region: 'us-east-1', endpoint: moto.endpoint });
    const d = await c.send(new DescribeTableCommand({ TableName: table }));
    expect(d.Table?.KeySchema).toEqual([
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    expect(d.Table?.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
    const ttl = await c.send(new DescribeTimeToLiveCommand({ TableName: table }));
    expect(ttl.TimeToLiveDescription).toMatchObject({ AttributeName: 'ttl', TimeToLiveStatus: 'ENABLED' });

    // a table initialised by a newer keyrotor
    await c.send(
      new PutItemCommand({ TableName: table, Item: { pk: { S: 'meta' }, sk: { S: 'schema' }, version: { N: '7' } } }),
    );
    const newer = ddbStore(table);
    expect((await rejection(newer.read('app'))).code).toBe('STATE_VERSION');
    const initNewer = await rejection(newer.init!());
    expect(initNewer.code).toBe('STATE_VERSION');
    expect(initNewer.exitCode).toBe(2);

    // someone else's table under that name
    const foreign = unique('foreign-');
    await c.send(
      new CreateTableCommand({
        TableName: foreign,
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    const wrong = await rejection(ddbStore(foreign).init!());
    expect(wrong.code).toBe('CONFIG_INVALID');
    expect(wrong.message).toMatch(/another key schema \(id HASH\)/);
    c.destroy();
    await s.close!();
  });

  it('an unreachable endpoint is one line, exit 2', async () => {
    const port = await freePort();
    const s = createDynamoStateStore(
      { type: 'dynamodb', table: 'keyrotor-state', region: 'us-east-1', endpoint: `http://127.0.0.1:${port}` },
      {},
    );
    const e = await rejection(s.read('app'));
    expect(e.code).toBe('STATE_UNAVAILABLE');
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(/DynamoDB table keyrotor-state: checking the table failed/);
    await s.close!();
  }, 60_000);

  describe.skipIf(!PG)('moving state between backends', () => {
    let server: Postgres;
    let url = '';
    beforeAll(async () => {
      server = await sharedPostgres();
      url = await server.createDatabase('moving');
    });
    afterAll(async () => {
      await server?.close();
    });

    it('file -> postgres -> dynamodb -> file keeps every record exactly, the audit chain intact and the pending outbox', async () => {
      const srcDir = tempDir('state-move-src');
      const src = createFileStateStore(srcDir);
      const srcAudit = createJsonlAuditLog(path.join(srcDir, 'audit', 'audit.jsonl'));
      for (let i = 0; i < 4; i++)
        await srcAudit.append({
          type: 'transition',
          time: new Date(Date.UTC(2026, 10, 1, 0, i)).toISOString(),
          key: 'app',
          state: 'stage',
        });
      const chain = await srcAudit.verify();
      expect(chain).toMatchObject({ ok: true, records: 4 });
      await src.saveActive('app', rotation('rot-20261101t000000z-00000001', 'confirm'));
      await src.setProviderState('app', 'serviceAccountId', 'sa_1');
      await src.finish('db', result('rotated', 'db'), 'key_7');
      await src.finish('old', result('needs_attention', 'old'), 'key_3');
      const want = { app: await src.read('app'), db: await src.read('db'), old: await src.read('old') };
      // the webhook outbox: two pending notifications (one with attempts already made) and a delivered one
      const note = (n: number, attempts = 0): OutboxEntry => ({
        id: `rot-20261101t000000z-00000001.needs_attention.w${n}.0000000${n}`,
        webhook: n,
        webhookName: `hook-${n}`,
        body: JSON.stringify({ source: 'keyrotor', key: 'old', outcome: 'needs_attention', newKeyId: 'key_3' }),
        createdAt: new Date(Date.UTC(2026, 10, 1, 0, 10 + n)).toISOString(),
        attempts,
      });
      for (const e of [note(0), note(1), note(2)]) await src.outboxAdd!(e);
      await src.outboxAttempted!(note(1).id, 7);
      await src.outboxDone!(note(2).id);
      const pending = [note(0), note(1, 7)];

      const pgS = createPostgresStateStore({ type: 'postgres', urlEnv: 'U', schema: 'moved' }, { U: url });
      await pgS.init!();
      const ddb = createDynamoStateStore(
        { type: 'dynamodb', table: unique('moved-'), region: 'us-east-1', endpoint: moto.endpoint },
        {},
      );
      await ddb.init!();
      const backDir = tempDir('state-move-back');
      const back = createFileStateStore(backDir);
      const backAudit = createJsonlAuditLog(path.join(backDir, 'audit', 'audit.jsonl'));
      let from: [StateStore, AuditLog] = [src, srcAudit];
      for (const to of [
        [pgS, pgS.auditLog()],
        [ddb, ddb.auditLog()],
        [back, backAudit],
      ] as [StateStore, AuditLog][]) {
        const { lines, audit, outbox } = await exportState(from[0], new Date(), from[1]);
        expect(audit).toBe(4);
        expect(outbox).toBe(2);
        const parsed = parseExportFull(lines.join('\n') + '\n', 'export.jsonl');
        await importState(to[0], parsed.records, {
          audit: { log: to[1], records: parsed.audit },
          outbox: parsed.outbox,
        });
        expect(await to[0].outboxPending!()).toEqual(pending);
        expect(await to[0].keys()).toEqual(['app', 'db', 'old']);
        for (const k of ['app', 'db', 'old'] as const) expect(await to[0].read(k)).toEqual(want[k]);
        expect(await to[1].verify()).toMatchObject({ ok: true, records: 4, headHash: chain.headHash });
        from = to;
      }
      // and the chain goes on from there
      await backAudit.append({ type: 'transition', time: new Date().toISOString(), key: 'app', state: 'verify' });
      expect(await backAudit.verify()).toMatchObject({ ok: true, records: 5 });
      await pgS.auditLog().append({ type: 'transition', time: new Date().toISOString(), key: 'app', state: 'verify' });
      expect(await pgS.auditLog().verify()).toMatchObject({ ok: true, records: 5 });
      // a non-empty audit trail is never merged into
      const exported = (await exportState(src, new Date(), srcAudit)).lines.join('\n');
      const again = await rejection(
        importState(pgS, [], { audit: { log: pgS.auditLog(), records: parseExportFull(exported, 'x').audit } }),
      );
      expect(again.message).toMatch(/already holds 5 audit record\(s\); nothing was imported/);
      await pgS.close!();
      await ddb.close!();
    });
  });
});
