/**
 * `keyrotor state init | export | import` as real processes: moving the embedded demo's state from
 * files into PostgreSQL and back, rotating on PostgreSQL, and the one-line errors (no schema yet,
 * unreachable server, missing URL variable, bad export file, existing keys).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LOCAL_CONFIG, runCli, workspace } from './cli-helpers.ts';
import { freePort } from '../fakes/moto.ts';
import { postgresSupportOrSkip, startPostgres, type Postgres } from '../fakes/postgres.ts';

const MASTER = '3e'.repeat(32);
const PG = postgresSupportOrSkip('keyrotor state CLI on PostgreSQL');

describe('keyrotor state (file backend)', () => {
  it('state init has nothing to do; export writes JSON lines; a bad import file is one line, exit 2', async () => {
    const dir = workspace(LOCAL_CONFIG, 'cli-state-file');
    const env = { KEYROTOR_MASTER_KEY: MASTER };
    expect((await runCli(['rotate', '--now', '--json'], { cwd: dir, env })).code).toBe(0);
    const init = await runCli(['state', 'init'], { cwd: dir, env });
    expect(init).toMatchObject({ code: 0, stdout: 'file:.keyrotor: file backend: nothing to set up\n' });

    const out = await runCli(['state', 'export'], { cwd: dir, env });
    expect(out.code).toBe(0);
    const lines = out.stdout.trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({
      format: 'keyrotor-state-export/1',
      source: 'file:.keyrotor',
      keys: 1,
    });
    expect(JSON.parse(lines[1]!)).toMatchObject({
      kind: 'key',
      record: { keyName: 'demo', last: { outcome: 'rotated' } },
    });

    const toFile = await runCli(['state', 'export', '--out', 'x.jsonl'], { cwd: dir, env });
    expect(toFile.code).toBe(0);
    expect(readFileSync(path.join(dir, 'x.jsonl'), 'utf8')).toContain('"keyName":"demo"');
    const again = await runCli(['state', 'export', '--out', 'x.jsonl'], { cwd: dir, env });
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/--out x\.jsonl already exists/);

    writeFileSync(path.join(dir, 'cut.jsonl'), lines[0]!.replace('"keys":1', '"keys":2') + '\n' + lines[1] + '\n');
    const cut = await runCli(['state', 'import', 'cut.jsonl', '--overwrite'], { cwd: dir, env });
    expect(cut.code).toBe(2);
    expect(cut.stderr.trim().split('\n')).toHaveLength(1);
    expect(cut.stderr).toMatch(/cut\.jsonl:2: the header announces 2 key\(s\) but 1 follow/);

    const exists = await runCli(['state', 'import', 'x.jsonl'], { cwd: dir, env });
    expect(exists.code).toBe(2);
    expect(exists.stderr).toMatch(/already holds state for "demo"; nothing was imported \(pass --overwrite/);
    expect((await runCli(['state'], { cwd: dir, env })).code).toBe(2);
  }, 60_000);
});

describe.skipIf(!PG)('keyrotor state (PostgreSQL)', () => {
  let server: Postgres;
  let url = '';
  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase('cli');
  });
  afterAll(async () => {
    await server?.close();
  });

  it('files -> postgres: init, import, rotate and status on postgres, export back', async () => {
    const dir = workspace(LOCAL_CONFIG, 'cli-state-pg');
    const env = { KEYROTOR_MASTER_KEY: MASTER, KEYROTOR_DATABASE_URL: url };
    expect((await runCli(['rotate', '--now', '--json'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['state', 'export', '--out', 'from-files.jsonl'], { cwd: dir, env })).code).toBe(0);

    const pgCfg = LOCAL_CONFIG.replace('version: 1\n', 'version: 1\nstate: { type: postgres, schema: clistate }\n');
    writeFileSync(path.join(dir, 'pg.yaml'), pgCfg);
    const before = await runCli(['-c', 'pg.yaml', 'status'], { cwd: dir, env });
    expect(before.code).toBe(2);
    expect(before.stderr).toMatch(
      /STATE_NOT_INITIALIZED: .*no keyrotor schema "clistate" yet.*run `keyrotor state init`/,
    );

    const init = await runCli(['-c', 'pg.yaml', 'state', 'init', '--json'], { cwd: dir, env });
    expect(init.code).toBe(0);
    expect(JSON.parse(init.stdout)).toMatchObject({
      changed: true,
      steps: ['created schema clistate', 'applied migration 1', 'applied migration 2', 'applied migration 3'],
    });
    expect(JSON.parse(init.stdout).backend).not.toContain('postgres@'); // no user/password in labels

    const imp = await runCli(['-c', 'pg.yaml', 'state', 'import', 'from-files.jsonl'], { cwd: dir, env });
    expect(imp.code).toBe(0);
    expect(imp.stdout).toMatch(
      /imported 1 key\(s\) and \d+ audit record\(s\) into postgres:127\.0\.0\.1:\d+\/cli \(schema clistate\): demo/,
    );
    const fileChain = await runCli(['audit', 'verify', '--json'], { cwd: dir, env });
    const imported = await runCli(['-c', 'pg.yaml', 'audit', 'verify', '--json'], { cwd: dir, env });
    // the chain moved intact: same length, same head hash
    const pick = (r: { stdout: string }) => {
      const j = JSON.parse(r.stdout) as { ok: boolean; records: number; headHash: string };
      return { ok: j.ok, records: j.records, headHash: j.headHash };
    };
    expect(pick(imported)).toEqual(pick(fileChain));
    expect(pick(imported).records).toBeGreaterThan(5);

    const rot = await runCli(['-c', 'pg.yaml', 'rotate', '--now', '--json'], { cwd: dir, env });
    expect(rot.code).toBe(0);
    const r = (JSON.parse(rot.stdout) as { results: { outcome: string; newKeyId: string; oldKeyId: string }[] })
      .results[0]!;
    expect(r.outcome).toBe('rotated');
    const back = await runCli(['-c', 'pg.yaml', 'state', 'export'], { cwd: dir, env });
    const rec = JSON.parse(back.stdout.trim().split('\n')[1]!) as { record: { currentKeyId: string } };
    expect(rec.record.currentKeyId).toBe(r.newKeyId);
    // the audit trail of the postgres rotation is in postgres, chained and verifiable from any host
    const verify = await runCli(['-c', 'pg.yaml', 'audit', 'verify', '--json'], { cwd: dir, env });
    expect(verify.code).toBe(0);
    const report = JSON.parse(verify.stdout) as { ok: boolean; records: number; file: string };
    expect(report).toMatchObject({ ok: true, file: expect.stringMatching(/^postgres:.*audit trail$/) });
    expect(report.records).toBeGreaterThan(5);
    const hist = await runCli(['-c', 'pg.yaml', 'history', '--json'], { cwd: dir, env });
    expect(hist.code).toBe(0);
    const rotations = (JSON.parse(hist.stdout) as { rotations: { outcome: string; newKeyId: string }[] }).rotations;
    // the rotation from before the move (its records came with the import) and the one on postgres
    expect(rotations).toHaveLength(2);
    expect(rotations.map((x) => x.outcome)).toEqual(['rotated', 'rotated']);
    expect(report.records).toBeGreaterThan(pick(imported).records);
    // the file backend still holds the state from before the move
    const files = await runCli(['state', 'export'], { cwd: dir, env });
    expect(JSON.parse(files.stdout.trim().split('\n')[1]!).record.currentKeyId).toBe(r.oldKeyId);
  }, 60_000);

  it('an unreachable server or a missing URL variable: one line, exit 2, no password', async () => {
    const dir = workspace(
      LOCAL_CONFIG.replace('version: 1\n', 'version: 1\nstate: { type: postgres }\n'),
      'cli-state-pg-down',
    );
    const port = await freePort();
    const down = await runCli(['status'], {
      cwd: dir,
      env: { KEYROTOR_DATABASE_URL: `postgres://keyrotor:s3cretpw@127.0.0.1:${port}/keyrotor` },
    });
    expect(down.code).toBe(2);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    expect(down.stderr).toMatch(/STATE_UNAVAILABLE: PostgreSQL 127\.0\.0\.1:\d+\/keyrotor is unreachable/);
    expect(down.stderr).not.toContain('s3cretpw');
    const missing = await runCli(['status'], { cwd: dir, env: {} });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(
      /CONFIG_ENV_MISSING: state\.urlEnv: environment variable KEYROTOR_DATABASE_URL is not set/,
    );
  }, 60_000);
});
