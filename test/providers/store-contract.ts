/**
 * The SecretStore contract, run against every store over its real wire protocol.
 * Usage: describeStoreContract('aws-secrets-manager (moto)', async () => ({ store, cleanup }))
 * The factory must return a store whose secret exists but holds no value yet (a fresh slot).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { Secret } from '../../src/core/secret.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import type { SecretStore, VersionMeta } from '../../src/core/ports.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { CANARY } from '../canary.ts';

export interface StoreHarness {
  store: SecretStore;
  cleanup?: () => Promise<void>;
  /**
   * Read the value the way this store's users read it by default, outside keyrotor (AWS GetSecretValue
   * of AWSCURRENT, GCP `versions/latest` of the secret, Azure `getSecret(name)`, the `keyrotor/consumer`
   * helper for the file store). Throws when that read fails. Stores without one skip the check.
   */
  defaultRead?: () => Promise<string>;
  /**
   * A second instance of this store on the same slot, as the next process builds it (nothing in
   * memory carried over). Stores without one (in-memory test fakes) opt out with `reopen: false`.
   */
  reopen?: () => Promise<SecretStore>;
}

const R1 = 'rot-20261101t000000z-00000001';
const R2 = 'rot-20261102t000000z-00000002';
const R3 = 'rot-20261103t000000z-00000003';
const R4 = 'rot-20261104t000000z-00000004';

export function value(n: number): Secret {
  return Secret.of(`${CANARY}-store-value-${n}`);
}
export function meta(rotationId: string, n: number): VersionMeta {
  return {
    rotationId,
    issuerKeyId: `key_${n}`,
    fingerprint: fingerprint(value(n)),
    createdAt: new Date(Date.UTC(2026, 10, n)).toISOString(),
  };
}

export interface ContractOptions {
  /**
   * How two orchestrators are kept apart on this store: `store` = the store itself refuses a second
   * rotation's stage while another rotation's version is pending (LOCKED); `lease` = the store lives
   * beside keyrotor's state dir, whose per-key lease does it (file store).
   */
  lock: 'store' | 'lease';
  /** false: this store has no default reader outside keyrotor (test fakes) */
  defaultRead?: false | undefined;
  /** false: this store cannot be opened again by another process (in-memory test fakes) */
  reopen?: false | undefined;
}

