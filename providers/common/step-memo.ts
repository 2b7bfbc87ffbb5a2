/**
 * The per-step memory every store keeps to save a read on the straight path of a rotation.
 *
 * Within one process a rotation calls a store in a fixed order: `check` (preflight), `readCurrent`,
 * `stage`, `readPending` (verify), `promote`. Each of these would start by reading the store's state
 * (labels, aliases, version lists, the file), although the call before it just read or wrote exactly
 * that. A store remembers what its last call saw (`remember`), together with which next steps may use
 * it:
 *
 *   check         -> readCurrent, stage
 *   stage(r)      -> readPending(r), promote(r)
 *
 * Every use is consumed (`take`): one use per step. A read step that may use the memory keeps the rest
 * of it (check -> readCurrent -> stage); any other call, a mutating step, and an error before the
 * next `remember` forget everything, so a resumed rotation (new process, new instance) and every other
 * caller read the store as before. In memory only, never persisted; values only inside a `Secret`.
 *
 * `scope` (optional): stores whose instances may share one backing object (the file store: one file per
 * key) name it; then at most one memo of the scope remembers anything (the last to `remember`), and
 * `changed()` (the caller is about to write the object) drops what any memo of the scope remembers.
 */

/** The steps that may use what the previous step of the same rotation saw. */
export type MemoStep =
  | { step: 'readCurrent' }
  | { step: 'stage' }
  | { step: 'readPending'; rotationId: string }
  | { step: 'promote'; rotationId: string };

/** Which next steps may use a remembered value. */
export interface MemoPermits {
  readCurrent?: boolean | undefined;
  stage?: boolean | undefined;
  /** rotation id whose `readPending` may use it */
  readPending?: string | undefined;
  /** rotation id whose `promote` may use it */
  promote?: string | undefined;
}

interface Entry<T> {
  value: T;
  permits: MemoPermits;
}

/** scope -> the memo that currently remembers something for it */
const owners = new Map<string, StepMemo<unknown>>();

export class StepMemo<T> {
  #entry: Entry<T> | undefined;
  readonly #scope: string | undefined;

  constructor(opts: { scope?: string | undefined } = {}) {
    this.#scope = opts.scope;
  }

  /** Remember `value` for the steps `permits` names (replaces anything remembered before). */
  remember(value: T, permits: MemoPermits): void {
    if (this.#scope !== undefined) {
      const other = owners.get(this.#scope);
      if (other && other !== this) other.#entry = undefined;
      owners.set(this.#scope, this);
    }
    this.#entry = { value, permits: { ...permits } };
  }

  /** Forget what this memo remembers. */
  forget(): void {
    this.#entry = undefined;
    if (this.#scope !== undefined && owners.get(this.#scope) === this) owners.delete(this.#scope);
  }

  /** The backing object is about to change: forget what this memo and any other memo of its scope remember. */
  changed(): void {
    this.forget();
    if (this.#scope === undefined) return;
    const owner = owners.get(this.#scope);
    if (owner) owner.forget();
  }

  /**
   * The remembered value if `s` may use it, consuming that permit; otherwise forget everything and
   * return undefined. `stage` and `promote` change the store: they always forget (the caller remembers
   * again what its own successful writes left behind).
   */
  take(s: MemoStep): T | undefined {
    const e = this.#entry;
    let ok = false;
    if (e) {
      const p = e.permits;
      switch (s.step) {
        case 'readCurrent':
          ok = p.readCurrent === true;
          p.readCurrent = false;
          break;
        case 'stage':
          ok = p.stage === true;
          break;
        case 'readPending':
          ok = p.readPending === s.rotationId;
          p.readPending = undefined;
          break;
        case 'promote':
          ok = p.promote === s.rotationId;
          break;
      }
    }
    if (!ok || s.step === 'stage' || s.step === 'promote') this.forget();
    return ok ? e!.value : undefined;
  }
}
