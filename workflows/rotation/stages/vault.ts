/**
 * Where secret values are between stages: in memory only (the vault), never in context or snapshots.
 * After a restart the vault is empty and the new value is read back from the stores that hold it.
 */
import { KeyrotorError } from '../../../src/core/errors.ts';
import { fingerprint } from '../../../src/core/fingerprint.ts';
import type { SecretStore } from '../../../src/core/ports.ts';
import type { Secret } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';
import type { RotationContext } from '../rotation.machine.ts';

/** Secret values live here between `issue` and `stage`, in memory only, never in a snapshot. */
export class SecretVault {
  #values = new Map<string, Secret>();
  set(ref: string, s: Secret): void {
    this.#values.set(ref, s);
  }
  get(ref: string): Secret | undefined {
    return this.#values.get(ref);
  }
  delete(ref: string): void {
    this.#values.delete(ref);
  }
}

/** vault references of one rotation's keys */
export const newRef = (ctx: RotationContext) => `new:${ctx.rotationId}`;
export const oldRef = (ctx: RotationContext) => `old:${ctx.rotationId}`;

/**
 * The new key's value: from memory if this process issued it, else read back from a store.
 *
 * `stagingAt`: the index of the store the `stage` stage is writing to. The stores before it hold the
 * value, and so may that store itself: a process that died right after its write (before the snapshot
 * that records it) is restored at that same stage, and the value it needs is exactly the one it wrote.
 * So the stores up to and including `stagingAt` are asked (the fingerprint decides, as everywhere).
 */
export async function newSecret(
  deps: { vault: SecretVault; stores: SecretStore[] },
  ctx: RotationContext,
  stage: Stage,
  stagingAt = deps.stores.length - 1,
): Promise<Secret> {
  const inMemory = deps.vault.get(newRef(ctx));
  if (inMemory) return inMemory;
  for (const store of deps.stores.slice(0, stagingAt + 1)) {
    const v = (await store.readPending(ctx.rotationId)) ?? (await currentIfOurs(store, ctx));
    if (v && fingerprint(v.secret) === ctx.newFingerprint) {
      deps.vault.set(newRef(ctx), v.secret);
      return v.secret;
    }
  }
  throw new KeyrotorError(
    'SECRET_UNAVAILABLE',
    `the new key ${ctx.newKeyId} is not held by any store (the process stopped before staging it); it will be discarded`,
    {
      stage,
    },
  );
}

async function currentIfOurs(store: SecretStore, ctx: RotationContext) {
  const c = await store.readCurrent();
  return c && c.meta.rotationId === ctx.rotationId ? c : null;
}
