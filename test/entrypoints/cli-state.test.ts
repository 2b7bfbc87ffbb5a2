/**
 * `keyrotor state init | export | import` as real processes: moving the embedded demo's state from
 * files into PostgreSQL and back, rotating on PostgreSQL, and the one-line errors (no schema yet,
 * unreachable server, missing URL variable, bad export file, existing keys). The pending webhook
 * outbox moves along and is delivered, once, by the first run against the new backend.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { LOCAL_CONFIG, runCli, treeSnapshot, workspace } from './cli-helpers.ts';
import { freePort } from '../fakes/moto.ts';
import { postgresSupportOrSkip, type Postgres } from '../fakes/postgres.ts';
import { sharedPostgres } from '../helpers/postgres-db.ts';

const MASTER = '3e'.repeat(32);
/** one webhook that is tried once per run; its URL comes from HOOK_URL so each run can point elsewhere */
const HOOKED = `${LOCAL_CONFIG}notifications:\n  - { name: ops, urlEnv: HOOK_URL, on: [rotated], attempts: 1 }\n`;

/** a loopback webhook receiver answering 200, recording each request's Idempotency-Key and body */
async function receiver() {
  const got: { key: string; body: string }[] = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      got.push({ key: String(req.headers['idempotency-key']), body });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/hook`;
  return { url, got, close: () => new Promise<void>((r) => srv.close(() => r())) };
}
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
      format: 'keyrotor-state-export/2',
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

describe('keyrotor state: the pending webhook outbox (file backend)', () => {
  it('export carries pending notifications (format 2); import keeps their ids and attempts; bad outbox lines and other formats are one line, exit 2, nothing written', async () => {
    const dir = workspace(HOOKED, 'cli-state-outbox');
    const down = `http://127.0.0.1:${await freePort()}/hook`; // nobody listens: the notification stays pending
    const env = { KEYROTOR_MASTER_KEY: MASTER, HOOK_URL: down };
    expect((await runCli(['rotate', '--now', '--json'], { cwd: dir, env })).code).toBe(0);
    const pendingFiles = readdirSync(path.join(dir, '.keyrotor', 'outbox'));
    expect(pendingFiles).toHaveLength(1);

    const out = await runCli(['state', 'export', '--out', 'x.jsonl'], { cwd: dir, env });
    expect(out.code).toBe(0);
    expect(out.stderr).toMatch(/exported 1 key\(s\), \d+ audit record\(s\) and 1 pending notification\(s\)/);
    const lines = readFileSync(path.join(dir, 'x.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ format: 'keyrotor-state-export/2', keys: 1, outbox: 1 });
    const outboxLines = lines.filter((l) => l.startsWith('{"kind":"outbox"'));
    expect(outboxLines).toHaveLength(1);
    const entry = (JSON.parse(outboxLines[0]!) as { entry: Record<string, unknown> }).entry;
    expect(entry).toMatchObject({ webhook: 0, webhookName: 'ops', attempts: 1 });
    expect(`${String(entry.id)}.json`).toBe(pendingFiles[0]);
    // references only: the rendered body names the key and the key ids, never the URL or a secret
    expect(JSON.parse(String(entry.body))).toMatchObject({ key: 'demo', outcome: 'rotated', idempotencyKey: entry.id });
    expect(outboxLines[0]).not.toContain(down);

    // into a fresh file backend: the entry with its id and attempt count
    const to = workspace(HOOKED, 'cli-state-outbox-to');
    writeFileSync(path.join(to, 'x.jsonl'), lines.join('\n') + '\n');
    const imp = await runCli(['state', 'import', 'x.jsonl', '--json'], { cwd: to, env });
    expect(imp.code).toBe(0);
    expect(JSON.parse(imp.stdout)).toMatchObject({ imported: ['demo'], outbox: 1, outboxAlreadyPending: 0 });
    const moved = JSON.parse(readFileSync(path.join(to, '.keyrotor', 'outbox', pendingFiles[0]!), 'utf8')) as {
      entry: unknown;
    };
    expect(moved.entry).toEqual(entry);

    // bad outbox lines: one line naming the file and line, exit 2, nothing written anywhere
    const fresh = workspace(HOOKED, 'cli-state-outbox-bad');
    const before = treeSnapshot(fresh);
    const head = lines[0]!;
    const body = lines.slice(1).filter((l) => !l.startsWith('{"kind":"outbox"'));
    const n = body.length + 2; // the outbox line's number
    const cases: [string, string[], RegExp][] = [
      ['cut.jsonl', [head, ...body, outboxLines[0]!.slice(0, 60)], new RegExp(`cut\\.jsonl:${n}: not JSON`)],
      [
        'id.jsonl',
        [head, ...body, outboxLines[0]!.replace(String(entry.id), '../../etc/x')],
        new RegExp(`id\\.jsonl:${n}: outbox entry: id must be`),
      ],
      [
        'attempts.jsonl',
        [head, ...body, outboxLines[0]!.replace('"attempts":1', '"attempts":-1')],
        new RegExp(`attempts\\.jsonl:${n}: outbox entry .*: attempts must be a count`),
      ],
      [
        'url.jsonl',
        [head, ...body, outboxLines[0]!.replace('"attempts":1', `"attempts":1,"url":"${down}"`)],
        /url\.jsonl:\d+: outbox entry: unknown field "url"/,
      ],
      [
        'twice.jsonl',
        [head.replace('"outbox":1', '"outbox":2'), ...body, outboxLines[0]!, outboxLines[0]!],
        new RegExp(`twice\\.jsonl:${n + 1}: outbox entry .* appears twice`),
      ],
      ['missing.jsonl', [head, ...body], /missing\.jsonl:\d+: the header announces 1 outbox entry\(ies\) but 0 follow/],
      [
        'v1.jsonl',
        [head.replace('export/2', 'export/1'), ...body, outboxLines[0]!],
        /v1\.jsonl:\d+: unknown line kind "outbox" \(format keyrotor-state-export\/1 has no outbox lines\)/,
      ],
      [
        'v3.jsonl',
        [head.replace('export/2', 'export/3'), ...body],
        /STATE_VERSION: .*v3\.jsonl was exported by a newer keyrotor/,
      ],
    ];
    for (const [file, content, want] of cases) {
      writeFileSync(path.join(fresh, file), content.join('\n') + '\n');
      const bad = await runCli(['state', 'import', file], { cwd: fresh, env, name: `state-import-${file}` });
      expect(bad.code, file).toBe(2);
      expect(bad.stderr.trim().split('\n'), file).toHaveLength(1);
      expect(bad.stderr, file).toMatch(want);
    }
    const after = treeSnapshot(fresh);
    for (const [file] of cases) delete after[file];
    expect(after).toEqual(before);

    // an export written before the outbox was carried (format 1) still imports
    const v1 = [head.replace('export/2', 'export/1').replace(',"outbox":1', ''), ...body];
    writeFileSync(path.join(fresh, 'old.jsonl'), v1.join('\n') + '\n');
    const old = await runCli(['state', 'import', 'old.jsonl', '--json'], { cwd: fresh, env });
    expect(old.code).toBe(0);
    expect(JSON.parse(old.stdout)).toMatchObject({ imported: ['demo'], outbox: 0 });
  }, 90_000);
});

