/**
 * Who holds a lease, as plain data any state backend can store next to the lease (file, database
 * row, DynamoDB item), and whether that holder is provably gone.
 *
 * A lease normally ends when it expires (`defaults.lease.ttl`). When the holder was a process on
 * *this* machine that no longer exists (killed, crashed, a second Ctrl-C), waiting for the ttl only
 * delays the next run (after a leak: the leaked key stays live that long). So a holder that is
 * provably dead is taken over at once. "Provably" means all of:
 *   - the same host name and the same kernel boot (`/proc/sys/kernel/random/boot_id`): a different
 *     boot id may just be another machine with the same host name, so it proves nothing;
 *   - the same pid namespace (`/proc/self/ns/pid`), when both sides recorded it: pids of another
 *     container on the same kernel mean nothing here;
 *   - the pid is absent, a zombie, or belongs to a *different* process: its start time
 *     (`/proc/<pid>/stat` field 22, clock ticks since boot) differs from the one recorded. A pid alone
 *     is never trusted: pids are reused.
 * Anywhere this cannot be decided (not Linux, a field missing, /proc unreadable) the answer is
 * 'unknown' and the lease runs to its expiry as before.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

export interface HolderIdentity {
  host: string;
  pid: number;
  /** Linux: the kernel's boot id (changes with every boot) */
  bootId?: string | undefined;
  /** Linux: start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22) */
  pidStart?: string | undefined;
  /** Linux: the pid namespace, e.g. `pid:[4026531836]` */
  pidNs?: string | undefined;
}

export type Liveness = 'alive' | 'dead' | 'unknown';

function readTrimmed(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** `/proc/<pid>/stat`: state (field 3) and start time (field 22); undefined when the pid is absent. */
export function procStat(pid: number): { state: string; start: string } | null | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? null : undefined;
  }
  // field 2 (comm) is in parentheses and may itself hold spaces or ')': split after the last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const start = rest[22 - 3];
  return state && start && /^\d+$/.test(start) ? { state, start } : undefined;
}

let self: HolderIdentity | undefined;

/** This process, as it is recorded in a lease it acquires. */
export function selfIdentity(): HolderIdentity {
  if (self) return self;
  let pidNs: string | undefined;
  try {
    pidNs = readlinkSync('/proc/self/ns/pid');
  } catch {
    pidNs = undefined;
  }
  self = {
    host: hostname(),
    pid: process.pid,
    bootId: readTrimmed('/proc/sys/kernel/random/boot_id'),
    pidStart: procStat(process.pid)?.start,
    pidNs,
  };
  return self;
}

/** Is the process that recorded `h` still running? Only 'dead' lets a lease be taken over early. */
export function holderLiveness(h: Partial<HolderIdentity>, me: HolderIdentity = selfIdentity()): Liveness {
  if (!h.host || h.host !== me.host) return 'unknown';
  if (!h.bootId || !me.bootId || h.bootId !== me.bootId) return 'unknown';
  if (h.pidNs && me.pidNs && h.pidNs !== me.pidNs) return 'unknown';
  if ((h.pidNs === undefined) !== (me.pidNs === undefined)) return 'unknown';
  if (typeof h.pid !== 'number' || !h.pidStart) return 'unknown';
  const st = procStat(h.pid);
  if (st === undefined) return 'unknown'; // unreadable: cannot tell
  if (st === null) return 'dead'; // no such process
  if (st.start !== h.pidStart) return 'dead'; // the pid was reused by another process
  if (st.state === 'Z' || st.state === 'X') return 'dead'; // exited, not yet reaped
  return 'alive';
}

/**
 * The holder as the database backends store it next to a lease (PostgreSQL `leases.holder` jsonb,
 * DynamoDB attribute `holder`, JSON text): this process's identity, without absent fields.
 */
export function holderJson(me: HolderIdentity = selfIdentity()): string {
  return JSON.stringify({
    host: me.host,
    pid: me.pid,
    ...(me.bootId ? { bootId: me.bootId } : {}),
    ...(me.pidStart ? { pidStart: me.pidStart } : {}),
    ...(me.pidNs ? { pidNs: me.pidNs } : {}),
  });
}

/**
 * A stored holder (JSON text or an object, as read from a row or an item) back as a holder identity;
 * undefined when absent or malformed (stored data is input: a field of the wrong type is left out,
 * and `holderLiveness` then says 'unknown').
 */
export function parseHolder(stored: unknown): Partial<HolderIdentity> | undefined {
  let v = stored;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return undefined;
    }
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const s = (k: string) => (typeof o[k] === 'string' && o[k] ? o[k] : undefined);
  const host = s('host');
  const pid = typeof o.pid === 'number' && Number.isInteger(o.pid) && o.pid > 0 ? o.pid : undefined;
  if (host === undefined || pid === undefined) return undefined;
  return { host, pid, bootId: s('bootId'), pidStart: s('pidStart'), pidNs: s('pidNs') };
}

/**
 * May a lease whose grant recorded `stored` (see holderJson) be taken over before it expires? Only
 * when its holder is provably dead (see holderLiveness): a process of this host and boot that no
 * longer exists. Anything else (another host, no holder recorded by an older keyrotor, unreadable)
 * waits for the lease's expiry. The takeover itself must still be a conditional write on the grant
 * that was judged (its token), and bump the token, so a holder judged wrongly is fenced out.
 */
export function heldByDeadLocalProcess(stored: unknown, me: HolderIdentity = selfIdentity()): boolean {
  const h = parseHolder(stored);
  return h !== undefined && holderLiveness(h, me) === 'dead';
}
