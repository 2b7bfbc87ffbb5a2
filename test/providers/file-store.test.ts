import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyrotorError } from '../../src/core/errors.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { Logger, ProviderContext, SecretStore } from '../../src/core/ports.ts';
import { fileStoreSchema, type FileStoreConfig } from '../../providers/stores/file/file.schema.ts';
import { createFileStore } from '../../providers/stores/file/index.ts';
import { createConsumer } from '../../src/entrypoints/consumer.ts';
import { parseMasterKey, seal, unseal, versionAad } from '../../providers/stores/file/file.crypto.ts';
import { EXTRA_VERSIONS_KEPT } from '../../providers/stores/file/file.store.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import { describeStoreContract, meta, value } from './store-contract.ts';
import { linesLogger } from '../helpers/logger.ts';

const R = (n: number) => `rot-202611${String(n).padStart(2, '0')}t000000z-${n.toString(16).padStart(8, '0')}`;

const logLines: string[] = [];
const testLogger = (bindings: object = {}): Logger => linesLogger(logLines, bindings);
afterAll(() => capture('file-store-test.log', logLines.join('\n')));

function ctxFor(
  stateDir: string,
  opts: { keyName?: string; env?: NodeJS.ProcessEnv; configDir?: string } = {},
): ProviderContext {
  const remembered = new Map<string, string>();
  return {
    keyName: opts.keyName ?? 'app',
    stateDir,
    configDir: opts.configDir ?? stateDir,
    logger: testLogger(),
    clock: systemClock,
    env: opts.env ?? {},
    providerState: { get: (k) => remembered.get(k), set: async (k, v) => void remembered.set(k, v) },
  };
}
const cfg = (over: Partial<FileStoreConfig> = {}): FileStoreConfig => fileStoreSchema.parse({ type: 'file', ...over });
const hexKey = () => randomBytes(32).toString('hex');

/** how applications read the file store: the `keyrotor/consumer` helper, a fresh one per read */
async function consumerRead(stateDir: string, env: NodeJS.ProcessEnv): Promise<string> {
  const c = await createConsumer({
    key: 'app',
    store: { type: 'file' },
    stateDir,
    configDir: stateDir,
    env,
    refreshInterval: false,
    sighup: false,
  });
  try {
    return (await c.current()).reveal();
  } finally {
    await c.close();
  }
}

async function err(p: Promise<unknown>): Promise<KeyrotorError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(KeyrotorError);
  return e as KeyrotorError;
}

async function bootstrap(s: SecretStore, n = 1) {
  await s.stage({ rotationId: R(n), secret: value(n), meta: meta(R(n), n) });
  await s.promote(R(n));
}

describeStoreContract(
  'file (generated key file)',
  async () => {
    const dir = tempDir('file-contract-keyfile');
    return {
      store: await createFileStore(cfg(), ctxFor(dir)),
      defaultRead: () => consumerRead(dir, {}),
      reopen: () => createFileStore(cfg(), ctxFor(dir)),
    };
  },
  { lock: 'lease' },
); // the file lives in the state dir, guarded by the per-key lease

describeStoreContract(
  'file (master key from env)',
  async () => {
    const dir = tempDir('file-contract-env');
    const env = { KEYROTOR_MASTER_KEY: hexKey() };
    return {
      store: await createFileStore(cfg(), ctxFor(dir, { env })),
      defaultRead: () => consumerRead(dir, env),
      reopen: () => createFileStore(cfg(), ctxFor(dir, { env })),
    };
  },
  { lock: 'lease' },
);

