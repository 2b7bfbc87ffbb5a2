/**
 * The file backend's journal: each state write is one fsync'd line in `<stateDir>/state/<key>.journal`
 * holding the record and the transition's audit records; the audit log (audit.jsonl) gets those
 * records right after, without an fsync of its own. What a crash can leave, and how it is repaired:
 *   - the process died after the journal line, before its records reached audit.jsonl (or a power
 *     loss took the log's unsynced tail): the next reader or writer of the log restores them from
 *     the journals before anything else is chained (no fork, no gap);
 *   - a long journal is folded into `<key>.json` (the log synced first).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../src/core/audit.ts';
import { createFileStateStore } from '../../src/app/state/file-state-store.ts';
import { AUDIT_HEAD_FORMAT } from '../../src/app/audit/jsonl.ts';
import { tempDir } from '../helpers/artifacts.ts';
import { R1, R2, result, rotation } from './backend-contract.ts';

const entry = (key: string, state: string, rotationId = R1): AuditEntry => ({
  type: 'transition',
  time: '2026-11-01T00:00:01.000Z',
  key,
  rotationId,
  state,
  stage: state,
  actor: 'test',
});

/** some rotations' worth of writes on three keys */
async function populate(dir: string) {
  const s = createFileStateStore(dir);
  for (const k of ['a', 'b', 'c'])
    for (const st of ['preflight', 'issue', 'stage'])
      await s.saveActive(k, rotation(R1, st, k), undefined, [entry(k, st)]);
  await s.finish('a', result('rotated', 'a'), 'key_2', null, undefined, [
    entry('a', 'rotated'),
    { type: 'result', time: '2026-11-01T00:05:00.000Z', key: 'a', rotationId: R1, outcome: 'rotated' },
  ]);
  return s;
}

/** cut the last `n` records off audit.jsonl and point the head at the one before (as a crash leaves it) */
function cutTail(dir: string, n: number): string[] {
  const file = path.join(dir, 'audit', 'audit.jsonl');
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  const kept = lines.slice(0, -n);
  writeFileSync(file, kept.map((l) => l + '\n').join(''));
  const last = JSON.parse(kept.at(-1)!) as { seq: number; hash: string; time: string };
  writeFileSync(
    `${file}.head`,
    JSON.stringify({ format: AUDIT_HEAD_FORMAT, seq: last.seq, hash: last.hash, time: last.time }) + '\n',
  );
  // the log's last write that reached the disk was before the journals' last lines
  const past = Date.now() / 1000 - 3600;
  utimesSync(file, past, past);
  return lines;
}

