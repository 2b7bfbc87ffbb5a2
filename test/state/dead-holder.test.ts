/**
 * A lease whose holder is a dead process of this host is taken over at once on the database state
 * backends too (src/app/state/holder.ts), as on the file backend: each grant records its holder (host,
 * kernel boot id, pid namespace, pid and the pid's start time) in the lease row / item, and a new
 * acquirer on the same host and boot that finds that process gone takes the lease over with a token
 * bump, instead of waiting for `lease.ttl`. Real processes, real servers (PostgreSQL from the system's
 * binaries, DynamoDB on moto): a child process acquires the lease and is SIGKILLed.
 *
 *   - a live holder keeps its lease; once it is SIGKILLed the next acquire gets it at once with the
 *     next token, and a write under the dead holder's token is refused (fencing still stops a zombie);
 *   - a dead holder that is not provably ours (another host name, or a grant without a holder, as an
 *     older keyrotor wrote it) is waited for: the lease stays held until its ttl;
 *   - end to end: `keyrotor rotate --now` SIGKILLed in the middle of a rotation (lease ttl 60 s), then
 *     `keyrotor resume` continues that very rotation at once and finishes it; the invariant holds and
 *     the audit chain verifies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { postgresSupportOrSkip } from '../fakes/postgres.ts';
import { usePostgresDatabase } from '../helpers/postgres-db.ts';
import { motoSupportOrSkip, startMoto, type Moto } from '../fakes/moto.ts';
import { CANARY } from '../canary.ts';
import { capture } from '../helpers/artifacts.ts';
import { CLI, cliInProcess } from '../entrypoints/cli-helpers.ts';
import {
  checkInvariant,
  closeBackends,
  configText,
  MASTER_KEY,
  prepareWorld,
  startBackends,
  World,
  writeWorkspace,
  type Backends,
} from '../chaos/world.ts';
import { rejection } from './backend-contract.ts';
import { isLease, type LeaseHolder, type StateStore } from '../../src/core/ports.ts';
import { createPostgresStateStore } from '../../src/app/state/postgres-state-store.ts';
import { createDynamoStateStore } from '../../src/app/state/dynamodb-state-store.ts';
import type { DynamoStateConfig, PostgresStateConfig } from '../../src/app/state/config.ts';
import type { KeyResult } from '../../src/app/run.ts';

const HOLDER = fileURLToPath(new URL('./fixtures/lease-holder.ts', import.meta.url));
const TTL_MS = 60_000;
/** "at once": far below the ttl (a loaded 2-core machine needs a few seconds for a CLI run) */
const AT_ONCE_MS = 20_000;

interface Backend {
  name: 'postgres' | 'dynamodb';
  cfg(): PostgresStateConfig | DynamoStateConfig;
  env(): NodeJS.ProcessEnv;
  /** the `state:` line of a config file */
  stateYaml(): string;
  /** overwrite the holder recorded with the key's lease (null: none, as an older keyrotor wrote it) */
  setHolder(key: string, holder: Record<string, unknown> | null): Promise<void>;
}

/** A child process that acquires the key's lease and holds it until killed. */
async function holdInChild(b: Backend, key: string, owner: string) {
  const child = spawn(process.execPath, [HOLDER, JSON.stringify(b.cfg()), key, owner, String(TTL_MS)], {
    env: { PATH: process.env.PATH, ...b.env() },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('close', (code) => reject(new Error(`lease holder exited (${code}): ${err.slice(-400)}`)));
  });
  const got = JSON.parse(line) as { pid?: number; token?: number; held?: string };
  if (got.token === undefined) throw new Error(`the child did not get the lease: ${line}`);
  return {
    pid: got.pid!,
    token: got.token,
    kill: async () => {
      child.kill('SIGKILL');
      await closed; // reaped: its pid is gone from /proc
    },
  };
}