describe('file store: layout and encryption', () => {
  it('writes <stateDir>/secrets/<key>.json with mode 0600 in a 0700 folder, and a 0600 master.key', async () => {
    const dir = tempDir('file-layout');
    const s = await createFileStore(cfg(), ctxFor(dir));
    await s.check();
    expect(existsSync(path.join(dir, 'master.key'))).toBe(false); // check() writes nothing
    await bootstrap(s);
    const file = path.join(dir, 'secrets', 'app.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(dir, 'master.key')).mode & 0o777).toBe(0o600);
    expect(s.label).toBe(`file:${file}`); // outside the cwd: absolute
    expect(s.label).not.toContain(CANARY);
    const cwd = process.cwd();
    try {
      process.chdir(dir);
      expect((await createFileStore(cfg(), ctxFor(dir))).label).toBe(`file:${path.join('secrets', 'app.json')}`);
    } finally {
      process.chdir(cwd);
    }
  });

  it('ciphertext never contains the value; envelope has a format marker, slots and per-version IV/tag', async () => {
    const dir = tempDir('file-cipher');
    const s = await createFileStore(cfg(), ctxFor(dir));
    await bootstrap(s, 1);
    await s.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) });
    const raw = readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8');
    for (const n of [1, 2]) {
      const v = value(n).reveal();
      expect(raw).not.toContain(v);
      expect(raw).not.toContain(Buffer.from(v).toString('base64'));
      expect(raw).not.toContain(Buffer.from(v).toString('hex'));
    }
    expect(raw).not.toContain(CANARY);
    const doc = JSON.parse(raw);
    expect(doc.format).toBe('keyrotor-file-store/1');
    expect(doc.slots.pending.rotationId).toBe(R(2));
    expect(doc.versions).toHaveLength(2);
    expect(doc.versions[0].meta.issuerKeyId).toBe('key_1'); // references are plaintext
    const ivs = doc.versions.map((v: { iv: string }) => v.iv);
    expect(new Set(ivs).size).toBe(2);
    for (const v of doc.versions) {
      expect(Buffer.from(v.iv, 'base64')).toHaveLength(12);
      expect(Buffer.from(v.tag, 'base64')).toHaveLength(16);
    }
  });

  it('AAD binds key name and version id: a ciphertext moved to another version or key does not decrypt', () => {
    const k = randomBytes(32);
    const sealed = seal(k, 'some-value', versionAad('app', 'v1-00000000'));
    expect(unseal(k, sealed, versionAad('app', 'v1-00000000'))).toBe('some-value');
    expect(unseal(k, sealed, versionAad('app', 'v2-00000000'))).toBeUndefined();
    expect(unseal(k, sealed, versionAad('other', 'v1-00000000'))).toBeUndefined();
    expect(unseal(randomBytes(32), sealed, versionAad('app', 'v1-00000000'))).toBeUndefined();
  });

  it('honours cfg.path and cfg.keyFile relative to the config folder', async () => {
    const dir = tempDir('file-paths');
    const configDir = path.join(dir, 'conf');
    mkdirSync(configDir);
    const s = await createFileStore(
      cfg({ path: 'vault/app.secret.json', keyFile: 'keys/mk' }),
      ctxFor(path.join(dir, 'state'), { configDir }),
    );
    await bootstrap(s);
    expect(existsSync(path.join(configDir, 'vault', 'app.secret.json'))).toBe(true);
    expect(statSync(path.join(configDir, 'keys', 'mk')).mode & 0o777).toBe(0o600);
    expect(existsSync(path.join(dir, 'state', 'master.key'))).toBe(false);
  });

  it('keeps a bounded number of versions and drops older ciphertexts', async () => {
    const dir = tempDir('file-retention');
    const s = await createFileStore(cfg(), ctxFor(dir));
    for (let n = 1; n <= 10; n++) await bootstrap(s, n);
    // an abandoned stage and a second one replacing it
    await s.stage({ rotationId: R(11), secret: value(11), meta: meta(R(11), 11) });
    await s.stage({ rotationId: R(12), secret: value(12), meta: meta(R(12), 12) });
    const doc = JSON.parse(readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8'));
    expect(doc.versions.length).toBeLessThanOrEqual(3 + 1 + EXTRA_VERSIONS_KEPT);
    expect(doc.versions.some((v: { rotationId: string }) => v.rotationId === R(1))).toBe(false);
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(10).reveal());
    expect((await s.readPrevious())?.secret.reveal()).toBe(value(9).reveal());
    expect((await s.readPending(R(12)))?.secret.reveal()).toBe(value(12).reveal());
    expect(await s.readPending(R(11))).toBeNull();
    // demote after many rotations still restores current and previous
    await s.demote(R(10));
    expect((await s.readCurrent())?.meta.issuerKeyId).toBe('key_9');
    expect((await s.readPrevious())?.meta.issuerKeyId).toBe('key_8');
  });

  it('a retried stage with a different value for the same rotation is a conflict, not an overwrite', async () => {
    const s = await createFileStore(cfg(), ctxFor(tempDir('file-conflict')));
    await s.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) });
    const e = await err(s.stage({ rotationId: R(2), secret: value(3), meta: meta(R(2), 3) }));
    expect(e.code).toBe('STORE_CONFLICT');
    expect(e.message).not.toContain(CANARY);
    expect((await s.readPending(R(2)))?.secret.reveal()).toBe(value(2).reveal());
  });
});

