import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/core/clock.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import {
  isLease,
  type Lease,
  type LeaseHolder,
  type PersistedRotation,
  type RotationResult,
} from '../../src/core/ports.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { holderLiveness, selfIdentity, type HolderIdentity } from '../../src/app/state/holder.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

const run = promisify(execFile);
const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';

function manualClock(start = Date.now()): Clock & { advance(ms: number): void; set(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    sleep: async (ms) => void (t += ms),
    advance: (ms) => void (t += ms),
    set: (ms) => void (t = ms),
  };
}

function rotation(rotationId: string, over: Partial<PersistedRotation> = {}): PersistedRotation {
  return {
    rotationId,
    keyName: 'app',
    machineVersion: 3,
    keyrotorVersion: '0.1.0',
    updatedAt: '2026-11-01T00:00:05.000Z',
    snapshot: {
      status: 'active',
      value: { stage: 'verify' },
      context: { rotationId, newKeyId: 'key_2', oldKeyId: 'key_1' },
    },
    ...over,
  };
}

function result(outcome: RotationResult['outcome'], over: Partial<RotationResult> = {}): RotationResult {
  return {
    key: 'app',
    rotationId: R1,
    outcome,
    oldKeyId: 'key_1',
    newKeyId: 'key_2',
    stage: 'revoke',
    startedAt: '2026-11-01T00:00:00.000Z',
    finishedAt: '2026-11-01T00:05:00.000Z',
    ...over,
  };
}

async function err(p: Promise<unknown>): Promise<KeyrotorError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(KeyrotorError);
  return e as KeyrotorError;
}

function lease(x: Lease | LeaseHolder): Lease {
  if (!isLease(x)) throw new Error(`expected a lease, got holder ${x.owner}`);
  return x;
}
function holder(x: Lease | LeaseHolder): LeaseHolder {
  if (isLease(x)) throw new Error(`expected a holder, got a lease for ${x.owner}`);
  return x;
}

