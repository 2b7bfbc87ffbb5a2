/**
 * The audit-trail contract for state backends that keep the chain in a database: concurrent writers
 * from several instances build one gap-free chain (never a fork), read/verify see it, and tampering
 * (an edited record, a deleted middle record, records cut off the end) is named by verify.
 */
import { expect, it } from 'vitest';
import type { AuditEntry } from '../../src/app/audit/record.ts';
import type { AuditLog } from '../../src/app/audit/sink.ts';

export interface AuditHarness {
  /** a new instance (own connections) over the same fresh, initialised namespace */
  open(): AuditLog;
  /** tampering with the stored chain, as someone with write access to the database could */
  editLine(seq: number, edit: (line: string) => string): Promise<void>;
  deleteRecord(seq: number): Promise<void>;
}

const entry = (i: number, writer: number): AuditEntry => ({
  type: 'transition',
  time: new Date(Date.UTC(2026, 10, 1, 0, 0, i)).toISOString(),
  key: `k${writer}`,
  rotationId: `rot-20261101t000000z-0000000${writer}`,
  state: 'stage',
  stage: 'stage',
  actor: 'test',
});

export function auditBackendCases(make: () => Promise<AuditHarness>): void {
  it('audit: concurrent appends from several instances make one chain; verify names tampering', async () => {
    const h = await make();
    const empty = await h.open().verify();
    expect(empty).toMatchObject({ ok: true, records: 0, headSeq: null });

    const writers = [h.open(), h.open(), h.open()];
    const appended = await Promise.all(
      writers.map(async (w, wi) => {
        const out = [];
        for (let i = 0; i < 5; i++) out.push(await w.append(entry(i, wi)));
        return out;
      }),
    );
    const seqs = appended.flat().map((r) => r!.seq);
    expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1)); // no fork, no gap
    const log = h.open();
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 15, headSeq: 15 });
    const { records, warnings } = await log.read();
    expect(warnings).toEqual([]);
    expect(records.map((r) => r.seq)).toEqual(seqs);
    for (let i = 1; i < records.length; i++) expect(records[i]!.prev).toBe(records[i - 1]!.hash);

    await h.editLine(7, (l) => l.replace('"state":"stage"', '"state":"promote"'));
    expect((await log.verify()).broken).toMatchObject({ seq: 7, reason: expect.stringMatching(/hash mismatch/) });
    await h.editLine(7, (l) => l.replace('"state":"promote"', '"state":"stage"'));
    expect((await log.verify()).ok).toBe(true);

    await h.deleteRecord(15); // cut off the end
    expect((await log.verify()).broken?.reason).toMatch(/head names record #15 but the chain ends at #14/);
    await h.deleteRecord(5); // and a middle one
    expect((await log.verify()).broken).toMatchObject({ seq: 6, reason: expect.stringMatching(/seq 6 follows 4/) });
  });
}