function deadHolderCases(backend: () => Backend): void {
  let n = 0;
  const key = (p: string) => `${p}-${process.pid}-${++n}`;
  const open = (): StateStore & { close(): Promise<void> } => {
    const b = backend();
    const c = b.cfg();
    const s = c.type === 'postgres' ? createPostgresStateStore(c, b.env()) : createDynamoStateStore(c, b.env());
    return s as StateStore & { close(): Promise<void> };
  };

  it('a live holder keeps its lease; SIGKILLed, it is taken over at once with the next token, and its token is fenced out', async () => {
    const store = open();
    const k = key('dead');
    try {
      const child = await holdInChild(backend(), k, 'child-holder');
      const held = await store.acquire(k, 'successor', TTL_MS);
      expect(isLease(held), 'a live local holder is never taken over').toBe(false);
      expect((held as LeaseHolder).owner).toBe('child-holder');

      await child.kill();
      const t0 = Date.now();
      const got = await store.acquire(k, 'successor', TTL_MS);
      const took = Date.now() - t0;
      expect(isLease(got), 'the dead holder’s lease is taken over').toBe(true);
      if (!isLease(got)) return;
      expect(got.token).toBe(child.token + 1);
      expect(took).toBeLessThan(AT_ONCE_MS);
      // a zombie of the dead holder (had it been paused, not dead) could not write any more
      const refused = await rejection(store.setProviderState(k, 'zombie', 'x', { token: child.token }));
      expect(refused.code).toBe('LEASE_LOST');
      await store.setProviderState(k, 'successor', 'y', got);
      expect((await store.read(k))?.providerState).toEqual({ successor: 'y' });
      await got.release();
    } finally {
      await store.close();
    }
  });

  it('a dead holder not provably ours (another host, or no holder recorded) is waited for until its ttl', async () => {
    const store = open();
    try {
      for (const holder of [{ host: 'another-host.example', pid: 1 }, null]) {
        const k = key('elsewhere');
        const child = await holdInChild(backend(), k, 'child-holder');
        await child.kill();
        await backend().setHolder(k, holder);
        const got = await store.acquire(k, 'successor', TTL_MS);
        expect(isLease(got), `holder ${JSON.stringify(holder)}: waited for`).toBe(false);
        expect((got as LeaseHolder).owner).toBe('child-holder');
        expect((got as LeaseHolder).expiresAt).toBeGreaterThan(Date.now() + TTL_MS / 2);
      }
    } finally {
      await store.close();
    }
  });

  describe('end to end', () => {
    let b: Backends;
    const w = new World({ key: `dh-${process.pid}`, stores: ['file'], gate: true });
    let configFile = '';
    let stateDir = '';
    beforeAll(async () => {
      b = await startBackends(['file']);
      await prepareWorld(b, w);
      const ws = writeWorkspace(() => b, [w], `dead-holder-${backend().name}`);
      configFile = ws.configFile;
      stateDir = ws.stateDir;
      writeFileSync(
        configFile,
        configText(() => b, [w], { leaseTtl: `${TTL_MS / 1000}s` }).replace(
          /^version: 1\n/,
          `version: 1\n${backend().stateYaml()}\n`,
        ),
      );
    }, 60_000);
    afterAll(async () => {
      await closeBackends(b);
    });
    const env = (): NodeJS.ProcessEnv => ({
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      OPENAI_ADMIN_KEY: b.openai.adminKey,
      KEYROTOR_MASTER_KEY: MASTER_KEY,
      ...backend().env(),
    });
    const cli = (args: string[], name: string) =>
      cliInProcess(['-c', configFile, '--log-level', 'error', ...args], { env: env(), name });

    /** a `rotate --now` of the key, SIGKILLed as soon as it enters `verify` (the new key staged, the lease held) */
    async function killedInVerify(): Promise<void> {
      const child = spawn(process.execPath, [CLI, '-c', configFile, 'rotate', '--now', w.key, '--json'], {
        env: { ...env(), KEYROTOR_LOG_LEVEL: 'debug' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.split('\n').some((l) => /"stage":"verify"/.test(l) && /"msg":"verify"/.test(l)))
          child.kill('SIGKILL');
      });
      const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, s) => r(s)));
      capture(`dead-holder-${backend().name}-child.stderr`, stderr);
      expect(stderr).not.toContain(CANARY);
      expect(signal, stderr.slice(-500)).toBe('SIGKILL');
    }

    it.each([
      ['keyrotor resume <key>', ['resume', w.key, '--json']],
      ['a scheduled keyrotor rotate (claims, then the keys it could not claim one by one)', ['rotate', '--json']],
    ])(
      'keyrotor rotate SIGKILLed mid-rotation: %s continues that rotation at once, not after lease.ttl',
      async (what, args) => {
        if (!w.bootstrapped) {
          expect((await cli(['state', 'init'], `dh-${backend().name}-init`)).code).toBe(0);
          const boot = await cli(['rotate', '--now', w.key, '--json'], `dh-${backend().name}-boot`);
          expect(boot.code, boot.stderr).toBe(0);
          w.bootstrapped = true;
        }
        await killedInVerify();

        const store = open();
        try {
          const active = (await store.read(w.key))?.active;
          expect(active, 'the killed run left its rotation unfinished').toBeTruthy();
          const t0 = Date.now();
          const r = await cli(args, `dh-${backend().name}-${args[0]}`);
          const took = Date.now() - t0;
          expect(r.code, r.stderr).toBe(0);
          const res = (JSON.parse(r.stdout) as { results: KeyResult[] }).results[0]!;
          expect(res.outcome).toBe('rotated');
          expect(res.rotationId).toBe(active!.rotationId);
          expect(took, 'resumed at once, not after the 60 s lease ttl').toBeLessThan(AT_ONCE_MS);
          console.log(
            `dead holder (${backend().name}): ${what} took over and finished in ${took} ms (ttl ${TTL_MS} ms)`,
          );
          expect(await checkInvariant(b, w, stateDir, { phase: 'rest', active: null })).toEqual([]);
          const verified = await cli(['audit', 'verify', '--json'], `dh-${backend().name}-verify`);
          expect(verified.code, verified.stdout).toBe(0);
        } finally {
          await store.close();
        }
      },
      90_000,
    );
  });
}

