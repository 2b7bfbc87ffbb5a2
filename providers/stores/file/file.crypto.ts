/**
 * Crypto for the file store: master key parsing, per-purpose subkeys (HKDF-SHA256), AES-256-GCM per
 * version with AAD, and an HMAC over the whole envelope so slots and metadata cannot be edited either.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createSecretKey,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';

export const MASTER_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HKDF_SALT = 'keyrotor-file-store';

/**
 * A key for `seal` / `unseal` / `mac`: the derived keys are KeyObjects (a Buffer key is turned into one
 * on every cipher and HMAC, which costs more than the HMAC of a whole secrets file).
 */
export type SymmetricKey = Buffer | KeyObject;

export interface DerivedKeys {
  /** AES-256-GCM key for version values */
  enc: KeyObject;
  /** HMAC-SHA256 key for the envelope */
  mac: KeyObject;
  /** public, non-secret id of the master key (`mk_` + 12 hex), stored in the file to tell
   *  "wrong master key" from "tampered file" */
  kid: string;
}

const HEX_RE = /^[0-9a-fA-F]{64}$/;
// 32 bytes in base64 = 43 significant chars + one '=' pad (standard or url-safe alphabet)
const B64_RE = /^[A-Za-z0-9+/]{43}=?$|^[A-Za-z0-9_-]{43}=?$/;

/** 64 hex chars or base64 of exactly 32 bytes (surrounding whitespace ignored); else undefined. */
export function parseMasterKey(text: string): Buffer | undefined {
  const t = text.trim();
  if (HEX_RE.test(t)) return Buffer.from(t, 'hex');
  if (B64_RE.test(t)) {
    const b = Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64');
    if (b.length === MASTER_KEY_BYTES) return b;
  }
  return undefined;
}

export function generateMasterKeyText(): string {
  return randomBytes(MASTER_KEY_BYTES).toString('hex') + '\n';
}

/**
 * The subkeys of the master keys seen last (a process uses one, or a few): each file store instance
 * (one per key and rotation) resolves its master key again, and three HKDF derivations per rotation
 * are wasted work. Kept by a digest of the master key (not the key itself); never mutate what is returned.
 */
const derived = new Map<string, DerivedKeys>();
const DERIVED_KEPT = 4;

export function deriveKeys(master: Buffer): DerivedKeys {
  const id = createHash('sha256').update('keyrotor-file-store/1 derived-keys cache\u0000').update(master).digest('hex');
  const known = derived.get(id);
  if (known) return known;
  const sub = (info: string) => Buffer.from(hkdfSync('sha256', master, HKDF_SALT, info, 32));
  const keys: DerivedKeys = {
    enc: createSecretKey(sub('keyrotor-file-store/1 value-encryption')),
    mac: createSecretKey(sub('keyrotor-file-store/1 envelope-mac')),
    kid: 'mk_' + sub('keyrotor-file-store/1 key-id').toString('hex').slice(0, 12),
  };
  if (derived.size >= DERIVED_KEPT) derived.delete(derived.keys().next().value!);
  derived.set(id, keys);
  return keys;
}

export interface Sealed {
  iv: string; // base64
  tag: string; // base64
  data: string; // base64
}

/** AAD binds a ciphertext to its file format, key name and version id. */
export function versionAad(keyName: string, versionId: string): Buffer {
  return Buffer.from(`keyrotor-file-store/1\u0000${keyName}\u0000${versionId}`, 'utf8');
}

export function seal(key: SymmetricKey, plaintext: string, aad: Buffer): Sealed {
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  c.setAAD(aad);
  const data = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return { iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/** Returns the plaintext, or undefined when authentication fails (wrong key, tampered, swapped). */
export function unseal(key: SymmetricKey, s: Sealed, aad: Buffer): string | undefined {
  const iv = Buffer.from(s.iv, 'base64');
  const tag = Buffer.from(s.tag, 'base64');
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) return undefined;
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    d.setAAD(aad);
    d.setAuthTag(tag);
    return Buffer.concat([d.update(Buffer.from(s.data, 'base64')), d.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

export function mac(key: SymmetricKey, text: string): string {
  return createHmac('sha256', key).update('keyrotor-file-store/1 envelope\u0000').update(text, 'utf8').digest('hex');
}

export function macEquals(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Constant-time equality of two secret strings (via fixed-length digests). */
export function sameValue(a: string, b: string): boolean {
  const k = randomBytes(32);
  const h = (v: string) => createHmac('sha256', k).update(v, 'utf8').digest();
  return timingSafeEqual(h(a), h(b));
}
