/**
 * The `command` gate: real programs spawned without a shell; environment, exit codes, output,
 * run timeouts that kill the whole process group, cancellation, bad programs.
 */
import { describe, expect, it } from 'vitest';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createGate, healthConfigSchema } from '../../providers/index.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { HealthGate, Issuer } from '../../src/core/ports.ts';
import { silentLogger } from '../../src/app/log.ts';
import { CANARY } from '../canary.ts';
import { NEW_FP, NEW_VALUE, OLD_FP, OLD_VALUE, gateContext, pollGate } from '../fakes/consumer.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

function script(dir: string, name: string, body: string, mode = 0o755): string {
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, mode);
  return file;
}

async function gate(
  dir: string,
  cfg: Record<string, unknown>,
  env: NodeJS.ProcessEnv = { PATH: process.env.PATH },
): Promise<HealthGate> {
  return createGate(
    healthConfigSchema.parse({ type: 'command', interval: '50ms', timeout: '3s', runTimeout: '2s', ...cfg }),
    {
      keyName: 'app',
      stateDir: path.join(dir, '.keyrotor'),
      configDir: dir,
      logger: silentLogger(),
      clock: systemClock,
      env,
      providerState: { get: () => undefined, set: async () => {} },
    },
    { issuer: { type: 'none' } as unknown as Issuer, index: 0 },
  );
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('command gate', () => {
  it('exit 0 passes; the program gets fingerprints and ids in a minimal environment, never a key', async () => {
    const dir = tempDir('command-env');
    script(dir, 'check.sh', 'env > env.txt\necho "all consumers on $KEYROTOR_NEW_FINGERPRINT"');
    const g = await gate(
      dir,
      { command: ['./check.sh'], passEnv: ['REGION'] },
      { PATH: process.env.PATH, OPENAI_ADMIN_KEY: `${CANARY}-admin`, REGION: 'eu', SECRET_THING: 'x' },
    );
    expect(g).toMatchObject({ type: 'command', name: 'command', timeoutMs: 3000, intervalMs: 50 });
    const o = await g.check(gateContext({ promotedAt: '2026-11-23T15:15:00.000Z' }));
    expect(o).toEqual({ pass: true, observation: `./check.sh exited 0: all consumers on ${NEW_FP}` });
    const env = Object.fromEntries(
      readFileSync(path.join(dir, 'env.txt'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(env).toMatchObject({
      KEYROTOR_KEY: 'app',
      KEYROTOR_ROTATION_ID: 'rot-20261123t151500z-0a1b2c3d',
      KEYROTOR_GATE: 'command',
      KEYROTOR_ATTEMPT: '1',
      KEYROTOR_NEW_FINGERPRINT: NEW_FP,
      KEYROTOR_OLD_FINGERPRINT: OLD_FP,
      KEYROTOR_NEW_KEY_ID: 'key_new',
      KEYROTOR_OLD_KEY_ID: 'key_old',
      KEYROTOR_PROMOTED_AT: '2026-11-23T15:15:00.000Z',
      REGION: 'eu',
    });
    expect(env.OPENAI_ADMIN_KEY).toBeUndefined();
    expect(env.SECRET_THING).toBeUndefined();
    const text = readFileSync(path.join(dir, 'env.txt'), 'utf8');
    expect(text).not.toContain(NEW_VALUE);
    expect(text).not.toContain(OLD_VALUE);
    expect(text).not.toContain(CANARY);
  });

  it('a failing check is retried until it passes (a consumer that switches late)', async () => {
    const dir = tempDir('command-late');
    script(
      dir,
      'check.sh',
      'if [ -f switched ]; then exit 0; fi\necho "1 of 3 consumers still on $KEYROTOR_OLD_FINGERPRINT" >&2\nexit 3',
    );
    const g = await gate(dir, { command: ['./check.sh'] });
    setTimeout(() => writeFileSync(path.join(dir, 'switched'), ''), 300);
    const r = await pollGate(g, gateContext());
    capture('health-command-late.txt', r.observations.join('\n'));
    expect(r.outcome).toBe('pass');
    expect(r.observations[0]).toBe(`./check.sh exited 3: 1 of 3 consumers still on ${OLD_FP}`);
  });

  it('never passing: the wait times out with the last observation', async () => {
    const dir = tempDir('command-never');
    script(dir, 'check.sh', 'echo nope; exit 1');
    const g = await gate(dir, { command: ['./check.sh'], timeout: '300ms' });
    const r = await pollGate(g, gateContext());
    expect(r).toMatchObject({ outcome: 'timeout', last: './check.sh exited 1: nope' });
  });

  it('a run that hangs is killed with its whole process group at runTimeout', async () => {
    const dir = tempDir('command-hang');
    script(dir, 'check.sh', 'sleep 30 &\necho $! > child.pid\necho $$ > self.pid\necho working\nwait');
    const g = await gate(dir, { command: ['./check.sh'], runTimeout: '300ms' });
    const t0 = Date.now();
    const o = await g.check(gateContext());
    capture('health-command-hang-ms.txt', String(Date.now() - t0));
    expect(Date.now() - t0).toBeLessThan(10_000); // the script would run 30 s
    expect(o).toEqual({ pass: false, observation: './check.sh ran longer than 300ms and was killed: working' });
    const child = Number(readFileSync(path.join(dir, 'child.pid'), 'utf8'));
    const self = Number(readFileSync(path.join(dir, 'self.pid'), 'utf8'));
    for (let i = 0; i < 40 && (alive(child) || alive(self)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(alive(child)).toBe(false);
    expect(alive(self)).toBe(false);
  });

  it('cancelling the wait stops a running check', async () => {
    const dir = tempDir('command-abort');
    script(dir, 'check.sh', 'sleep 30');
    const g = await gate(dir, { command: ['./check.sh'], runTimeout: '20s' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    const o = await g.check(gateContext({ signal: ac.signal }));
    expect(Date.now() - t0).toBeLessThan(10_000); // the script would run 30 s
    expect(o.observation).toBe('./check.sh was stopped (the wait ended)');
  });

  it('arguments are passed as argv, never through a shell', async () => {
    const dir = tempDir('command-argv');
    script(dir, 'echo.sh', 'echo "arg: $1"; exit 1');
    const g = await gate(dir, { command: ['./echo.sh', '$(touch pwned); echo hi'] });
    const o = await g.check(gateContext());
    expect(o.observation).toBe('./echo.sh exited 1: arg: $(touch pwned); echo hi');
    expect(existsSync(path.join(dir, 'pwned'))).toBe(false);
  });

  it('key-shaped output is scrubbed from the observation', async () => {
    const dir = tempDir('command-scrub');
    script(dir, 'leaky.sh', 'echo "got $LEAKED from the app" >&2; exit 1');
    const g = await gate(
      dir,
      { command: ['./leaky.sh'], passEnv: ['LEAKED'] },
      { PATH: process.env.PATH, LEAKED: `${CANARY}-oops` },
    );
    const o = await g.check(gateContext());
    capture('health-command-scrub.txt', o.observation);
    expect(o.observation).not.toContain(CANARY);
    expect(o.observation).toContain('[REDACTED]');
  });

  it('a missing or non-executable program fails when the gate is built; one missing from PATH ends the wait', async () => {
    const dir = tempDir('command-bad');
    await expect(gate(dir, { command: ['./missing.sh'] })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining('does not exist'),
    });
    script(dir, 'noexec.sh', 'exit 0', 0o644);
    await expect(gate(dir, { command: ['./noexec.sh'] })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      hint: expect.stringContaining('chmod +x'),
    });
    const g = await gate(dir, { command: ['keyrotor-no-such-program-xyz'] });
    expect(await g.check(gateContext())).toEqual({
      pass: false,
      final: true,
      observation: 'cannot run keyrotor-no-such-program-xyz: not found',
    });
    expect(healthConfigSchema.safeParse({ type: 'command', command: [] }).success).toBe(false);
    expect(healthConfigSchema.safeParse({ type: 'command', command: 'check.sh' }).success).toBe(false);
  });
});
