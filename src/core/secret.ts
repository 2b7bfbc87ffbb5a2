/**
 * A secret value that refuses to be printed. `String(s)`, `JSON.stringify(s)`, template literals and
 * `util.inspect` all yield `[REDACTED]`; only `reveal()` returns the value, and only provider code
 * that must send the value over the wire (issuer verify, store write) may call it.
 */
const REDACTED = '[REDACTED]';
const values = new WeakMap<Secret, string>();

export class Secret {
  private constructor() {}

  static of(value: string): Secret {
    if (typeof value !== 'string' || value.length === 0) {
      throw new TypeError('Secret.of: value must be a non-empty string');
    }
    const s = new Secret();
    values.set(s, value);
    return s;
  }

  /** The raw value. Call only at the wire boundary. */
  reveal(): string {
    const v = values.get(this);
    if (v === undefined) throw new TypeError('Secret: value missing');
    return v;
  }

  equals(other: Secret): boolean {
    return this.reveal() === other.reveal();
  }

  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return REDACTED;
  }
}

/**
 * Scrubs anything shaped like an API key out of text that came from outside (SDK error messages,
 * HTTP bodies) before it reaches a log line, an error or a snapshot. Second line of defence only:
 * the first is never holding the value in such places.
 */
const KEY_SHAPES: RegExp[] = [
  /\bsk-[A-Za-z0-9_\-*]{6,}/g, // OpenAI keys (also partially masked forms)
  /[A-Za-z0-9_-]{40,}/g, // any long random token (local issuer values are prefix + 43 base64url chars)
  /\bBearer\s+[A-Za-z0-9._\-~+/=]{8,}/gi,
];
export function scrubText(text: string, extra: readonly string[] = []): string {
  let out = text;
  for (const v of extra) if (v.length >= 6) out = out.split(v).join(REDACTED);
  for (const re of KEY_SHAPES) out = out.replace(re, REDACTED);
  return out;
}