describe('file state store: records', () => {
  it('round trip: absent -> null; saveActive, setProviderState, read, keys; private modes; atomic (no temp files left)', async () => {
    const dir = tempDir('state-roundtrip');
    const s = createFileStateStore(dir);
    expect(await s.read('app')).toBeNull();
    expect(await s.keys()).toEqual([]);
    await s.saveActive('app', rotation(R1));
    await s.setProviderState('app', 'serviceAccountId', 'svc_123');
    await s.setProviderState('app', 'other', 'x');
    await s.saveActive('app', rotation(R1, { updatedAt: '2026-11-01T00:00:09.000Z' }));
    const r = await createFileStateStore(dir).read('app');
    expect(r).toEqual({
      keyName: 'app',
      active: rotation(R1, { updatedAt: '2026-11-01T00:00:09.000Z' }),
      last: null,
      lastRotatedAt: null,
      currentKeyId: null,
      providerState: { serviceAccountId: 'svc_123', other: 'x' },
    });
    await s.saveActive('web', rotation(R2, { keyName: 'web' }));
    expect(await s.keys()).toEqual(['app', 'web']);
    // every write is one line appended to the key's journal; the last line is the record
    const file = path.join(dir, 'state', 'app.journal');
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(JSON.parse(l).format).toBe('keyrotor-journal/1');
    expect(JSON.parse(lines[3]!).record).toEqual(r);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(readdirSync(path.dirname(file)).sort()).toEqual(['app.journal', 'web.journal']);
    expect(s.label).toContain('file:');
  });

  it('parallel updates in one process lose nothing', async () => {
    const dir = tempDir('state-parallel');
    const a = createFileStateStore(dir);
    const b = createFileStateStore(dir);
    await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).setProviderState('app', `k${i}`, `v${i}`)));
    expect(Object.keys((await a.read('app'))!.providerState)).toHaveLength(12);
  });

  it('finish with keepActive records the result and keeps that rotation resumable in one write', async () => {
    const dir = tempDir('state-finish-keep');
    const s = createFileStateStore(dir);
    await s.saveActive('app', rotation(R1));
    const stuck = result('needs_attention', { stage: 'promote' });
    await s.finish('app', stuck, 'key_1', rotation(R1));
    const r = (await s.read('app'))!;
    expect(r.last).toEqual(stuck);
    expect(r.active?.rotationId).toBe(R1);
  });

  it('finish: clears active, records the result; rotated sets lastRotatedAt and currentKeyId', async () => {
    const dir = tempDir('state-finish');
    const s = createFileStateStore(dir);
    await s.saveActive('app', rotation(R1));
    await s.finish('app', result('rotated'), 'key_2');
    let r = (await s.read('app'))!;
    expect(r.active).toBeNull();
    expect(r.last).toEqual(result('rotated'));
    expect(r.lastRotatedAt).toBe('2026-11-01T00:05:00.000Z');
    expect(r.currentKeyId).toBe('key_2');

    // a rolled-back rotation keeps lastRotatedAt; the caller names the key that is current
    await s.saveActive('app', rotation(R2));
    const failed = result('rolled_back', {
      rotationId: R2,
      oldKeyId: 'key_2',
      newKeyId: 'key_3',
      stage: 'verify',
      finishedAt: '2026-11-02T00:00:00.000Z',
      error: { code: 'KEY_INVALID', message: 'new key rejected', stage: 'verify', retryable: false },
    });
    await s.finish('app', failed, 'key_2');
    r = (await s.read('app'))!;
    expect(r.active).toBeNull();
    expect(r.last).toEqual(failed);
    expect(r.lastRotatedAt).toBe('2026-11-01T00:05:00.000Z');
    expect(r.currentKeyId).toBe('key_2');

    // without currentKeyId, the known one is kept
    await s.finish(
      'app',
      result('skipped', { rotationId: null, newKeyId: null, finishedAt: '2026-11-03T00:00:00.000Z' }),
    );
    r = (await s.read('app'))!;
    expect(r.currentKeyId).toBe('key_2');
    expect(r.lastRotatedAt).toBe('2026-11-01T00:05:00.000Z');

    // finish of a key never seen creates its record
    await s.finish('fresh', result('rotated', { key: 'fresh', finishedAt: undefined }), 'key_9');
    const f = (await s.read('fresh'))!;
    expect(f.currentKeyId).toBe('key_9');
    expect(f.lastRotatedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('refuses to write a record it could not read back', async () => {
    const s = createFileStateStore(tempDir('state-invalid-write'));
    const e = await err(s.saveActive('app', rotation(R1, { snapshot: undefined })));
    expect(e.code).toBe('INTERNAL');
    expect(await s.read('app')).toBeNull();
  });

  it('rejects key names that are not safe file names', async () => {
    const s = createFileStateStore(tempDir('state-names'));
    for (const bad of ['../x', 'a/b', '.hidden', '', 'a..b']) {
      const e = await err(s.read(bad));
      expect(e.code).toBe('UNKNOWN_KEY');
    }
  });
});

describe('file state store: damage is an error naming the file, never a reset', () => {
  /** a state file as keyrotor 0.2.0 wrote it (`<key>.json`; still read, and what a journal folds into) */
  async function seeded(prefix: string) {
    const dir = tempDir(prefix);
    const s = createFileStateStore(dir);
    const record = {
      keyName: 'app',
      active: rotation(R1),
      last: null,
      lastRotatedAt: null,
      currentKeyId: null,
      providerState: {},
    };
    const file = path.join(dir, 'state', 'app.json');
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, JSON.stringify({ format: 'keyrotor-state/1', record }, null, 2) + '\n', { mode: 0o600 });
    expect(await s.read('app')).toEqual(record);
    return { s, file, raw: readFileSync(file, 'utf8') };
  }

  it('journal: a torn last line is ignored (never acknowledged) and cut off by the next write; a damaged or newer last line is an error', async () => {
    const dir = tempDir('state-journal-damage');
    const s = createFileStateStore(dir);
    await s.saveActive('app', rotation(R1));
    await s.saveActive('app', rotation(R1, { updatedAt: '2026-11-01T00:00:07.000Z' }));
    const file = path.join(dir, 'state', 'app.journal');
    const raw = readFileSync(file, 'utf8');
    const [l1, l2] = raw.split('\n');
    // a crash in the middle of the second append: the first line is what was acknowledged
    writeFileSync(file, `${l1}\n${l2!.slice(0, 40)}`);
    expect((await s.read('app'))?.active?.updatedAt).toBe(rotation(R1).updatedAt);
    await s.saveActive('app', rotation(R2));
    expect(
      readFileSync(file, 'utf8')
        .split('\n')
        .map((l) => (l ? JSON.parse(l).record.active.rotationId : l)),
    ).toEqual([R1, R2, '']);
    // a complete last line that is not JSON: damage, never a reset
    writeFileSync(file, `${l1}\n{"format":"keyrotor-journal/1",garbage\n`);
    const e = await err(s.read('app'));
    expect(e.code).toBe('STATE_UNREADABLE');
    expect(e.message).toContain(path.join('state', 'app.journal'));
    expect((await err(s.saveActive('app', rotation(R2)))).code).toBe('STATE_UNREADABLE');
    writeFileSync(file, raw.replaceAll('keyrotor-journal/1', 'keyrotor-journal/2'));
    expect((await err(s.read('app'))).code).toBe('STATE_VERSION');
    // the journal wins over a `<key>.json` beside it (a fold interrupted before it removed the journal)
    writeFileSync(file, raw);
    writeFileSync(path.join(dir, 'state', 'app.json'), JSON.stringify({ format: 'keyrotor-state/1', record: {} }));
    expect((await s.read('app'))?.active?.updatedAt).toBe('2026-11-01T00:00:07.000Z');
  });

  it('torn / garbage JSON -> STATE_UNREADABLE', async () => {
    const { s, file, raw } = await seeded('state-torn');
    for (const bad of [raw.slice(0, raw.length / 2), '', '\u0000garbage', '[]', 'null']) {
      writeFileSync(file, bad);
      const e = await err(s.read('app'));
      expect(e.code).toBe('STATE_UNREADABLE');
      expect(e.message).toContain(path.join('state', 'app.json'));
      expect(e.message).not.toContain('\n');
    }
    writeFileSync(file, raw.slice(0, 100));
    expect((await err(s.saveActive('app', rotation(R2)))).code).toBe('STATE_UNREADABLE');
    expect(readFileSync(file, 'utf8')).toBe(raw.slice(0, 100)); // untouched
  });

  it('a record failing validation names the file and the rotation in progress', async () => {
    const { s, file, raw } = await seeded('state-invalid');
    const doc = JSON.parse(raw);
    delete doc.record.active.snapshot;
    doc.record.active.machineVersion = 'three';
    writeFileSync(file, JSON.stringify(doc));
    const e = await err(s.read('app'));
    expect(e.code).toBe('STATE_UNREADABLE');
    expect(e.message).toContain(path.join('state', 'app.json'));
    expect(e.message).toContain(R1);
    expect(e.message).toMatch(/record\.active\./);
    expect(e.hint).toContain(R1);

    const doc2 = JSON.parse(raw);
    doc2.record.last = { outcome: 'exploded' };
    writeFileSync(file, JSON.stringify(doc2));
    expect((await err(s.read('app'))).message).toContain('record.last');

    const doc3 = JSON.parse(raw);
    doc3.record.keyName = 'web';
    writeFileSync(file, JSON.stringify(doc3));
    expect((await err(s.read('app'))).message).toContain('"web"');
  });

  it('an unknown format -> STATE_UNREADABLE; a newer one -> STATE_VERSION', async () => {
    const { s, file, raw } = await seeded('state-format');
    writeFileSync(file, raw.replace('keyrotor-state/1', 'something-else/1'));
    let e = await err(s.read('app'));
    expect(e.code).toBe('STATE_UNREADABLE');
    expect(e.message).toContain('unknown format');
    expect(e.message).toContain(R1);

    writeFileSync(file, raw.replace('keyrotor-state/1', 'keyrotor-state/2'));
    e = await err(s.read('app'));
    expect(e.code).toBe('STATE_VERSION');
    expect(e.message).toContain('written by a newer keyrotor');
    expect(e.message).toContain(path.join('state', 'app.json'));
    expect(e.hint).toContain('upgrade');
    expect((await err(s.finish('app', result('rotated'), 'key_2'))).code).toBe('STATE_VERSION');
    expect(readFileSync(file, 'utf8')).toContain('keyrotor-state/2');
  });

  it('keys() ignores temp files and other files', async () => {
    const { s, file, raw } = await seeded('state-keys');
    writeFileSync(path.join(path.dirname(file), '.app.json.123.abc.tmp'), raw.slice(0, 10));
    writeFileSync(path.join(path.dirname(file), 'notes.txt'), 'x');
    expect(await s.keys()).toEqual(['app']);
    expect((await s.read('app'))?.active?.rotationId).toBe(R1);
  });
});

