import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { Issuer, IssuerKeyInfo, ProviderContext } from '../../../src/core/ports.ts';
import { Secret } from '../../../src/core/secret.ts';
import type { LocalIssuerConfig } from './local.schema.ts';

/**
 * The embedded default issuer: generates random secrets locally (for internal tokens and for trying
 * keyrotor offline). The registry `<stateDir>/local-issuer/<key>.json` keeps, per key id, the name,
 * dates and a SHA-256 of the value (never the value), so verify and revoke are real checks.
 */
interface Entry {
  id: string;
  name: string;
  createdAt: string;
  sha256: string;
  redacted: string;
}
interface Registry {
  format: 'keyrotor-local-issuer/1';
  keys: Entry[];
}

const digest = (v: string) => createHash('sha256').update(v).digest('hex');

export async function createLocalIssuer(cfg: LocalIssuerConfig, ctx: ProviderContext): Promise<Issuer> {
  const file = path.join(ctx.stateDir, 'local-issuer', `${ctx.keyName}.json`);

  async function load(): Promise<Registry> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { format: 'keyrotor-local-issuer/1', keys: [] };
      throw new KeyrotorError('ISSUER_UNAVAILABLE', `local issuer: cannot read ${file}`, { cause: e, retryable: true });
    }
    try {
      const r = JSON.parse(text) as Registry;
      if (r.format !== 'keyrotor-local-issuer/1' || !Array.isArray(r.keys)) throw new Error('unknown format');
      return r;
    } catch (e) {
      throw new KeyrotorError('ISSUER_BAD_RESPONSE', `local issuer: ${file} is corrupt (${(e as Error).message})`, {
        cause: e,
      });
    }
  }

  async function save(r: Registry): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${randomUUID()}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(r, null, 2));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  }

  const info = (e: Entry): IssuerKeyInfo => ({
    keyId: e.id,
    name: e.name,
    createdAt: e.createdAt,
    lastUsedAt: null,
    expiresAt: null,
    redactedValue: e.redacted,
    owner: { type: 'local', id: ctx.keyName },
  });

  function find(r: Registry, secret: Secret): Entry | undefined {
    const d = Buffer.from(digest(secret.reveal()), 'hex');
    return r.keys.find((k) => timingSafeEqual(Buffer.from(k.sha256, 'hex'), d));
  }

  return {
    type: 'local',
    async check() {
      await load();
    },
    async create(req) {
      const r = await load();
      // a key with this name is a leftover of an earlier attempt of the same rotation (a crash after
      // create): its value was returned once and is gone, so delete it and create a fresh one
      const leftovers = r.keys.filter((k) => k.name === req.name);
      if (leftovers.length) {
        await req.beforeDeleteByName?.();
        ctx.logger.warn(
          { stage: 'issue', keyIds: leftovers.map((k) => k.id) },
          'deleting keys left by an earlier attempt of this rotation',
        );
        r.keys = r.keys.filter((k) => k.name !== req.name);
      }
      const raw = `${cfg.prefix}${randomBytes(cfg.bytes).toString('base64url')}`;
      const entry: Entry = {
        id: `lk_${randomBytes(6).toString('hex')}`,
        name: req.name,
        createdAt: new Date(ctx.clock.now()).toISOString(),
        sha256: digest(raw),
        redacted: `${cfg.prefix}***${raw.slice(-4)}`,
      };
      r.keys.push(entry);
      await save(r);
      return { keyId: entry.id, name: entry.name, secret: Secret.of(raw), createdAt: entry.createdAt };
    },
    async verify(secret) {
      const r = await load();
      return find(r, secret)
        ? { ok: true }
        : { ok: false, reason: 'invalid', detail: 'unknown or revoked key', retryable: false };
    },
    async revoke(keyId) {
      const r = await load();
      const before = r.keys.length;
      r.keys = r.keys.filter((k) => k.id !== keyId);
      if (r.keys.length === before) return { alreadyGone: true };
      await save(r);
      return { alreadyGone: false };
    },
    async list() {
      return (await load()).keys.map(info);
    },
    async identify(secret) {
      const e = find(await load(), secret);
      return e ? { kind: 'found', keyId: e.id } : { kind: 'not_found' };
    },
  };
}
