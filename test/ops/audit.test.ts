/**
 * The audit log on its own: hash chain, tamper detection (edit, delete, insert, reorder, truncate,
 * rewrite), crash mid-append (torn last line, kill -9 of a writer), concurrent writers.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync, appendFileSync, mkdirSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/artifacts.ts';
import { createJsonlAuditLog } from '../../src/app/audit/jsonl.ts';
import { chainRecord, recordLine, type AuditEntry, type AuditRecord } from '../../src/app/audit/record.ts';
import type { AuditLog } from '../../src/app/audit/sink.ts';

const WRITER = fileURLToPath(new URL('./audit-writer.ts', import.meta.url));
const STATES = ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked', 'rotated'];

function entry(i: number, over: Partial<AuditEntry> = {}): AuditEntry {
  const state = STATES[i % STATES.length]!;
  return {
    type: 'transition',
    time: new Date(Date.UTC(2026, 10, 1, 0, 0, i)).toISOString(),
    key: 'app',
    rotationId: 'rot-20261101t000000z-0000aaaa',
    state,
    stage: state === 'rotated' ? null : state,
    actor: 'cli',
    ...over,
  };
}

async function freshLog(n: number, name = 'audit'): Promise<{ log: AuditLog; file: string }> {
  const dir = tempDir(name);
  const file = path.join(dir, 'audit', 'audit.jsonl');
  const log = createJsonlAuditLog(file);
  for (let i = 0; i < n; i++) await log.append(entry(i));
  return { log, file };
}

const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);
const writeLines = (file: string, ls: string[]) => writeFileSync(file, ls.map((l) => l + '\n').join(''));

describe('audit log: chain', () => {
  it('appends canonical, chained records; verify passes; the head names the last one', async () => {
    const { log, file } = await freshLog(5);
    const recs = lines(file).map((l) => JSON.parse(l) as AuditRecord);
    expect(recs.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(recs[0]!.prev).toBe('0'.repeat(64));
    for (let i = 1; i < recs.length; i++) expect(recs[i]!.prev).toBe(recs[i - 1]!.hash);
    // each line is exactly the canonical form of its record (what was hashed)
    for (const l of lines(file)) expect(recordLine(JSON.parse(l) as AuditRecord)).toBe(l + '\n');
    const head = JSON.parse(readFileSync(`${file}.head`, 'utf8')) as { seq: number; hash: string };
    expect(head).toMatchObject({ seq: 5, hash: recs[4]!.hash });
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 5, headSeq: 5, headHash: recs[4]!.hash, warnings: [] });
    expect((await log.read()).records.map((r) => r.state)).toEqual(STATES.slice(0, 5));
  });

  it('an empty or missing log verifies as empty', async () => {
    const log = createJsonlAuditLog(path.join(tempDir('audit-empty'), 'none.jsonl'));
    expect(await log.verify()).toMatchObject({ ok: true, records: 0, headHash: null });
  });

  it('many appends in parallel from one process keep one chain', async () => {
    const { log } = await freshLog(0, 'audit-parallel');
    await Promise.all(Array.from({ length: 40 }, (_, i) => log.append(entry(i))));
    expect(await log.verify()).toMatchObject({ ok: true, records: 40 });
  });

  it('two processes appending at the same time keep one chain (lock file)', async () => {
    const { log, file } = await freshLog(1, 'audit-procs');
    await Promise.all(['a', 'b'].map((tag) => runWriter(file, 30, tag)));
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 61 });
    const tags = (await log.read()).records.map((r) => r.actor);
    expect(tags.filter((t) => t === 'a')).toHaveLength(30);
    expect(tags.filter((t) => t === 'b')).toHaveLength(30);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('a lock left by a dead process is taken over', async () => {
    const { log, file } = await freshLog(2, 'audit-stale');
    writeFileSync(
      `${file}.lock`,
      JSON.stringify({
        pid: 2 ** 22 + 12345,
        host: (await import('node:os')).hostname(),
        at: new Date().toISOString(),
      }),
    );
    await log.append(entry(2));
    expect(await log.verify()).toMatchObject({ ok: true, records: 3 });
    // an unattributable lock (no content) is taken over once it is older than staleLockMs
    writeFileSync(`${file}.lock`, '');
    const old = new Date(Date.now() - 60_000);
    utimesSync(`${file}.lock`, old, old);
    await createJsonlAuditLog(file, { staleLockMs: 5_000 }).append(entry(3));
    expect(await log.verify()).toMatchObject({ ok: true, records: 4 });
    expect(readdirSync(path.dirname(file)).sort()).toEqual(['audit.jsonl', 'audit.jsonl.head']);
  });
});

describe('audit log: tampering is detected and the first broken record is named', () => {
  it('an edited value', async () => {
    const { log, file } = await freshLog(6);
    const ls = lines(file);
    ls[2] = ls[2]!.replace('"state":"stage"', '"state":"stagE"');
    writeLines(file, ls);
    const v = await log.verify();
    expect(v.ok).toBe(false);
    expect(v.broken).toMatchObject({
      line: 3,
      seq: 3,
      key: 'app',
      reason: expect.stringMatching(/does not match its hash: the record was edited/),
    });
  });

  it('one flipped byte anywhere in a record (value, hash, prev, seq) names that record', async () => {
    const { log, file } = await freshLog(6);
    const original = readFileSync(file);
    const starts = [0];
    for (let i = 0; i < original.length; i++) if (original[i] === 0x0a) starts.push(i + 1);
    // every byte of record #4 except its newline, one at a time
    for (let pos = starts[3]!; pos < starts[4]! - 1; pos += 7) {
      const bad = Buffer.from(original);
      bad[pos] = bad[pos]! ^ 0x01;
      writeFileSync(file, bad);
      const v = await log.verify();
      expect(v.ok, `byte ${pos}`).toBe(false);
      expect(v.broken?.line, `byte ${pos}`).toBe(4);
    }
    writeFileSync(file, original);
    expect((await log.verify()).ok).toBe(true);
  });

  it('a deleted record in the middle', async () => {
    const { log, file } = await freshLog(6);
    const ls = lines(file);
    ls.splice(2, 1);
    writeLines(file, ls);
    const v = await log.verify();
    expect(v.broken).toMatchObject({
      line: 3,
      seq: 4,
      reason: expect.stringMatching(/record\(s\) #3 before it were deleted/),
    });
  });

  it('the first record deleted', async () => {
    const { log, file } = await freshLog(4);
    writeLines(file, lines(file).slice(1));
    expect((await log.verify()).broken).toMatchObject({
      line: 1,
      seq: 2,
      reason: expect.stringMatching(/#1 before it were deleted/),
    });
  });

  it('the last record(s) deleted (caught by the head)', async () => {
    const { log, file } = await freshLog(6);
    writeLines(file, lines(file).slice(0, 4));
    const v = await log.verify();
    expect(v.ok).toBe(false);
    expect(v.broken).toMatchObject({
      seq: 5,
      reason: expect.stringMatching(/#5\.\.#6 were appended .* deleted from the end/),
    });
  });

  it('two records swapped', async () => {
    const { log, file } = await freshLog(5);
    const ls = lines(file);
    [ls[1], ls[2]] = [ls[2]!, ls[1]!];
    writeLines(file, ls);
    expect((await log.verify()).broken).toMatchObject({ line: 2, seq: 3 });
  });

  it('a forged record inserted (with a correct hash of its own)', async () => {
    const { log, file } = await freshLog(4);
    const ls = lines(file);
    const prev = JSON.parse(ls[1]!) as AuditRecord;
    const forged = chainRecord(entry(99, { state: 'revoke' }), prev);
    ls.splice(2, 0, recordLine(forged).trimEnd());
    writeLines(file, ls);
    expect((await log.verify()).broken).toMatchObject({
      line: 4,
      seq: 3,
      reason: expect.stringMatching(/inserted, duplicated or reordered/),
    });
  });

  it('the whole log rewritten with a valid chain, head left alone', async () => {
    const { log, file } = await freshLog(4);
    let prev: AuditRecord | null = null;
    const rewritten: string[] = [];
    for (const l of lines(file)) {
      const r = JSON.parse(l) as AuditRecord;
      const { v: _v, seq: _s, prev: _p, hash: _h, ...rest } = r;
      const next: AuditRecord = chainRecord({ ...rest, actor: 'someone-else' }, prev);
      rewritten.push(recordLine(next).trimEnd());
      prev = next;
    }
    writeLines(file, rewritten);
    expect((await log.verify()).broken).toMatchObject({
      seq: 4,
      reason: expect.stringMatching(/does not match the head file/),
    });
  });

  it('garbage in a middle line; append refuses to chain onto a damaged last line', async () => {
    const { log, file } = await freshLog(4);
    const ls = lines(file);
    ls[1] = 'not json at all';
    writeLines(file, ls);
    expect((await log.verify()).broken).toMatchObject({
      line: 2,
      reason: expect.stringMatching(/not a valid audit record/),
    });
    const { log: log2, file: file2 } = await freshLog(3);
    const ls2 = lines(file2);
    ls2[2] = ls2[2]!.replace('"key":"app"', '"key":"evil"');
    writeLines(file2, ls2);
    await expect(log2.append(entry(3))).rejects.toMatchObject({
      code: 'STATE_UNREADABLE',
      message: expect.stringMatching(/last record is damaged/),
    });
    expect(lines(file2)).toHaveLength(3);
  });
});

describe('audit log: a crash in the middle of an append leaves a verifiable log', () => {
  it('torn last line: verify warns and passes; the next append cuts it off and records a repair', async () => {
    const { log, file } = await freshLog(3);
    const next = recordLine(chainRecord(entry(3), JSON.parse(lines(file)[2]!) as AuditRecord));
    appendFileSync(file, next.slice(0, Math.floor(next.length / 2))); // the crash: half a line, no newline
    const v = await log.verify();
    expect(v.ok).toBe(true);
    expect(v.records).toBe(3);
    expect(v.warnings.join('\n')).toMatch(/torn last line 4 .* ignored/);

    const rec = await log.append(entry(4));
    expect(rec).toMatchObject({ seq: 5, state: STATES[4] });
    const all = (await log.read()).records;
    expect(all.map((r) => r.type)).toEqual(['transition', 'transition', 'transition', 'repair', 'transition']);
    expect(all[3]).toMatchObject({ droppedBytes: Math.floor(next.length / 2) });
    expect(await log.verify()).toMatchObject({ ok: true, records: 5, warnings: [] });
  });

  it('a complete record that lost only its newline is kept and completed', async () => {
    const { log, file } = await freshLog(2);
    const next = recordLine(chainRecord(entry(2), JSON.parse(lines(file)[1]!) as AuditRecord));
    appendFileSync(file, next.trimEnd());
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 3 });
    expect(v.warnings.join()).toMatch(/lacks its newline/);
    await log.append(entry(3));
    expect(await log.verify()).toMatchObject({ ok: true, records: 4, warnings: [] });
  });

  it('a torn line cannot hide a deletion: an acknowledged record that is torn fails', async () => {
    const { log, file } = await freshLog(4);
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.slice(0, text.length - 30)); // cut into record #4, which the head names
    const v = await log.verify();
    expect(v.ok).toBe(false);
    expect(v.broken?.reason).toMatch(/deleted from the end/);
  });

  it('a writer killed with SIGKILL while appending: the log verifies, and the next append continues the chain', async () => {
    const dir = tempDir('audit-kill');
    mkdirSync(path.join(dir, 'audit'));
    const file = path.join(dir, 'audit', 'audit.jsonl');
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, [WRITER, file, '0', `w${round}`], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      // let it append for a random while, then kill it wherever it is
      await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 80)));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const log = createJsonlAuditLog(file);
      const v = await log.verify();
      expect(v.ok, JSON.stringify(v)).toBe(true);
      expect(v.records).toBeGreaterThan(0);
      await log.append(entry(round));
      const after = await log.verify();
      expect(after.ok, JSON.stringify(after)).toBe(true);
      expect(after.warnings.filter((w) => /torn/.test(w))).toEqual([]);
    }
  });
});

function runWriter(file: string, count: number, tag: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, file, String(count), tag], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer ${tag} exited ${code}: ${err}`))));
  });
}
