/**
 * In-memory Issuer and SecretStore that follow the port contracts exactly (the store passes the
 * same contract suite as the real stores), with fault injection, for workflow tests.
 * Values are built from the canary so leak checks catch them.
 */
import { KeyrotorError, type ErrorCode } from '../../src/core/errors.ts';
import type { Issuer, IssuerKeyInfo, SecretStore, StoredVersion, VersionMeta } from '../../src/core/ports.ts';
import { Secret } from '../../src/core/secret.ts';
import { CANARY } from '../canary.ts';

export interface Fault {
  code: ErrorCode;
  retryable?: boolean;
  /** how many calls fail (default: every call) */
  times?: number;
  /** apply the call, then fail (a lost response) */
  after?: boolean;
}

class Faults {
  #faults = new Map<string, Fault & { left: number }>();
  calls: string[] = [];
  set(method: string, f: Fault): void {
    this.#faults.set(method, { ...f, left: f.times ?? Number.POSITIVE_INFINITY });
  }
  clear(): void {
    this.#faults.clear();
  }
  async run<T>(method: string, fn: () => Promise<T> | T): Promise<T> {
    this.calls.push(method);
    const f = this.#faults.get(method);
    if (f && f.left > 0) {
      f.left--;
      const err = new KeyrotorError(f.code, `injected fault on ${method}`, { retryable: f.retryable ?? false });
      if (f.after) {
        await fn();
      }
      throw err;
    }
    return fn();
  }
}

interface Version {
  id: string;
  rotationId: string;
  value: string;
  meta: VersionMeta;
  pendingFor?: string;
}

export class MemoryStore implements SecretStore {
  readonly type = 'memory';
  readonly label: string;
  readonly faults = new Faults();
  versions: Version[] = [];
  current: string | null = null;
  previous: string | null = null;
  /** rotationId -> version id that was current before that rotation's promote */
  #before = new Map<string, string | null>();
  #seq = 0;

  constructor(label = 'memory:0') {
    this.label = label;
  }