describe('file store: master key', () => {
  it('accepts a base64 master key from the env', async () => {
    const b64 = randomBytes(32).toString('base64');
    expect(parseMasterKey(b64)).toHaveLength(32);
    expect(parseMasterKey(randomBytes(32).toString('base64url'))).toHaveLength(32);
    const dir = tempDir('file-b64');
    const s = await createFileStore(cfg(), ctxFor(dir, { env: { KEYROTOR_MASTER_KEY: b64 } }));
    await bootstrap(s);
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
    expect(existsSync(path.join(dir, 'master.key'))).toBe(false);
  });

  it.each([
    ['short hex', 'abcdef0123456789abcdef0123456789'],
    ['65 hex chars', 'a'.repeat(65)],
    ['64 non-hex chars', 'zZ-not-a-key-'.repeat(5).slice(0, 64)],
    ['base64 of 16 bytes', randomBytes(16).toString('base64')],
    ['base64 of 48 bytes', randomBytes(48).toString('base64')],
    ['a passphrase', 'correct horse battery staple do-not-echo-me'],
  ])('rejects a malformed KEYROTOR_MASTER_KEY (%s) with a one-line error that does not echo it', async (_name, bad) => {
    const dir = tempDir('file-badenv');
    const s = await createFileStore(cfg(), ctxFor(dir, { env: { KEYROTOR_MASTER_KEY: bad } }));
    for (const op of [() => s.check(), () => s.stage({ rotationId: R(1), secret: value(1), meta: meta(R(1), 1) })]) {
      const e = await err(op());
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toContain('KEYROTOR_MASTER_KEY');
      expect(e.message).not.toContain(bad);
      expect(e.message).not.toContain(bad.slice(0, 12));
      expect(e.message).not.toContain('\n');
    }
    expect(existsSync(path.join(dir, 'secrets', 'app.json'))).toBe(false);
  });

  it('uses the env var named by masterKeyEnv', async () => {
    const dir = tempDir('file-envname');
    const s = await createFileStore(
      cfg({ masterKeyEnv: 'MY_KEY' }),
      ctxFor(dir, { env: { MY_KEY: hexKey(), KEYROTOR_MASTER_KEY: 'garbage' } }),
    );
    await bootstrap(s);
    expect(existsSync(path.join(dir, 'master.key'))).toBe(false);
  });

  it('refuses a key file readable by group/others, with the chmod fix', async () => {
    const dir = tempDir('file-keymode');
    const s = await createFileStore(cfg(), ctxFor(dir));
    await bootstrap(s);
    const kf = path.join(dir, 'master.key');
    chmodSync(kf, 0o644);
    const s2 = await createFileStore(cfg(), ctxFor(dir));
    const e = await err(s2.readCurrent());
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(kf);
    expect(e.message).toContain('0644');
    expect(e.hint).toBe(`chmod 600 ${kf}`);
    expect(e.message).not.toContain(readFileSync(kf, 'utf8').trim());
    chmodSync(kf, 0o600);
    expect((await s2.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
  });

  it('wrong master key -> STORE_CORRUPT naming the file (never a reset)', async () => {
    const dir = tempDir('file-wrongkey');
    const s = await createFileStore(cfg(), ctxFor(dir, { env: { KEYROTOR_MASTER_KEY: hexKey() } }));
    await bootstrap(s);
    const before = readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8');
    const other = await createFileStore(cfg(), ctxFor(dir, { env: { KEYROTOR_MASTER_KEY: hexKey() } }));
    for (const op of [
      () => other.readCurrent(),
      () => other.describe(),
      () => other.check(),
      () => other.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) }),
    ]) {
      const e = await err(op());
      expect(e.code).toBe('STORE_CORRUPT');
      expect(e.message).toContain(path.join('secrets', 'app.json'));
      expect(e.message).toContain('wrong master key');
    }
    expect(readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8')).toBe(before);
  });

  it('a lost key file is an error; it is never silently regenerated for an existing secrets file', async () => {
    const dir = tempDir('file-lostkey');
    const s = await createFileStore(cfg(), ctxFor(dir));
    await bootstrap(s);
    const kf = path.join(dir, 'master.key');
    rmSync(kf); // lost
    const s2 = await createFileStore(cfg(), ctxFor(dir));
    const e = await err(s2.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) }));
    expect(e.code).toBe('STORE_CORRUPT');
    expect(e.message).toContain('no master key');
    expect(existsSync(kf)).toBe(false);
  });

  it('two stores generating the master key at once end up with one key (O_EXCL)', async () => {
    const dir = tempDir('file-keyrace');
    const stores = await Promise.all(
      ['a', 'b', 'c', 'd'].map((k) => createFileStore(cfg(), ctxFor(dir, { keyName: k }))),
    );
    await Promise.all(
      stores.map((s, i) => s.stage({ rotationId: R(i + 1), secret: value(i + 1), meta: meta(R(i + 1), i + 1) })),
    );
    const again = await Promise.all(
      ['a', 'b', 'c', 'd'].map((k) => createFileStore(cfg(), ctxFor(dir, { keyName: k }))),
    );
    for (const [i, s] of again.entries())
      expect((await s.readPending(R(i + 1)))?.secret.reveal()).toBe(value(i + 1).reveal());
    expect(readdirSync(dir).filter((f) => f.startsWith('master.key'))).toEqual(['master.key']);
  });
});