describe('file state store: lease', () => {
  it('is exclusive across two store instances; same owner re-acquires; release frees it', async () => {
    const dir = tempDir('lease-exclusive');
    const clock = manualClock();
    const a = createFileStateStore(dir, { clock });
    const b = createFileStateStore(dir, { clock });
    const la = lease(await a.acquire('app', 'owner-a', 60_000));
    expect(la.owner).toBe('owner-a');
    expect(la.expiresAt).toBe(clock.now() + 60_000);
    const lockFile = path.join(dir, 'locks', 'app.lock');
    const content = JSON.parse(readFileSync(lockFile, 'utf8'));
    expect(content).toMatchObject({ owner: 'owner-a', pid: process.pid, host: expect.any(String) });
    expect(Date.parse(content.expiresAt)).toBe(la.expiresAt);
    expect(Date.parse(content.acquiredAt)).toBe(clock.now());
    expect(statSync(lockFile).mode & 0o777).toBe(0o600);

    expect(holder(await b.acquire('app', 'owner-b', 60_000))).toEqual({ owner: 'owner-a', expiresAt: la.expiresAt });
    expect(isLease(await b.acquire('other', 'owner-b', 60_000))).toBe(true); // per key

    clock.advance(10_000);
    const again = lease(await b.acquire('app', 'owner-a', 60_000)); // same owner, any instance
    expect(again.expiresAt).toBe(clock.now() + 60_000);
    await la.renew();
    expect(la.expiresAt).toBe(clock.now() + 60_000);

    await la.release();
    expect(existsSync(lockFile)).toBe(false);
    await la.release(); // twice is fine
    const lb = lease(await b.acquire('app', 'owner-b', 60_000));
    await again.release(); // not ours any more: no-op
    expect(holder(await a.acquire('app', 'owner-a', 60_000)).owner).toBe('owner-b');
    await lb.release();
  });

  it('an expired lease is taken over; the old holder can neither renew nor release the new lock', async () => {
    const dir = tempDir('lease-expiry');
    const clock = manualClock();
    const a = createFileStateStore(dir, { clock });
    const b = createFileStateStore(dir, { clock });
    const la = lease(await a.acquire('app', 'owner-a', 10_000));
    clock.advance(9_000);
    expect(holder(await b.acquire('app', 'owner-b', 10_000)).owner).toBe('owner-a');
    clock.advance(1_000); // exactly at expiry: expired
    const lb = lease(await b.acquire('app', 'owner-b', 10_000));
    expect(lb.expiresAt).toBe(clock.now() + 10_000);

    const e = await err(la.renew());
    expect(e.code).toBe('LOCKED');
    expect(e.message).toContain('owner-b');
    await la.release();
    const lockFile = path.join(dir, 'locks', 'app.lock');
    expect(JSON.parse(readFileSync(lockFile, 'utf8')).owner).toBe('owner-b');
    expect(holder(await a.acquire('app', 'owner-c', 10_000)).owner).toBe('owner-b');

    clock.advance(5_000);
    await lb.renew();
    expect(lb.expiresAt).toBe(clock.now() + 10_000);
    clock.advance(8_000); // would have expired without the renew
    expect(holder(await a.acquire('app', 'owner-c', 10_000)).owner).toBe('owner-b');
    await lb.release();
    expect(existsSync(lockFile)).toBe(false);
  });

  it('the fencing counter: one line appended per grant, a torn append ignored, a long file folded; tokens only grow', async () => {
    const dir = tempDir('lease-fence');
    const fence = path.join(dir, 'fences', 'app.json');
    const s = createFileStateStore(dir);
    const tokens: number[] = [];
    const grant = async (owner: string) => {
      const l = lease(await s.acquire('app', owner, 60_000));
      tokens.push(l.token);
      await l.release();
      return l;
    };
    await grant('owner-1');
    await grant('owner-2');
    expect(readFileSync(fence, 'utf8')).toBe(
      '{"token":1,"owner":"owner-1"}\n\n{"token":2,"owner":"owner-2"}\n', // each append on a line of its own
    );
    // a grant that died in the middle of its append (never acknowledged): the torn line is not read
    writeFileSync(fence, readFileSync(fence, 'utf8') + '\n{"token":3,"own');
    const third = await grant('owner-3');
    expect(third.token).toBe(3);
    // a fenced write goes through under the current token, and is refused under an older one
    const fourth = lease(await s.acquire('app', 'owner-4', 60_000));
    expect(fourth.token).toBe(4);
    await s.saveActive('app', rotation(R1), fourth);
    expect((await err(s.saveActive('app', rotation(R2), third))).code).toBe('LEASE_LOST');
    await fourth.release();
    expect(tokens).toEqual([1, 2, 3]);
    // past FENCE_COMPACT_BYTES (4 KiB) the file is replaced by its last line; the count goes on
    for (let i = 5; i <= 120; i++) await grant(`owner-${i}`);
    expect(tokens.at(-1)).toBe(120);
    expect(statSync(fence).size).toBeLessThan(4096 + 100);
    const last = readFileSync(fence, 'utf8').trim().split('\n').at(-1)!;
    expect(JSON.parse(last)).toEqual({ token: 120, owner: 'owner-120' });
    expect(lease(await createFileStateStore(dir).acquire('app', 'owner-new', 60_000)).token).toBe(121);
  });

  it('the owner of an expired but untaken lease can renew it or re-acquire it', async () => {
    const dir = tempDir('lease-own-expired');
    const clock = manualClock();
    const s = createFileStateStore(dir, { clock });
    const l = lease(await s.acquire('app', 'owner-a', 1_000));
    clock.advance(5_000);
    await l.renew();
    expect(l.expiresAt).toBe(clock.now() + 1_000);
    clock.advance(5_000);
    const l2 = lease(await s.acquire('app', 'owner-a', 1_000));
    expect(l2.expiresAt).toBe(clock.now() + 1_000);
    await l2.release();
  });

  it('a corrupt lock file is held by "unknown" until its mtime + ttl has passed', async () => {
    const dir = tempDir('lease-corrupt');
    mkdirSync(path.join(dir, 'locks'), { recursive: true });
    const lockFile = path.join(dir, 'locks', 'app.lock');
    writeFileSync(lockFile, '{"owner": "half-writ');
    const mtime = statSync(lockFile).mtimeMs;
    const clock = manualClock(mtime + 1_000);
    const s = createFileStateStore(dir, { clock });
    expect(holder(await s.acquire('app', 'owner-a', 30_000))).toEqual({ owner: 'unknown', expiresAt: mtime + 30_000 });
    writeFileSync(lockFile, ''); // a writer that died between create and write
    const m2 = statSync(lockFile).mtimeMs;
    clock.set(m2 + 29_000);
    expect(holder(await s.acquire('app', 'owner-a', 30_000)).owner).toBe('unknown');
    clock.set(m2 + 30_001);
    const l = lease(await s.acquire('app', 'owner-a', 30_000));
    expect(JSON.parse(readFileSync(lockFile, 'utf8')).owner).toBe('owner-a');
    await l.release();
  });

  it('concurrent acquires in one process: exactly one lease', async () => {
    const dir = tempDir('lease-inproc');
    const stores = [createFileStateStore(dir), createFileStateStore(dir)];
    const got = await Promise.all(
      Array.from({ length: 10 }, (_, i) => stores[i % 2]!.acquire('app', `owner-${i}`, 60_000)),
    );
    expect(got.filter(isLease)).toHaveLength(1);
  });

  it('concurrent acquires from two child processes: exactly one wins each key (fresh and stale locks)', async () => {
    const dir = tempDir('lease-procs');
    const script = fileURLToPath(new URL('./fixtures/lease-race.ts', import.meta.url));
    const fresh = Array.from({ length: 15 }, (_, i) => `fresh${i}`);
    const stale = Array.from({ length: 15 }, (_, i) => `stale${i}`);
    const garbled = Array.from({ length: 10 }, (_, i) => `garbled${i}`);
    const locks = path.join(dir, 'locks');
    mkdirSync(locks, { recursive: true, mode: 0o700 });
    const old = new Date(Date.now() - 3_600_000);
    for (const k of stale) {
      writeFileSync(
        path.join(locks, `${k}.lock`),
        JSON.stringify({
          owner: 'ghost',
          pid: 1,
          host: 'gone',
          acquiredAt: old.toISOString(),
          expiresAt: new Date(old.getTime() + 1_000).toISOString(),
        }),
        { mode: 0o600 },
      );
    }
    for (const k of garbled) {
      writeFileSync(path.join(locks, `${k}.lock`), '{"own', { mode: 0o600 });
      utimesSync(path.join(locks, `${k}.lock`), old, old);
    }
    const keys = [...fresh, ...stale, ...garbled];
    const startAt = Date.now() + 2_000;
    const child = (owner: string) =>
      run(
        process.execPath,
        ['--disable-warning=ExperimentalWarning', script, dir, owner, String(startAt), keys.join(','), '60000', '2'],
        {
          timeout: 20_000,
        },
      );
    const outs = await Promise.all([child('proc-a'), child('proc-b')]);
    outs.forEach((o, i) => capture(`lease-race-${i}.txt`, o.stdout + o.stderr));
    const [a, b] = outs.map(
      (o) => JSON.parse(o.stdout) as { owner: string; won: string[]; held: Record<string, string> },
    );
    for (const k of keys) {
      const winners = [a!, b!].filter((x) => x.won.includes(k));
      expect(winners, `key ${k}`).toHaveLength(1);
      const loser = winners[0] === a ? b! : a!;
      // the loser saw the winner's lock, complete: a lock appears with its content in one step
      expect(loser.held[k], `key ${k}`).toBe(winners[0]!.owner);
      expect(JSON.parse(readFileSync(path.join(locks, `${k}.lock`), 'utf8')).owner).toBe(winners[0]!.owner);
    }
    // nothing left behind besides the locks themselves
    expect(readdirSync(locks).filter((n) => !n.endsWith('.lock'))).toEqual([]);
  });
});