  #v(id: string | null): Version | undefined {
    return id ? this.versions.find((v) => v.id === id) : undefined;
  }
  #out(v: Version | undefined): StoredVersion | null {
    return v ? { versionId: v.id, secret: Secret.of(v.value), meta: { ...v.meta } } : null;
  }
  #byRotation(r: string): Version | undefined {
    return this.versions.find((v) => v.rotationId === r);
  }

  /** the value consumers read right now (test helper) */
  currentValue(): string | null {
    return this.#v(this.current)?.value ?? null;
  }

  check() {
    return this.faults.run('check', () => undefined);
  }
  describe() {
    return this.faults.run('describe', () => {
      const slot = (id: string | null) => {
        const v = this.#v(id);
        return v ? { versionId: v.id, meta: { ...v.meta } } : undefined;
      };
      const pending = this.versions.find((v) => v.pendingFor);
      return {
        current: slot(this.current),
        previous: slot(this.previous),
        pending: pending ? slot(pending.id) : undefined,
      };
    });
  }
  readCurrent() {
    return this.faults.run('readCurrent', () => this.#out(this.#v(this.current)));
  }
  readPrevious() {
    return this.faults.run('readPrevious', () => this.#out(this.#v(this.previous)));
  }
  readPending(rotationId: string) {
    return this.faults.run('readPending', () => this.#out(this.versions.find((v) => v.pendingFor === rotationId)));
  }
  stage(req: { rotationId: string; secret: Secret; meta: VersionMeta }) {
    return this.faults.run('stage', () => {
      const existing = this.#byRotation(req.rotationId);
      if (existing) return { versionId: existing.id };
      const v: Version = {
        id: `v${++this.#seq}`,
        rotationId: req.rotationId,
        value: req.secret.reveal(),
        meta: { ...req.meta },
        pendingFor: req.rotationId,
      };
      this.versions.push(v);
      return { versionId: v.id };
    });
  }
  promote(rotationId: string) {
    return this.faults.run('promote', () => {
      const v = this.#byRotation(rotationId);
      if (!v) throw new KeyrotorError('STORE_CONFLICT', `${this.label}: nothing staged for ${rotationId}`);
      if (this.current === v.id) return;
      this.#before.set(rotationId, this.current);
      this.previous = this.current;
      this.current = v.id;
      delete v.pendingFor;
    });
  }
  demote(rotationId: string) {
    return this.faults.run('demote', () => {
      const v = this.#byRotation(rotationId);
      if (!v || this.current !== v.id) return;
      const before = this.#before.get(rotationId) ?? null;
      this.current = before;
      this.previous = null;
      v.pendingFor = rotationId; // back to staged-only; unstage removes it
    });
  }
  unstage(rotationId: string) {
    return this.faults.run('unstage', () => {
      const v = this.#byRotation(rotationId);
      if (!v || this.current === v.id) return;
      this.versions = this.versions.filter((x) => x !== v);
    });
  }
}

interface IssuedEntry {
  id: string;
  name: string;
  value: string;
  createdAt: string;
  expiresInSeconds?: number | undefined;
}

export class MemoryIssuer implements Issuer {
  readonly type = 'memory';
  readonly faults = new Faults();
  keys: IssuedEntry[] = [];
  /** revoked keys keep working for this many verify calls (propagation) */
  revokeLag = 0;
  /** new keys fail verify for this many calls (propagation) */
  createLag = 0;
  #dying = new Map<string, number>();
  #young = new Map<string, number>();
  #seq = 0;

  /** plant a key as if a person had created it; returns its value */
  plant(name = 'hand-made'): { id: string; value: string } {
    const e = {
      id: `key_${++this.#seq}`,
      name,
      value: `${CANARY}-issued-${this.#seq}`,
      createdAt: new Date().toISOString(),
    };
    this.keys.push(e);
    return { id: e.id, value: e.value };
  }
  alive(id: string): boolean {
    return this.keys.some((k) => k.id === id);
  }

  check() {
    return this.faults.run('check', () => undefined);
  }
  create(req: { name: string; rotationId: string; expiresInSeconds?: number | undefined }) {
    return this.faults.run('create', () => {
      this.keys = this.keys.filter((k) => k.name !== req.name); // the port contract: leftovers of this name go first
      const e: IssuedEntry = {
        id: `key_${++this.#seq}`,
        name: req.name,
        value: `${CANARY}-issued-${this.#seq}`,
        createdAt: new Date().toISOString(),
        expiresInSeconds: req.expiresInSeconds,
      };
      this.keys.push(e);
      if (this.createLag) this.#young.set(e.value, this.createLag);
      return { keyId: e.id, name: e.name, secret: Secret.of(e.value), createdAt: e.createdAt };
    });
  }
  verify(secret: Secret) {
    return this.faults.run('verify', () => {
      const v = secret.reveal();
      const young = this.#young.get(v);
      if (young) {
        this.#young.set(v, young - 1);
        return { ok: false as const, reason: 'invalid' as const, detail: 'not yet propagated', retryable: true };
      }
      if (this.keys.some((k) => k.value === v)) return { ok: true as const };
      const dying = this.#dying.get(v);
      if (dying) {
        this.#dying.set(v, dying - 1);
        return { ok: true as const };
      }
      return { ok: false as const, reason: 'invalid' as const, detail: 'invalid_api_key', retryable: false };
    });
  }
  revoke(keyId: string) {
    return this.faults.run('revoke', () => {
      const k = this.keys.find((x) => x.id === keyId);
      if (!k) return { alreadyGone: true };
      this.keys = this.keys.filter((x) => x !== k);
      if (this.revokeLag) this.#dying.set(k.value, this.revokeLag);
      return { alreadyGone: false };
    });
  }
  list() {
    return this.faults.run('list', () =>
      this.keys.map<IssuerKeyInfo>((k) => ({ keyId: k.id, name: k.name, createdAt: k.createdAt })),
    );
  }
  identify(secret: Secret) {
    return this.faults.run('identify', () => {
      const k = this.keys.find((x) => x.value === secret.reveal());
      return k ? { kind: 'found' as const, keyId: k.id } : { kind: 'not_found' as const };
    });
  }
}