describe('file store: damage is STORE_CORRUPT naming the file', () => {
  async function withFile(prefix: string) {
    const dir = tempDir(prefix);
    const s = await createFileStore(cfg(), ctxFor(dir));
    await bootstrap(s, 1);
    await s.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) });
    await s.promote(R(2));
    const file = path.join(dir, 'secrets', 'app.json');
    return { dir, s, file, raw: readFileSync(file, 'utf8'), fresh: () => createFileStore(cfg(), ctxFor(dir)) };
  }
  const expectCorrupt = async (p: Promise<unknown>, what: RegExp) => {
    const e = await err(p);
    expect(e.code).toBe('STORE_CORRUPT');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain(path.join('secrets', 'app.json'));
    expect(e.message).toMatch(what);
    expect(e.message).not.toContain(CANARY);
    return e;
  };

  it('one flipped byte in a ciphertext', async () => {
    const { s, file, raw } = await withFile('file-tamper-ct');
    const doc = JSON.parse(raw);
    const data = Buffer.from(doc.versions[1].data, 'base64');
    data[0] = data[0]! ^ 0x01;
    doc.versions[1].data = data.toString('base64');
    writeFileSync(file, JSON.stringify(doc, null, 2));
    await expectCorrupt(s.readCurrent(), /integrity|modified/);
    await expectCorrupt(s.describe(), /integrity|modified/);
  });

  it('any flipped byte of the file (sampled positions)', async () => {
    const { s, file, raw } = await withFile('file-tamper-any');
    const buf = Buffer.from(raw);
    const positions = new Set<number>();
    for (let i = 0; i < 25; i++) positions.add(Math.floor((i / 25) * buf.length));
    for (const pos of positions) {
      const b = Buffer.from(buf);
      const c = b[pos]!;
      if (c === 0x20 || c === 0x0a) continue; // JSON whitespace carries no data
      b[pos] = c === 0x30 ? 0x31 : c === 0x41 ? 0x42 : c ^ 0x01;
      writeFileSync(file, b);
      const e = await err(s.readCurrent());
      expect(e.code, `byte ${pos}`).toBe('STORE_CORRUPT');
      expect(e.message).toContain(path.join('secrets', 'app.json'));
    }
    writeFileSync(file, raw);
    expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
  });

  it('swapping slots or ciphertexts between versions', async () => {
    const { s, file, raw } = await withFile('file-tamper-swap');
    const doc = JSON.parse(raw);
    [doc.slots.current, doc.slots.previous] = [doc.slots.previous, doc.slots.current];
    writeFileSync(file, JSON.stringify(doc, null, 2));
    await expectCorrupt(s.readCurrent(), /integrity/);
    const doc2 = JSON.parse(raw);
    const [a, b] = doc2.versions;
    for (const k of ['iv', 'tag', 'data']) [a[k], b[k]] = [b[k], a[k]];
    writeFileSync(file, JSON.stringify(doc2, null, 2));
    await expectCorrupt(s.readPrevious(), /integrity/);
  });

  it('torn or garbage JSON', async () => {
    const { s, file, raw } = await withFile('file-torn');
    writeFileSync(file, raw.slice(0, Math.floor(raw.length / 2)));
    await expectCorrupt(s.readCurrent(), /not valid JSON/);
    await expectCorrupt(s.stage({ rotationId: R(3), secret: value(3), meta: meta(R(3), 3) }), /not valid JSON/);
    writeFileSync(file, '');
    await expectCorrupt(s.describe(), /not valid JSON/);
    writeFileSync(file, '\u0000\u0001garbage');
    await expectCorrupt(s.check(), /not valid JSON/);
    writeFileSync(file, '[1,2,3]');
    await expectCorrupt(s.readCurrent(), /not a keyrotor secrets file/);
    writeFileSync(file, JSON.stringify({ format: 'keyrotor-file-store/1', versions: 'x' }));
    await expectCorrupt(s.readCurrent(), /invalid structure/);
    // never reset: the damaged file is still there, byte for byte
    expect(readFileSync(file, 'utf8')).toContain('"versions":"x"');
  });

  it('a newer format says so', async () => {
    const { s, file, raw } = await withFile('file-newer');
    writeFileSync(file, raw.replace('keyrotor-file-store/1', 'keyrotor-file-store/2'));
    const e = await expectCorrupt(s.readCurrent(), /newer keyrotor/);
    expect(e.hint).toContain('upgrade');
  });

  it('a file copied from another key is refused', async () => {
    const { dir, file } = await withFile('file-otherkey');
    copyFileSync(file, path.join(dir, 'secrets', 'other.json'));
    const other = await createFileStore(cfg(), ctxFor(dir, { keyName: 'other' }));
    const e = await err(other.readCurrent());
    expect(e.code).toBe('STORE_CORRUPT');
    expect(e.message).toContain('other.json');
  });

  it('a crash between temp write and rename leaves the old file valid', async () => {
    const { dir, s, file, raw, fresh } = await withFile('file-crash');
    // what a writer killed before rename leaves behind: a partial temp file beside the real one
    const stray = path.join(dir, 'secrets', `.app.json.99999.${randomBytes(6).toString('hex')}.tmp`);
    writeFileSync(stray, raw.slice(0, raw.length - 40), { mode: 0o600 });
    writeFileSync(`${file}.tmp`, '{"torn', { mode: 0o600 });
    expect(readFileSync(file, 'utf8')).toBe(raw);
    const s2 = await fresh();
    await s2.check();
    expect((await s2.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
    expect((await s2.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
    await s.stage({ rotationId: R(3), secret: value(3), meta: meta(R(3), 3) });
    await s.promote(R(3));
    expect((await s2.readCurrent())?.secret.reveal()).toBe(value(3).reveal());
  });
});

describe('file store: concurrency in one process', () => {
  it('parallel writers through two store instances lose no update', async () => {
    const dir = tempDir('file-parallel');
    const a = await createFileStore(cfg(), ctxFor(dir));
    const b = await createFileStore(cfg(), ctxFor(dir));
    await bootstrap(a, 1);
    await Promise.all([
      a.stage({ rotationId: R(2), secret: value(2), meta: meta(R(2), 2) }),
      b.stage({ rotationId: R(3), secret: value(3), meta: meta(R(3), 3) }),
      a.stage({ rotationId: R(4), secret: value(4), meta: meta(R(4), 4) }),
    ]);
    const doc = JSON.parse(readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8'));
    const rots = doc.versions.map((v: { rotationId: string }) => v.rotationId).sort();
    expect(rots).toEqual([R(1), R(2), R(3), R(4)]);
    expect(doc.slots.current).toBe(doc.versions[0].id);
  });

  it('parallel stage retries of one rotation make one version', async () => {
    const dir = tempDir('file-parallel-same');
    const a = await createFileStore(cfg(), ctxFor(dir));
    const b = await createFileStore(cfg(), ctxFor(dir));
    const ids = await Promise.all(
      [a, b, a, b].map((s) => s.stage({ rotationId: R(5), secret: value(5), meta: meta(R(5), 5) })),
    );
    expect(new Set(ids.map((x) => x.versionId)).size).toBe(1);
    const doc = JSON.parse(readFileSync(path.join(dir, 'secrets', 'app.json'), 'utf8'));
    expect(doc.versions).toHaveLength(1);
  });
});