describe('file backend journal', () => {
  it('records committed in a journal but missing from audit.jsonl are restored before anything is read or chained', async () => {
    const dir = tempDir('journal-recover');
    await populate(dir);
    const full = cutTail(dir, 3);
    expect(full).toHaveLength(11);

    // a new process reads the trail: the three committed records are back, verbatim, chain intact
    const log = createFileStateStore(dir).auditLog();
    expect(await log.verify()).toMatchObject({ ok: true, records: 11, headSeq: 11 });
    expect(
      readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8')
        .trim()
        .split('\n'),
    ).toEqual(full);

    // a new process writes: it chains after the restored records, not onto the cut tail
    cutTail(dir, 2);
    const s = createFileStateStore(dir);
    await s.saveActive('b', rotation(R2, 'verify', 'b'), undefined, [entry('b', 'verify', R2)]);
    const v = await s.auditLog().verify();
    expect(v).toMatchObject({ ok: true, records: 12, headSeq: 12 });
    const { records } = await s.auditLog().read();
    expect(records.slice(0, 11).map((r) => r.hash)).toEqual(full.map((l) => (JSON.parse(l) as { hash: string }).hash));
  });

  it("a long-running writer restores them after taking over a dead writer's lock", async () => {
    const dir = tempDir('journal-stale-lock');
    const s = await populate(dir);
    // this instance has appended already (its first-append recovery is done)
    const full = cutTail(dir, 2);
    // the writer that committed them died holding the audit lock
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    const pid = Number(dead.stdout.trim());
    writeFileSync(
      path.join(dir, 'audit', 'audit.jsonl.lock'),
      JSON.stringify({ pid, host: hostname(), at: new Date().toISOString() }),
    );
    await s.saveActive('c', rotation(R2, 'verify', 'c'), undefined, [entry('c', 'verify', R2)]);
    expect(await s.auditLog().verify()).toMatchObject({ ok: true, records: 12 });
    const { records } = await s.auditLog().read();
    expect(records.slice(0, 11).map((r) => r.hash)).toEqual(full.map((l) => (JSON.parse(l) as { hash: string }).hash));
    expect(records[11]).toMatchObject({ seq: 12, key: 'c', state: 'verify' });
  });

  it('a damaged audit log refuses the records but not the snapshot: the rotation goes on (an audit failure never stops one)', async () => {
    const dir = tempDir('journal-audit-damaged');
    await populate(dir);
    const file = path.join(dir, 'audit', 'audit.jsonl');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    writeFileSync(file, [...lines.slice(0, -1), lines.at(-1)!.replace('"rotated"', '"edited"')].join('\n') + '\n');
    const s = createFileStateStore(dir);
    const r = await s.saveActive('b', rotation(R2, 'verify', 'b'), undefined, [entry('b', 'verify', R2)]);
    expect(r).toMatchObject({ auditError: expect.objectContaining({ code: 'STATE_UNREADABLE' }) });
    expect((await s.read('b'))?.active).toEqual(rotation(R2, 'verify', 'b'));
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(lines.length); // nothing chained on
    // and the journal line carries no audit record that the log does not have
    const last = readFileSync(path.join(dir, 'state', 'b.journal'), 'utf8')
      .trim()
      .split('\n')
      .at(-1)!;
    expect(JSON.parse(last)).not.toHaveProperty('audit');
  });

  it('a log moved aside starts afresh: nothing from the journals is carried into it', async () => {
    const dir = tempDir('journal-moved-aside');
    await populate(dir);
    const file = path.join(dir, 'audit', 'audit.jsonl');
    renameSync(file, `${file}.old`);
    renameSync(`${file}.head`, `${file}.head.old`);
    const s = createFileStateStore(dir);
    expect(await s.auditLog().verify()).toMatchObject({ ok: true, records: 0 });
    await s.saveActive('a', rotation(R2, 'preflight', 'a'), undefined, [entry('a', 'preflight', R2)]);
    const { records } = await s.auditLog().read();
    expect(records.map((r) => [r.seq, r.rotationId])).toEqual([[1, R2]]);
  });

  it('a journal longer than the limit is folded into <key>.json; the record and the chain stay', async () => {
    const dir = tempDir('journal-compact');
    const s = createFileStateStore(dir);
    const journal = path.join(dir, 'state', 'app.journal');
    const blob = 'x'.repeat(60_000);
    let i = 0;
    while (!existsSync(path.join(dir, 'state', 'app.json'))) {
      await s.setProviderState('app', `blob${i % 3}`, blob);
      await s.saveActive('app', rotation(R1, `s${i}`), undefined, [entry('app', `s${i}`)]);
      i++;
      expect(i).toBeLessThan(20);
    }
    expect(i).toBeGreaterThan(1); // folded only once the journal grew past the limit
    expect(existsSync(journal)).toBe(false);
    const folded = JSON.parse(readFileSync(path.join(dir, 'state', 'app.json'), 'utf8')) as { format: string };
    expect(folded.format).toBe('keyrotor-state/1');
    const r = await createFileStateStore(dir).read('app');
    expect(r?.active).toEqual(rotation(R1, `s${i - 1}`));
    expect(Object.keys(r!.providerState).sort()).toEqual(['blob0', 'blob1', 'blob2'].slice(0, Math.min(i, 3)));
    expect(await createFileStateStore(dir).auditLog().verify()).toMatchObject({ ok: true, records: i });
    // writing on starts a new journal over the folded record
    await s.saveActive('app', rotation(R2, 'preflight'), undefined, [entry('app', 'preflight', R2)]);
    expect(existsSync(journal)).toBe(true);
    expect((await createFileStateStore(dir).read('app'))?.providerState.blob0).toBe(blob);
    expect(await createFileStateStore(dir).keys()).toEqual(['app']);
  });

  it("the head file catches up when a lease is released: lagging while keys are held, never moved back by an older writer's release", async () => {
    const dir = tempDir('journal-head');
    const file = path.join(dir, 'audit', 'audit.jsonl');
    const head = () => (JSON.parse(readFileSync(`${file}.head`, 'utf8')) as { seq: number }).seq;
    const lastSeq = () => (JSON.parse(readFileSync(file, 'utf8').trim().split('\n').at(-1)!) as { seq: number }).seq;
    // two instances (two processes' worth of state), each holding a key's lease
    const a = createFileStateStore(dir);
    const b = createFileStateStore(dir);
    const la = await a.acquire('a', 'worker-a', 60_000);
    const lb = await b.acquire('b', 'worker-b', 60_000);
    if (!('token' in la) || !('token' in lb)) throw new Error('leases not granted');
    await a.saveActive('a', rotation(R1, 'preflight', 'a'), la, [entry('a', 'preflight')]);
    await a.saveActive('a', rotation(R1, 'issue', 'a'), la, [entry('a', 'issue')]);
    await b.saveActive('b', rotation(R2, 'preflight', 'b'), lb, [entry('b', 'preflight', R2)]);
    expect(lastSeq()).toBe(3);
    // while held, the head may lag behind (verify accepts records after it)
    expect(existsSync(`${file}.head`) ? head() : 0).toBeLessThan(3);
    expect(await createFileStateStore(dir).auditLog().verify()).toMatchObject({ ok: true, records: 3 });

    // a releases first: its last record is no longer the log's last; the head names the log's end
    await la.release();
    expect(head()).toBe(3);
    await b.saveActive('b', rotation(R2, 'issue', 'b'), lb, [entry('b', 'issue', R2)]);
    await lb.release();
    expect(head()).toBe(4);

    // after the releases, the head names the log's last record, hash and all
    const last = JSON.parse(readFileSync(file, 'utf8').trim().split('\n').at(-1)!) as { seq: number; hash: string };
    expect(JSON.parse(readFileSync(`${file}.head`, 'utf8'))).toMatchObject({ seq: last.seq, hash: last.hash });
    expect(await createFileStateStore(dir).auditLog().verify()).toMatchObject({ ok: true, records: 4, headSeq: 4 });
  });
});