describe('file state store: a lease whose holder on this host is gone', () => {
  const locksOf = (dir: string) => path.join(dir, 'locks');
  /** a lock as a holder with this identity would have written it, unexpired for an hour */
  function plantLock(dir: string, key: string, who: Partial<HolderIdentity>) {
    mkdirSync(locksOf(dir), { recursive: true, mode: 0o700 });
    const now = Date.now();
    writeFileSync(
      path.join(locksOf(dir), `${key}.lock`),
      JSON.stringify({
        owner: 'planted',
        ...who,
        acquiredAt: new Date(now).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
      { mode: 0o600 },
    );
  }
  const me = selfIdentity();
  const linux = me.bootId !== undefined && me.pidStart !== undefined;

  it('records host, boot id, pid and its start time in the lock', async () => {
    const dir = tempDir('lease-identity');
    const l = lease(await createFileStateStore(dir).acquire('app', 'owner-a', 60_000));
    const content = JSON.parse(readFileSync(path.join(locksOf(dir), 'app.lock'), 'utf8'));
    expect(content).toMatchObject({ host: me.host, pid: process.pid });
    if (linux) {
      expect(content.bootId).toBe(me.bootId);
      expect(content.pidStart).toMatch(/^\d+$/);
    }
    await l.release();
  });

  it.runIf(linux)('a holder process that exited is taken over at once, long before its ttl', async () => {
    const dir = tempDir('lease-dead-holder');
    const script = fileURLToPath(new URL('./fixtures/lease-race.ts', import.meta.url));
    const out = await run(process.execPath, [
      '--disable-warning=ExperimentalWarning',
      script,
      dir,
      'proc-gone',
      String(Date.now()),
      'app',
      '3600000',
    ]);
    expect(JSON.parse(out.stdout)).toMatchObject({ won: ['app'] });
    // the child has exited; its lock (1 h ttl) is still there
    const left = JSON.parse(readFileSync(path.join(locksOf(dir), 'app.lock'), 'utf8'));
    expect(left.owner).toBe('proc-gone');
    expect(Date.parse(left.expiresAt)).toBeGreaterThan(Date.now() + 3_000_000);
    expect(holderLiveness(left)).toBe('dead');
    const l = lease(await createFileStateStore(dir).acquire('app', 'owner-next', 60_000));
    expect(l.owner).toBe('owner-next');
    await l.release();
  });

  it.runIf(linux)('a live pid with another start time (pid reused) is taken over', async () => {
    const dir = tempDir('lease-pid-reused');
    plantLock(dir, 'app', { ...me, pidStart: String(Number(me.pidStart) + 1) });
    const l = lease(await createFileStateStore(dir).acquire('app', 'owner-next', 60_000));
    await l.release();
  });

  it('a live holder, a holder of another boot or host, or one without identity still holds the lease', async () => {
    const dir = tempDir('lease-live-holder');
    const store = createFileStateStore(dir);
    plantLock(dir, 'live', { ...me }); // this very process, same start time: alive
    plantLock(dir, 'reboot', { ...me, pid: 2 ** 22 + 7, bootId: 'another-boot' });
    plantLock(dir, 'elsewhere', { ...me, pid: 2 ** 22 + 7, host: `${me.host}-other` });
    plantLock(dir, 'otherns', { ...me, pid: 2 ** 22 + 7, pidNs: 'pid:[1]' });
    plantLock(dir, 'legacy', { pid: 2 ** 22 + 7, host: me.host }); // written before identities
    for (const k of ['live', 'reboot', 'elsewhere', 'otherns', 'legacy'])
      expect(holder(await store.acquire(k, 'owner-next', 60_000)).owner, k).toBe('planted');
  });
});
