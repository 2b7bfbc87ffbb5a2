/**
 * Where the file store's master key comes from: the env var named by `masterKeyEnv` (64 hex chars or
 * base64 of 32 bytes), else a key file (default `<stateDir>/master.key`) that is generated on first
 * write with mode 0600 and O_EXCL, and refused when group/others can access it.
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { Logger } from '../../../src/core/ports.ts';
import { deriveKeys, generateMasterKeyText, parseMasterKey, type DerivedKeys } from './file.crypto.ts';
import { errnoOf, fsError } from './file.errors.ts';
import { FILE_MODE, ensureDir, fsyncDir } from '../../../src/core/fs.ts';

export interface MasterKey extends DerivedKeys {
  /** where it came from, for messages: `env KEYROTOR_MASTER_KEY` or `key file <path>` */
  source: string;
}

export interface MasterKeySource {
  envName: string;
  env: NodeJS.ProcessEnv;
  keyFile: string;
  logger: Logger;
}

const KEY_FORMAT = '64 hex characters or base64 of 32 bytes';

function fromEnv(src: MasterKeySource): MasterKey | undefined {
  const raw = src.env[src.envName];
  if (raw === undefined || raw.trim() === '') return undefined;
  const key = parseMasterKey(raw);
  if (!key) {
    // never echo the value, not even a part of it
    throw new KeyrotorError('CONFIG_INVALID', `${src.envName} is not a valid master key: it must hold ${KEY_FORMAT}`, {
      hint: `generate one with: openssl rand -hex 32`,
    });
  }
  return { ...deriveKeys(key), source: `env ${src.envName}` };
}

function refuseLoosePermissions(file: string, mode: number): void {
  if (process.platform === 'win32') return;
  if ((mode & 0o077) !== 0) {
    throw new KeyrotorError(
      'CONFIG_INVALID',
      `master key file ${file} is accessible by group/others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); refusing to use it`,
      { hint: `chmod 600 ${file}` },
    );
  }
}

/** Read an existing key file; undefined when it does not exist. */
async function readKeyFile(file: string): Promise<MasterKey | undefined> {
  // A process that just created the file with O_EXCL may not have written it yet: wait briefly.
  for (let attempt = 0; ; attempt++) {
    let fh;
    try {
      fh = await open(file, 'r');
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw fsError(e, 'cannot open master key file', file);
    }
    let text: string;
    try {
      const st = await fh.stat();
      refuseLoosePermissions(file, st.mode);
      text = await fh.readFile('utf8');
    } catch (e) {
      if (e instanceof KeyrotorError) throw e;
      throw fsError(e, 'cannot read master key file', file);
    } finally {
      await fh.close();
    }
    if (text.length === 0 && attempt < 40) {
      await new Promise((r) => setTimeout(r, 25));
      continue;
    }
    const key = parseMasterKey(text);
    if (!key) {
      throw new KeyrotorError(
        'CONFIG_INVALID',
        `master key file ${file} does not hold a valid master key (${KEY_FORMAT})`,
        {
          hint: 'restore the key file from a backup, or set the master key env var',
        },
      );
    }
    return { ...deriveKeys(key), source: `key file ${file}` };
  }
}

async function createKeyFile(src: MasterKeySource): Promise<MasterKey> {
  const file = src.keyFile;
  try {
    await ensureDir(path.dirname(file));
  } catch (e) {
    throw fsError(e, 'cannot create the folder of master key file', file);
  }
  let fh;
  try {
    fh = await open(file, 'wx', FILE_MODE); // O_CREAT|O_EXCL: two processes cannot both create a key
  } catch (e) {
    if (errnoOf(e) === 'EEXIST') {
      const other = await readKeyFile(file);
      if (other) return other;
    }
    throw fsError(e, 'cannot create master key file', file);
  }
  const text = generateMasterKeyText();
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } catch (e) {
    throw fsError(e, 'cannot write master key file', file);
  } finally {
    await fh.close();
  }
  await fsyncDir(path.dirname(file)).catch(() => undefined);
  src.logger.info(
    { keyFile: file },
    'generated a new master key file for the file store; back it up: without it the stored secrets cannot be read',
  );
  const key = parseMasterKey(text);
  if (!key) throw new KeyrotorError('INTERNAL', 'generated master key did not parse');
  return { ...deriveKeys(key), source: `key file ${file}` };
}

/**
 * The master key, or undefined when none exists yet and `create` is false. With `create`, a missing
 * key file is generated (only ever for a store that holds no file yet).
 */
export async function resolveMasterKey(src: MasterKeySource, create: boolean): Promise<MasterKey | undefined> {
  const env = fromEnv(src);
  if (env) return env;
  const existing = await readKeyFile(src.keyFile);
  if (existing) return existing;
  return create ? createKeyFile(src) : undefined;
}

/** Preflight without writing: env valid, or key file valid, or its folder can hold a new one. */
export async function checkMasterKey(src: MasterKeySource): Promise<void> {
  if (fromEnv(src)) return;
  if (await readKeyFile(src.keyFile)) return;
  // no key yet: its folder must exist or be creatable (checked when writing; stat the nearest parent)
  let dir = path.dirname(src.keyFile);
  for (;;) {
    try {
      const st = await stat(dir);
      if (!st.isDirectory())
        throw new KeyrotorError('CONFIG_INVALID', `master key file ${src.keyFile}: ${dir} is not a folder`);
      return;
    } catch (e) {
      if (e instanceof KeyrotorError) throw e;
      if (errnoOf(e) !== 'ENOENT') throw fsError(e, 'cannot inspect', dir);
      const up = path.dirname(dir);
      if (up === dir) return;
      dir = up;
    }
  }
}
