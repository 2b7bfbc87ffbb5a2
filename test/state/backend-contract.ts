/**
 * The StateStore contract, run against every state backend over its real server (file, PostgreSQL,
 * DynamoDB on moto): records, snapshots, leases, fencing, ttl takeover, concurrent acquire, lost-update
 * freedom, export/import round trip, the webhook outbox.
 *
 * Usage: describeStateBackendContract('postgres', async () => ({ open, cleanup }))
 * `open()` returns a new store instance (its own connections) over the SAME fresh, initialised
 * namespace each time it is called within one test: several instances play several workers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KeyrotorError } from '../../src/core/errors.ts';
import {
  isLease,
  type KeyRecord,
  type Lease,
  type LeaseHolder,
  type OutboxEntry,
  type PersistedRotation,
  type RotationResult,
  type StateStore,
} from '../../src/core/ports.ts';
import { exportState, importState, parseExport, parseExportFull } from '../../src/app/state/transfer.ts';
import type { AuditEntry } from '../../src/core/audit.ts';
import type { AuditLog } from '../../src/app/audit/sink.ts';

export interface BackendHarness {
  open(): StateStore;
  cleanup?: () => Promise<void>;
}

export const R1 = 'rot-20261101t000000z-00000001';
export const R2 = 'rot-20261102t000000z-00000002';

export function rotation(rotationId: string, stage = 'verify', keyName = 'app'): PersistedRotation {
  return {
    rotationId,
    keyName,
    machineVersion: 3,
    keyrotorVersion: '0.1.0',
    updatedAt: '2026-11-01T00:00:05.000Z',
    snapshot: {
      status: 'active',
      value: stage,
      context: { rotationId, keyName, newKeyId: 'key_2', oldKeyId: 'key_1' },
    },
  };
}

export function result(outcome: RotationResult['outcome'], keyName = 'app'): RotationResult {
  return {
    key: keyName,
    rotationId: R1,
    outcome,
    oldKeyId: 'key_1',
    newKeyId: 'key_2',
    stage: 'revoke',
    startedAt: '2026-11-01T00:00:00.000Z',
    finishedAt: '2026-11-01T00:05:00.000Z',
  };
}

export function lease(x: Lease | LeaseHolder): Lease {
  if (!isLease(x)) throw new Error(`expected a lease, got holder ${x.owner}`);
  return x;
}
export function holder(x: Lease | LeaseHolder): LeaseHolder {
  if (isLease(x)) throw new Error(`expected a holder, got a lease of ${x.owner}`);
  return x;
}
export async function rejection(p: Promise<unknown>): Promise<KeyrotorError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof KeyrotorError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeStateBackendContract(name: string, make: () => Promise<BackendHarness>): void {
  describe(`StateStore contract: ${name}`, () => {
    let h: BackendHarness | undefined;
    const opened: StateStore[] = [];
    const setup = async () => {
      h = await make();
      return () => {
        const s = h!.open();
        opened.push(s);
        return s;
      };
    };
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close?.();
      await h?.cleanup?.();
      h = undefined;
    });

    it('outbox: add, pending oldest first across instances, attempts counted, done removes; ids are checked', async () => {
      const open = await setup();
      const s = open();
      expect(await s.outboxPending!()).toEqual([]);
      const entry = (id: string, createdAt: string, webhook = 0): OutboxEntry => ({
        id,
        webhook,
        webhookName: `hook-${webhook}`,
        body: JSON.stringify({ key: 'app', rotationId: R1, idempotencyKey: id }),
        createdAt,
        attempts: 0,
      });
      const a = entry(`${R1}.rotated.w0.0000000a`, '2026-11-01T00:00:02.000Z');
      const b = entry(`${R1}.rotated.w1.0000000b`, '2026-11-01T00:00:01.000Z', 1);
      const c = entry(`${R2}.rolled_back.w0.0000000c`, '2026-11-01T00:00:03.000Z');
      await s.outboxAdd!(a);
      await open().outboxAdd!(b);
      await s.outboxAdd!(c);
      // keys() lists state records only, never outbox entries
      expect(await s.keys()).toEqual([]);
      expect(await open().outboxPending!()).toEqual([b, a, c]);
      expect(await s.outboxPending!(2)).toEqual([b, a]);

      await s.outboxAttempted!(a.id, 3);
      await open().outboxAttempted!(a.id, 2);
      expect((await s.outboxPending!()).find((e) => e.id === a.id)?.attempts).toBe(5);

      await open().outboxDone!(b.id);
      await s.outboxDone!(b.id); // again: not an error
      await s.outboxAttempted!(b.id, 1); // a done entry stays done
      await s.outboxDone!('never-written');
      expect(await open().outboxPending!()).toEqual([{ ...a, attempts: 5 }, c]);

      // the same id again replaces the entry (at most one pending entry per id)
      await s.outboxAdd!({ ...c, attempts: 1 });
      expect(await s.outboxPending!()).toEqual([
        { ...a, attempts: 5 },
        { ...c, attempts: 1 },
      ]);

      await s.outboxDone!(a.id);
      await s.outboxDone!(c.id);
      expect(await open().outboxPending!()).toEqual([]);

      for (const bad of ['../x', 'a/b', '', '.hidden', 'x'.repeat(201)]) {
        expect((await rejection(s.outboxAdd!(entry(bad, '2026-11-01T00:00:00.000Z')))).code).toBe('INTERNAL');
      }
      expect(
        (await rejection(s.outboxAdd!({ ...entry('ok-id', '2026-11-01T00:00:00.000Z'), createdAt: 'yesterday' }))).code,
      ).toBe('INTERNAL');
      expect(await s.outboxPending!()).toEqual([]);
    });

    it('records: unknown is null; saveActive, setProviderState, finish and put round-trip; keys() lists them', async () => {
      const open = await setup();
      const s = open();
      expect(await s.read('app')).toBeNull();
      expect(await s.keys()).toEqual([]);

      await s.saveActive('app', rotation(R1, 'stage'));
      await s.saveActive('app', rotation(R1, 'verify'));
      await s.setProviderState('app', 'serviceAccountId', 'sa_1');
      const mid = await open().read('app'); // another instance sees it
      expect(mid).toEqual({
        keyName: 'app',
        active: rotation(R1, 'verify'),
        last: null,
        lastRotatedAt: null,
        currentKeyId: null,
        providerState: { serviceAccountId: 'sa_1' },
      });

      await s.finish('app', result('rotated'), 'key_2');
      const done = await s.read('app');
      expect(done).toMatchObject({
        active: null,
        last: result('rotated'),
        lastRotatedAt: '2026-11-01T00:05:00.000Z',
        currentKeyId: 'key_2',
        providerState: { serviceAccountId: 'sa_1' },
      });
      // finish without a current key id keeps what was known; keepActive stays in the same write
      await s.finish('app', result('needs_attention'), undefined, rotation(R2, 'promote'));
      expect(await s.read('app')).toMatchObject({ currentKeyId: 'key_2', active: rotation(R2, 'promote') });

      const whole: KeyRecord = {
        keyName: 'db',
        active: null,
        last: result('rolled_back', 'db'),
        lastRotatedAt: null,
        currentKeyId: 'key_9',
        providerState: { a: 'b' },
      };
      await s.put(whole);
      expect(await s.read('db')).toEqual(whole);
      expect(await s.keys()).toEqual(['app', 'db']);
    });

    it('lease: exclusive per key across instances; the same owner extends and keeps its token; release frees it', async () => {
      const open = await setup();
      const a = open();
      const b = open();
      const la = lease(await a.acquire('app', 'owner-a', 60_000));
      expect(la.token).toBeGreaterThan(0);
      expect(la.expiresAt).toBeGreaterThan(Date.now() + 50_000);
      expect(holder(await b.acquire('app', 'owner-b', 60_000)).owner).toBe('owner-a');
      expect(isLease(await b.acquire('other', 'owner-b', 60_000))).toBe(true); // per key

      const again = lease(await b.acquire('app', 'owner-a', 60_000));
      expect(again.token).toBe(la.token);
      await la.renew();

      await la.release();
      const lb = lease(await b.acquire('app', 'owner-b', 60_000));
      expect(lb.token).toBeGreaterThan(la.token); // tokens only grow, also across a release
      expect(holder(await a.acquire('app', 'owner-c', 60_000)).owner).toBe('owner-b');
      await lb.release();
    });

    it('fencing: after its ttl a lease is taken over; the old holder cannot write, renew or release any more', async () => {
      const open = await setup();
      const a = open();
      const b = open();
      const la = lease(await a.acquire('app', 'worker-a', 600));
      await a.saveActive('app', rotation(R1, 'stage'), la); // a fenced write while current
      expect(holder(await b.acquire('app', 'worker-b', 600)).owner).toBe('worker-a');

      await sleep(900); // worker-a "freezes" past its ttl (GC pause, SIGSTOP, a frozen Lambda)
      const lb = lease(await b.acquire('app', 'worker-b', 60_000));
      expect(lb.token).toBeGreaterThan(la.token);
      await b.saveActive('app', rotation(R1, 'promote'), lb);

      // worker-a wakes up: every write of its rotation is refused, nothing is overwritten
      const current = (await a.read('app'))!;
      const stale = [
        () => a.saveActive('app', rotation(R1, 'unstage'), la),
        () => a.finish('app', result('rolled_back'), 'key_1', null, la),
        () => a.setProviderState('app', 'x', 'y', la),
        () => a.put({ ...current, currentKeyId: 'key_evil' }, la),
      ];
      for (const write of stale) {
        const e = await rejection(write());
        expect(e.code).toBe('LEASE_LOST');
        expect(e.exitCode).toBe(3);
        expect(e.message).toMatch(/app/);
      }
      expect(await b.read('app')).toMatchObject({
        active: rotation(R1, 'promote'),
        currentKeyId: null,
        providerState: {},
      });
      // renewing fails (the file backend says LOCKED, the databases LEASE_LOST: both exit 3)
      const r = await rejection(la.renew());
      expect(['LOCKED', 'LEASE_LOST']).toContain(r.code);
      expect(r.exitCode).toBe(3);
      await la.release(); // not ours: must not free worker-b's lease
      expect(holder(await open().acquire('app', 'worker-c', 60_000)).owner).toBe('worker-b');

      // the new holder keeps writing
      await b.finish('app', result('rotated'), 'key_2', null, lb);
      expect(await a.read('app')).toMatchObject({ active: null, currentKeyId: 'key_2' });
      await lb.release();
      // a released lease's token is stale too
      const e = await rejection(b.saveActive('app', rotation(R2), { token: lb.token - 1 }));
      expect(e.code).toBe('LEASE_LOST');
    });

    it('a lease that is renewed is not taken over; an expired one is, by exactly one of several', async () => {
      const open = await setup();
      const a = open();
      const la = lease(await a.acquire('app', 'worker-a', 700));
      for (let i = 0; i < 3; i++) {
        await sleep(300);
        await la.renew();
      }
      expect(holder(await open().acquire('app', 'worker-x', 700)).owner).toBe('worker-a');
      await sleep(1_000); // worker-a died
      const workers = Array.from({ length: 6 }, () => open());
      const got = await Promise.all(workers.map((w, i) => w.acquire('app', `worker-${i}`, 60_000)));
      const winners = got.filter(isLease);
      expect(winners).toHaveLength(1);
      expect(winners[0]!.token).toBeGreaterThan(la.token);
      for (const g of got.filter((x) => !isLease(x))) expect(g.owner).toBe(winners[0]!.owner);
      await winners[0]!.release();
    });

    it('concurrent acquire of a fresh key: exactly one winner', async () => {
      const open = await setup();
      const workers = Array.from({ length: 8 }, () => open());
      const got = await Promise.all(workers.map((w, i) => w.acquire('fresh', `w${i}`, 60_000)));
      expect(got.filter(isLease)).toHaveLength(1);
    });

    it('concurrent writes from several instances lose nothing (read-modify-write is atomic)', async () => {
      const open = await setup();
      const writers = Array.from({ length: 4 }, () => open());
      await Promise.all(
        writers.flatMap((w, i) => [0, 1, 2].map((j) => w.setProviderState('app', `w${i}.${j}`, `v${i}${j}`))),
      );
      const r = await open().read('app');
      expect(Object.keys(r!.providerState).sort()).toEqual(
        [0, 1, 2, 3].flatMap((i) => [0, 1, 2].map((j) => `w${i}.${j}`)).sort(),
      );
    });

    it('audit with the snapshot: saveActive / finish chain their audit entries in the same write; a refused fence writes neither; export/import keeps the chain', async () => {
      const open = await setup();
      const a = open();
      const log = (s: StateStore) => (s as StateStore & { auditLog(): AuditLog }).auditLog();
      expect(a.auditTrail).toBeTruthy();
      expect(log(a).trail).toBe(a.auditTrail);
      const entry = (state: string, key = 'app', rotationId = R1): AuditEntry => ({
        type: 'transition',
        time: '2026-11-01T00:00:01.000Z',
        key,
        rotationId,
        state,
        stage: state,
        actor: 'test',
      });
      const la = lease(await a.acquire('app', 'worker-a', 600));
      await a.saveActive('app', rotation(R1, 'stage'), la, [entry('stage')]);
      await a.saveActive('app', rotation(R1, 'verify'), la); // a write without a transition
      // several keys and instances at once: one chain, no fork, no gap
      const others = ['k1', 'k2', 'k3'].map((k) => ({ k, s: open() }));
      await Promise.all(
        others.map(async ({ k, s }) => {
          for (const st of ['preflight', 'issue', 'stage'])
            await s.saveActive(k, rotation(R2, st, k), undefined, [entry(st, k, R2)]);
        }),
      );
      let v = await log(open()).verify();
      expect(v).toMatchObject({ ok: true, records: 10, headSeq: 10 });

      // worker-a freezes past its ttl; worker-b takes over and finishes with the final records
      await sleep(900);
      const b = open();
      const lb = lease(await b.acquire('app', 'worker-b', 60_000));
      await b.finish('app', result('rotated'), 'key_2', null, lb, [
        entry('rotated'),
        { type: 'result', time: '2026-11-01T00:05:00.000Z', key: 'app', rotationId: R1, outcome: 'rotated' },
      ]);
      // worker-a wakes: neither its snapshot nor its audit record lands
      expect((await rejection(a.saveActive('app', rotation(R1, 'promote'), la, [entry('promote')]))).code).toBe(
        'LEASE_LOST',
      );
      expect((await rejection(a.finish('app', result('rolled_back'), 'key_1', null, la, [entry('x')]))).code).toBe(
        'LEASE_LOST',
      );
      v = await log(open()).verify();
      expect(v).toMatchObject({ ok: true, records: 12, headSeq: 12 });
      const { records } = await log(open()).read();
      expect(records.filter((r) => r.key === 'app').map((r) => r.state ?? r.outcome)).toEqual([
        'stage',
        'rotated',
        'rotated',
      ]);
      expect(await b.read('app')).toMatchObject({ active: null, currentKeyId: 'key_2' });
      await lb.release();

      // export / import: the chain moves intact and later writes chain on
      const exported = await exportState(a, new Date(), log(a));
      expect(exported.audit).toBe(12);
      const parsed = parseExportFull(exported.lines.join('\n'), 'export.jsonl');
      const first = h!;
      h = await make();
      const t = h.open();
      opened.push(t);
      try {
        await importState(t, parsed.records, { audit: { log: log(t), records: parsed.audit } });
        const moved = await log(t).verify();
        expect(moved).toMatchObject({ ok: true, records: 12, headHash: v.headHash });
        await t.saveActive('k1', rotation(R2, 'verify', 'k1'), undefined, [entry('verify', 'k1', R2)]);
        expect(await log(t).verify()).toMatchObject({ ok: true, records: 13 });
      } finally {
        await first.cleanup?.();
      }
    });

    it('readMany: every asked key, null when never seen, with the time of the read', async () => {
      const open = await setup();
      const s = open();
      await s.finish('app', result('rotated'), 'key_2');
      await s.saveActive('db', rotation(R2, 'stage', 'db'));
      const before = Date.now();
      const b = await open().readMany!(['app', 'db', 'nope']);
      expect([...b.records.keys()]).toEqual(['app', 'db', 'nope']);
      expect(b.records.get('app')).toEqual(await s.read('app'));
      expect(b.records.get('db')).toEqual(await s.read('db'));
      expect(b.records.get('nope')).toBeNull();
      expect(Math.abs(b.readAt - before)).toBeLessThan(5_000);
    });

    it('claim: up to limit leases in due order, skipping held ones; each a fenced lease with a new token', async () => {
      const open = await setup();
      const a = open();
      const b = open();
      const held = lease(await b.acquire('k2', 'worker-b', 60_000));
      const old = lease(await a.acquire('k4', 'worker-x', 60_000));
      await old.release();
      const cands = [5, 2, 4, 1, 3].map((i) => ({ keyName: `k${i}`, dueAt: 1_000 * i, ttlMs: 60_000 }));
      const since = (await a.readMany!([])).readAt + 1;
      const got = await a.claim!(cands, 'worker-a', 2, since);
      expect(got.map((g) => g.keyName)).toEqual(['k1', 'k3']); // k2 is held
      for (const g of got) {
        expect(g.lease.owner).toBe('worker-a');
        expect(g.lease.token).toBeGreaterThan(0);
        expect(holder(await b.acquire(g.keyName, 'worker-b', 60_000)).owner).toBe('worker-a');
        await a.saveActive(g.keyName, rotation(R1, 'issue', g.keyName), g.lease); // fenced write
      }
      const more = await open().claim!(cands, 'worker-c', 10, since);
      expect(more.map((g) => g.keyName)).toEqual(['k4', 'k5']);
      expect(more[0]!.lease.token).toBeGreaterThan(old.token);
      for (const g of [...got, ...more]) await g.lease.release();
      await held.release();
    });

    it.skipIf(name === 'file')(
      'claim: a key granted to another worker after the read (`since`) is left alone until read again',
      async () => {
        const open = await setup();
        const a = open();
        const cands = [{ keyName: 'app', dueAt: 0, ttlMs: 60_000 }];
        const since = (await a.readMany!(['app'])).readAt;
        await sleep(20);
        const other = lease(await open().acquire('app', 'worker-b', 60_000)); // it ran the key after a's read
        await other.release();
        expect(await a.claim!(cands, 'worker-a', 1, since)).toEqual([]);
        await sleep(20);
        const again = (await a.readMany!(['app'])).readAt;
        const got = await a.claim!(cands, 'worker-a', 1, again);
        expect(got.map((g) => g.keyName)).toEqual(['app']);
        expect(got[0]!.lease.token).toBeGreaterThan(other.token);
        await got[0]!.lease.release();
      },
    );

    it('claim: several workers claiming at once never share a key; together they get every key once', async () => {
      const open = await setup();
      const keys = Array.from({ length: 30 }, (_, i) => `key${String(i).padStart(2, '0')}`);
      const cands = keys.map((k, i) => ({ keyName: k, dueAt: i, ttlMs: 60_000 }));
      const workers = Array.from({ length: 3 }, () => open());
      const since = (await workers[0]!.readMany!([])).readAt + 1;
      const granted: string[][] = [[], [], []];
      await Promise.all(
        workers.map(async (w, i) => {
          for (;;) {
            const got = await w.claim!(cands, `worker-${i}`, 4, since);
            if (got.length === 0) return;
            granted[i]!.push(...got.map((g) => g.keyName));
          }
        }),
      );
      const all = granted.flat();
      expect(all.slice().sort()).toEqual(keys);
      expect(new Set(all).size).toBe(keys.length);
    });

    it('export/import round trip (into a fresh namespace of the same backend); import refuses to overwrite', async () => {
      const open = await setup();
      const s = open();
      await s.saveActive('app', rotation(R1, 'confirm'));
      await s.setProviderState('app', 'serviceAccountId', 'sa_1');
      await s.finish('db', result('rotated', 'db'), 'key_7');
      // the webhook outbox: two pending entries (one retried before) and one delivered
      const note = (id: string, createdAt: string, webhook = 0): OutboxEntry => ({
        id,
        webhook,
        webhookName: `hook-${webhook}`,
        body: JSON.stringify({ key: 'app', rotationId: R1, outcome: 'rolled_back', idempotencyKey: id }),
        createdAt,
        attempts: 0,
      });
      const p1 = note(`${R1}.rolled_back.w0.0000000a`, '2026-11-01T00:00:01.000Z');
      const p2 = note(`${R1}.rolled_back.w1.0000000b`, '2026-11-01T00:00:02.000Z', 1);
      const sent = note(`${R1}.rolled_back.w2.0000000c`, '2026-11-01T00:00:03.000Z', 2);
      for (const e of [p1, p2, sent]) await s.outboxAdd!(e);
      await s.outboxAttempted!(p2.id, 4);
      await s.outboxDone!(sent.id);
      const { lines, keys, outbox } = await exportState(s);
      expect(keys).toBe(2);
      expect(outbox).toBe(2);
      expect(JSON.parse(lines[0]!)).toMatchObject({ format: 'keyrotor-state-export/2', keys: 2, outbox: 2 });
      expect(lines.filter((l) => l.startsWith('{"kind":"outbox"')).map((l) => JSON.parse(l))).toEqual([
        { kind: 'outbox', entry: p1 },
        { kind: 'outbox', entry: { ...p2, attempts: 4 } },
      ]);
      const records = parseExport(lines.join('\n'), 'export.jsonl');
      const parsed = parseExportFull(lines.join('\n'), 'export.jsonl');
      expect(parsed.outbox).toEqual([p1, { ...p2, attempts: 4 }]);
      const first = h!;
      h = await make(); // a second, fresh namespace
      const t = h.open();
      opened.push(t);
      try {
        const r = await importState(t, records, { outbox: parsed.outbox });
        expect(r).toEqual({ imported: ['app', 'db'], active: ['app'], outbox: 2, outboxAlreadyPending: 0 });
        expect(await t.read('app')).toEqual(await s.read('app'));
        expect(await t.read('db')).toEqual(await s.read('db'));
        // pending entries with their ids and attempt counts; the delivered one stays behind
        expect(await t.outboxPending!()).toEqual([p1, { ...p2, attempts: 4 }]);
        const again = await rejection(importState(t, records, { outbox: parsed.outbox }));
        expect(again.code).toBe('USAGE');
        expect(again.message).toMatch(/already holds state for "app", "db"; nothing was imported/);
        // the target made more attempts meanwhile; importing the same file again keeps one entry per id
        // and the higher attempt count (a re-import never resets the give-up rule nor adds a delivery)
        await t.outboxAttempted!(p1.id, 2);
        const twice = await importState(t, records, { overwrite: true, outbox: parsed.outbox });
        expect(twice).toMatchObject({ outbox: 2, outboxAlreadyPending: 2 });
        expect(await s.outboxPending!()).toEqual([p1, { ...p2, attempts: 4 }]); // the source is untouched
        expect(await t.outboxPending!()).toEqual([
          { ...p1, attempts: 2 },
          { ...p2, attempts: 4 },
        ]);
        // a key being rotated there is not overwritten
        const busy = lease(await t.acquire('db', 'rotating', 60_000));
        const locked = await rejection(importState(t, records, { overwrite: true }));
        expect(locked.code).toBe('LOCKED');
        await busy.release();
        // a store without an outbox refuses pending entries before writing anything
        const noOutbox: StateStore = { ...t, outboxAdd: undefined, outboxPending: undefined };
        const before = await t.read('app');
        const refused = await rejection(
          importState(noOutbox, [{ ...records[0]!, currentKeyId: 'key_x' }], {
            overwrite: true,
            outbox: parsed.outbox,
          }),
        );
        expect(refused.message).toMatch(
          /has no webhook outbox for the 2 pending notification\(s\); nothing was imported/,
        );
        expect(await t.read('app')).toEqual(before);
      } finally {
        await first.cleanup?.();
      }
    });
  });
}