const PG = postgresSupportOrSkip('state: dead local holder taken over at once (PostgreSQL)');
describe.skipIf(!PG)('PostgreSQL: a dead local holder is taken over at once', () => {
  const db = usePostgresDatabase('dead_holder');
  const cfg = (): PostgresStateConfig => ({ type: 'postgres', urlEnv: 'KEYROTOR_DATABASE_URL', schema: 'keyrotor' });
  const env = () => ({ KEYROTOR_DATABASE_URL: db.url() });
  beforeAll(async () => {
    await createPostgresStateStore(cfg(), env()).init!();
  });
  deadHolderCases(() => ({
    name: 'postgres',
    cfg,
    env,
    stateYaml: () => 'state: { type: postgres }',
    async setHolder(key, holder) {
      const c = new pg.Client({ connectionString: db.url() });
      await c.connect();
      try {
        await c.query('UPDATE keyrotor.leases SET holder = $2::jsonb WHERE key_name = $1', [
          key,
          holder === null ? null : JSON.stringify(holder),
        ]);
      } finally {
        await c.end();
      }
    },
  }));
});

const MOTO = motoSupportOrSkip('state: dead local holder taken over at once (DynamoDB on moto)');
describe.skipIf(!MOTO)('DynamoDB: a dead local holder is taken over at once', () => {
  let moto: Moto | undefined;
  const creds = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' };
  const saved = { ...process.env };
  const cfg = (): DynamoStateConfig => ({
    type: 'dynamodb',
    table: 'dead-holder',
    region: 'us-east-1',
    endpoint: moto!.endpoint,
  });
  beforeAll(async () => {
    Object.assign(process.env, creds);
    moto = await startMoto({ serial: true });
    await createDynamoStateStore(cfg(), creds).init!();
  }, 60_000);
  afterAll(async () => {
    await moto?.close();
    for (const k of Object.keys(creds)) if (saved[k] === undefined) delete process.env[k];
  });
  deadHolderCases(() => ({
    name: 'dynamodb',
    cfg,
    env: () => creds,
    stateYaml: () => `state: { type: dynamodb, table: dead-holder, region: us-east-1, endpoint: "${moto!.endpoint}" }`,
    async setHolder(key, holder) {
      const { DynamoDBClient, UpdateItemCommand } = await import('@aws-sdk/client-dynamodb');
      const c = new DynamoDBClient({ endpoint: moto!.endpoint, region: 'us-east-1' });
      try {
        await c.send(
          new UpdateItemCommand({
            TableName: 'dead-holder',
            Key: { pk: { S: `key#${key}` }, sk: { S: 'lease' } },
            ...(holder === null
              ? { UpdateExpression: 'REMOVE holder' }
              : {
                  UpdateExpression: 'SET holder = :h',
                  ExpressionAttributeValues: { ':h': { S: JSON.stringify(holder) } },
                }),
          }),
        );
      } finally {
        c.destroy();
      }
    },
  }));
});
