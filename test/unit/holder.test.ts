/**
 * The lease holder as the database backends store it (src/app/state/holder.ts): written as JSON with
 * each grant, read back as input (malformed or missing fields never count as "dead"), and judged dead
 * only for a process of this host and boot that is gone.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { heldByDeadLocalProcess, holderJson, parseHolder, selfIdentity } from '../../src/app/state/holder.ts';

const linux = process.platform === 'linux';

describe('lease holder records', () => {
  it('round-trips this process and reads stored rows defensively', () => {
    const me = selfIdentity();
    expect(parseHolder(holderJson())).toEqual(me);
    expect(parseHolder(JSON.parse(holderJson()))).toEqual(me); // a jsonb column arrives as an object
    for (const bad of [
      null,
      undefined,
      '',
      'not json',
      '[1]',
      42,
      {},
      { host: 'h' },
      { host: 'h', pid: -1 },
      { host: 3, pid: 5 },
    ])
      expect(parseHolder(bad), JSON.stringify(bad)).toBeUndefined();
    expect(parseHolder({ host: 'h', pid: 5, bootId: 7, pidStart: '' })).toEqual({
      host: 'h',
      pid: 5,
      bootId: undefined,
      pidStart: undefined,
      pidNs: undefined,
    });
  });

  it.skipIf(!linux)('only a gone process of this host and boot counts as dead', () => {
    const me = selfIdentity();
    expect(heldByDeadLocalProcess(holderJson())).toBe(false); // this process is alive
    const child = spawnSync(process.execPath, ['-e', '0']);
    expect(child.status).toBe(0);
    // a reaped child: its pid is gone (its start time can only be guessed: any value proves it gone)
    const gone = { ...me, pid: child.pid, pidStart: '1' };
    expect(heldByDeadLocalProcess(JSON.stringify(gone))).toBe(true);
    // the same pid alive but recorded with another start time: the pid was reused, the holder is gone
    expect(heldByDeadLocalProcess(JSON.stringify({ ...me, pidStart: '1' }))).toBe(true);
    // not provably ours: another host, another boot, another pid namespace, fields missing
    expect(heldByDeadLocalProcess(JSON.stringify({ ...gone, host: 'elsewhere.example' }))).toBe(false);
    expect(heldByDeadLocalProcess(JSON.stringify({ ...gone, bootId: '00000000-0000-0000-0000-000000000000' }))).toBe(
      false,
    );
    expect(heldByDeadLocalProcess(JSON.stringify({ ...gone, pidNs: 'pid:[1]' }))).toBe(false);
    expect(heldByDeadLocalProcess(JSON.stringify({ host: me.host, pid: child.pid }))).toBe(false);
    expect(heldByDeadLocalProcess(null)).toBe(false);
  });
});