export function describeStoreContract(
  name: string,
  make: () => Promise<StoreHarness>,
  opts: ContractOptions = { lock: 'store' },
): void {
  describe(`SecretStore contract: ${name}`, () => {
    let h: StoreHarness | undefined;
    const fresh = async () => (h = await make()).store;
    afterEach(async () => {
      await h?.cleanup?.();
      h = undefined;
    });

    async function bootstrap(s: SecretStore) {
      await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
      await s.promote(R1);
    }

    it('starts empty: nothing current, previous or pending', async () => {
      const s = await fresh();
      expect(await s.readCurrent()).toBeNull();
      expect(await s.readPrevious()).toBeNull();
      expect(await s.readPending(R1)).toBeNull();
      const d = await s.describe();
      expect(d.current).toBeUndefined();
      await s.check();
    });

    it('stage is invisible to consumers until promote (bootstrap)', async () => {
      const s = await fresh();
      const { versionId } = await s.stage({ rotationId: R1, secret: value(1), meta: meta(R1, 1) });
      expect(versionId).toBeTruthy();
      expect(await s.readCurrent()).toBeNull();
      const p = await s.readPending(R1);
      expect(p?.secret.reveal()).toBe(value(1).reveal());
      expect(p?.meta.rotationId).toBe(R1);
      expect(p?.meta.issuerKeyId).toBe('key_1');
      expect(p?.meta.fingerprint).toBe(fingerprint(value(1)));
      await s.promote(R1);
      const c = await s.readCurrent();
      expect(c?.secret.reveal()).toBe(value(1).reveal());
      expect(c?.versionId).toBe(versionId);
      expect(c?.meta.rotationId).toBe(R1);
      expect(c?.meta.issuerKeyId).toBe('key_1');
      expect(await s.readPending(R1)).toBeNull();
      expect((await s.describe()).pending).toBeUndefined();
    });

    it('rotation: promote makes new current and old previous; a second rotation moves them again', async () => {
      const s = await fresh();
      await bootstrap(s);
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      await s.promote(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
      expect((await s.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
      await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
      await s.promote(R3);
      expect((await s.readCurrent())?.meta.issuerKeyId).toBe('key_3');
      expect((await s.readPrevious())?.meta.issuerKeyId).toBe('key_2');
      const d = await s.describe();
      expect(d.current?.meta.rotationId).toBe(R3);
      expect(d.previous?.meta.rotationId).toBe(R2);
      expect(d.pending).toBeUndefined();
    });

    it('stage and promote are idempotent per rotation id (retry after a crash)', async () => {
      const s = await fresh();
      await bootstrap(s);
      const a = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      const b = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      expect(b.versionId).toBe(a.versionId);
      await s.promote(R2);
      await s.promote(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
      expect((await s.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
      // a stage retried after promote changes nothing
      const c = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      expect(c.versionId).toBe(a.versionId);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
      expect((await s.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
    });

    it('demote restores the old current; demote twice and unstage after it are no-ops', async () => {
      const s = await fresh();
      await bootstrap(s);
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      await s.promote(R2);
      await s.demote(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      await s.demote(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      await s.unstage(R2);
      await s.unstage(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      expect(await s.readPending(R2)).toBeNull();
      expect((await s.describe()).pending).toBeUndefined();
      // the store is usable for the next rotation
      await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
      await s.promote(R3);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(3).reveal());
      expect((await s.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
    });

    it('unstage without promote leaves current alone; demote of an unpromoted rotation is a no-op', async () => {
      const s = await fresh();
      await bootstrap(s);
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      await s.demote(R2);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      await s.unstage(R2);
      expect(await s.readPending(R2)).toBeNull();
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
      await s.unstage(R3); // never staged
    });

    it('demote of a bootstrap leaves the store with nothing current', async () => {
      const s = await fresh();
      await bootstrap(s);
      await s.demote(R1);
      expect(await s.readCurrent()).toBeNull();
      await s.unstage(R1);
      expect(await s.readCurrent()).toBeNull();
    });

    it('promote of a rotation that staged nothing is a clear non-retryable error', async () => {
      const s = await fresh();
      await bootstrap(s);
      const err = await s.promote(R2).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(KeyrotorError);
      expect((err as KeyrotorError).retryable).toBe(false);
      expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
    });

    it.runIf(opts.lock === 'store')(
      'lock contention: another rotation pending blocks staging with LOCKED until it is unstaged',
      async () => {
        const s = await fresh();
        await bootstrap(s);
        await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        const err = await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) }).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(KeyrotorError);
        expect((err as KeyrotorError).code).toBe('LOCKED');
        expect((err as KeyrotorError).message).toContain(R2);
        expect((await s.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
        expect((await s.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
        await s.unstage(R2);
        await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
        await s.promote(R3);
        expect((await s.readCurrent())?.secret.reveal()).toBe(value(3).reveal());
      },
    );

    // a process that died right after its stage call is restored at that same stage: the next process
    // reads the new value back from this store (its memory is gone) and its stage retry changes nothing
    it.runIf(opts.reopen !== false)(
      'a process that died right after stage: the next one finds the pending value, its stage retry is a no-op, it promotes',
      async () => {
        const s = await fresh();
        const reopen = h!.reopen;
        if (!reopen) throw new Error(`${name}: the harness supplies no reopen (only a test fake may opt out)`);
        await bootstrap(s);
        // the first process: preflight's reads, then stage (its answer is never seen)
        await s.check();
        await s.readCurrent();
        const staged = await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        // the next process
        const t = await reopen();
        await t.check();
        expect((await t.readCurrent())?.secret.reveal()).toBe(value(1).reveal());
        const p = await t.readPending(R2);
        expect(p?.secret.reveal()).toBe(value(2).reveal());
        expect(p?.meta.fingerprint).toBe(fingerprint(value(2)));
        expect(p?.versionId).toBe(staged.versionId);
        const again = await t.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        expect(again.versionId).toBe(staged.versionId);
        expect((await t.readPending(R2))?.secret.reveal()).toBe(value(2).reveal());
        await t.promote(R2);
        expect((await t.readCurrent())?.secret.reveal()).toBe(value(2).reveal());
        expect((await t.readPrevious())?.secret.reveal()).toBe(value(1).reveal());
        expect((await t.describe()).pending).toBeUndefined();
      },
    );

    it.runIf(opts.defaultRead !== false)(
      'default reader: the old value until promote, the new one after, the old one again after a rollback, at every step',
      async () => {
        const s = await fresh();
        const read = h!.defaultRead;
        if (!read) throw new Error(`${name}: the harness supplies no defaultRead (only a test fake may opt out)`);
        const sees = async (n: number, when: string) =>
          expect(await read().catch((e: unknown) => `read failed ${when}: ${String(e)}`), when).toBe(value(n).reveal());
        await bootstrap(s);
        await sees(1, 'after the bootstrap');
        // a rotation
        await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
        await sees(1, 'after stage');
        await s.readPending(R2);
        await sees(1, 'after verify read the staged value');
        await s.promote(R2);
        await sees(2, 'after promote');
        // rolled back after promote
        await s.demote(R2);
        await sees(1, 'after demote');
        await s.unstage(R2);
        await sees(1, 'after unstage');
        await s.demote(R2);
        await s.unstage(R2);
        await sees(1, 'after a repeated rollback');
        // rolled back before promote
        await s.stage({ rotationId: R3, secret: value(3), meta: meta(R3, 3) });
        await sees(1, 'after the next stage');
        await s.demote(R3);
        await s.unstage(R3);
        await sees(1, 'after a rollback before promote');
        // and the next rotation still works for the default reader
        await s.stage({ rotationId: R4, secret: value(4), meta: meta(R4, 4) });
        await s.promote(R4);
        await s.promote(R4);
        await sees(4, 'after the next promote');
      },
    );

    it('never exposes the value in describe(), label, or printed versions', async () => {
      const s = await fresh();
      await bootstrap(s);
      await s.stage({ rotationId: R2, secret: value(2), meta: meta(R2, 2) });
      const printed = [
        JSON.stringify(await s.describe()),
        s.label,
        inspect(await s.readPending(R2), { depth: 5 }),
        JSON.stringify(await s.readCurrent()),
      ].join('\n');
      expect(printed).not.toContain(CANARY);
    });
  });
}