describe.skipIf(!PG)('keyrotor state (PostgreSQL)', () => {
  let server: Postgres;
  let url = '';
  beforeAll(async () => {
    server = await sharedPostgres();
    url = await server.createDatabase('cli');
  });
  afterAll(async () => {
    await server?.close();
  });

  it('files -> postgres: init, import, rotate and status on postgres, export back', async () => {
    const dir = workspace(HOOKED, 'cli-state-pg');
    const down = `http://127.0.0.1:${await freePort()}/hook`; // the receiver is down during the file-backed run
    const env = { KEYROTOR_MASTER_KEY: MASTER, KEYROTOR_DATABASE_URL: url, HOOK_URL: down };
    expect((await runCli(['rotate', '--now', '--json'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['state', 'export', '--out', 'from-files.jsonl'], { cwd: dir, env })).code).toBe(0);
    const carried = readFileSync(path.join(dir, 'from-files.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{"kind":"outbox"'))
      .map((l) => (JSON.parse(l) as { entry: { id: string } }).entry.id);
    expect(carried).toHaveLength(1);

    const pgCfg = HOOKED.replace('version: 1\n', 'version: 1\nstate: { type: postgres, schema: clistate }\n');
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
      steps: [
        'created schema clistate',
        'applied migration 1',
        'applied migration 2',
        'applied migration 3',
        'applied migration 4',
      ],
    });
    expect(JSON.parse(init.stdout).backend).not.toContain('postgres@'); // no user/password in labels

    const imp = await runCli(['-c', 'pg.yaml', 'state', 'import', 'from-files.jsonl'], { cwd: dir, env });
    expect(imp.code).toBe(0);
    expect(imp.stdout).toMatch(
      // the database this block created (its name is made unique on the run's shared server)
      new RegExp(
        `imported 1 key\\(s\\) and \\d+ audit record\\(s\\) into postgres:127\\.0\\.0\\.1:\\d+/${new URL(url).pathname.slice(1)} \\(schema clistate\\): demo`,
      ),
    );
    expect(imp.stdout).toMatch(/pending webhook notifications: 1 in the outbox/);
    const fileChain = await runCli(['audit', 'verify', '--json'], { cwd: dir, env });
    const imported = await runCli(['-c', 'pg.yaml', 'audit', 'verify', '--json'], { cwd: dir, env });
    // the chain moved intact: same length, same head hash
    const pick = (r: { stdout: string }) => {
      const j = JSON.parse(r.stdout) as { ok: boolean; records: number; headHash: string };
      return { ok: j.ok, records: j.records, headHash: j.headHash };
    };
    expect(pick(imported)).toEqual(pick(fileChain));
    expect(pick(imported).records).toBeGreaterThan(5);

    // the first run on postgres delivers the notification carried over from the files, once, then its own
    const rx = await receiver();
    let rot;
    try {
      rot = await runCli(['-c', 'pg.yaml', 'rotate', '--now', '--json'], {
        cwd: dir,
        env: { ...env, HOOK_URL: rx.url },
      });
    } finally {
      await rx.close();
    }
    expect(rot.code).toBe(0);
    expect(rx.got.filter((g) => g.key === carried[0])).toHaveLength(1);
    expect(rx.got).toHaveLength(2);
    const r = (JSON.parse(rot.stdout) as { results: { outcome: string; newKeyId: string; oldKeyId: string }[] })
      .results[0]!;
    expect(r.outcome).toBe('rotated');
    const back = await runCli(['-c', 'pg.yaml', 'state', 'export'], { cwd: dir, env });
    const rec = JSON.parse(back.stdout.trim().split('\n')[1]!) as { record: { currentKeyId: string } };
    expect(JSON.parse(back.stdout.trim().split('\n')[0]!)).toMatchObject({ outbox: 0 }); // delivered: nothing pending
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
