/**
 * The OpenAI issuer's client-side rate limiter: one token bucket plus an in-flight cap per OpenAI
 * account, shared by every issuer instance in the process that talks to the same base URL with the
 * same admin key (a fleet run builds one issuer per key; they all draw from one bucket).
 *
 * - Every HTTP request the `openai` SDK sends goes through `limiter.fetch` (passed as the SDK's
 *   `fetch`), so the SDK's own retries and the pages of a list are counted too.
 * - Bucket: refills at `requestsPerSecond`, holds at most `burst` tokens (default: half a second's
 *   worth). A burst below the server's keeps a reserve there, so arrival jitter does not turn a
 *   request that left on time into a 429.
 * - In-flight cap: at most `maxInFlight` requests wait for an answer at once (a slot is released when
 *   the response headers arrive or the request fails).
 * - 429: the whole bucket pauses for the answer's `retry-after-ms` / `retry-after` (capped at 60 s),
 *   or, without either header, for an exponential backoff (0.5 s, 1 s, 2 s ... 8 s). Requests of every
 *   issuer sharing the bucket wait; the first answer that is not a 429 resets the backoff.
 *   Re-sending the rejected request is the caller's decision: the SDK retries GET and DELETE
 *   (`maxRetries: 2`, honouring the same header); a key create and a key check are never re-sent by
 *   the issuer (one call, one request), their callers see a retryable error.
 *
 * Waits are FIFO. Waiting happens inside the SDK's request timeout (the SDK starts its timer before
 * it calls `fetch`); an aborted request leaves the queue at once. Nothing here sees a secret: the
 * bucket key is a SHA-256 of base URL + admin key.
 */
import { createHash } from 'node:crypto';

export interface RateLimitOptions {
  /** sustained requests per second */
  requestsPerSecond: number;
  /** tokens the bucket holds (requests that may go out at once after a quiet period); default rps / 2 */
  burst?: number | undefined;
  /** requests awaiting an answer at once; default unlimited */
  maxInFlight?: number | undefined;
  /** monotonic ms clock (tests); default performance.now */
  now?: (() => number) | undefined;
}

export interface RateLimiterStats {
  /** requests let through */
  requests: number;
  /** of those, how many had to wait (for a token, a free slot, or a 429 pause) */
  waited: number;
  /** total time requests spent waiting, ms */
  waitMs: number;
  /** 429 answers seen */
  rateLimited: number;
  /** pauses started (or extended) because of a 429 */
  pauses: number;
}

type FetchFn = typeof globalThis.fetch;

interface Waiter {
  resolve: (release: () => void) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  queuedAt: number;
}

const MAX_PAUSE_MS = 60_000;
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 8_000;

export class RateLimiter {
  #rate: number;
  #burst: number;
  #maxInFlight: number;
  readonly #now: () => number;
  #tokens: number;
  #refilledAt: number;
  #pausedUntil = 0;
  #inFlight = 0;
  #consecutive429 = 0;
  #queue: Waiter[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = 0;
  readonly stats: RateLimiterStats = { requests: 0, waited: 0, waitMs: 0, rateLimited: 0, pauses: 0 };

  constructor(o: RateLimitOptions) {
    if (!(o.requestsPerSecond > 0)) throw new RangeError('RateLimiter: requestsPerSecond must be > 0');
    this.#now = o.now ?? (() => performance.now());
    this.#rate = o.requestsPerSecond;
    this.#burst = Math.max(1, o.burst ?? Math.ceil(o.requestsPerSecond / 2));
    this.#maxInFlight = Math.max(1, o.maxInFlight ?? Number.POSITIVE_INFINITY);
    this.#tokens = this.#burst;
    this.#refilledAt = this.#now();
  }

  get requestsPerSecond(): number {
    return this.#rate;
  }
  get burst(): number {
    return this.#burst;
  }
  get maxInFlight(): number {
    return this.#maxInFlight;
  }
  get inFlight(): number {
    return this.#inFlight;
  }
  get queued(): number {
    return this.#queue.length;
  }
  /** ms until the current 429 pause ends (0 when none) */
  get pausedForMs(): number {
    return Math.max(0, this.#pausedUntil - this.#now());
  }

  /** Lower the limits to at most these (a second issuer configured more strictly wins). */
  tighten(o: Omit<RateLimitOptions, 'now'>): void {
    this.#refill();
    if (o.requestsPerSecond < this.#rate) this.#rate = o.requestsPerSecond;
    const burst = Math.max(1, o.burst ?? Math.ceil(o.requestsPerSecond / 2));
    if (burst < this.#burst) {
      this.#burst = burst;
      this.#tokens = Math.min(this.#tokens, burst);
    }
    if (o.maxInFlight !== undefined && o.maxInFlight < this.#maxInFlight)
      this.#maxInFlight = Math.max(1, o.maxInFlight);
  }

  /** Wait for a token and a free slot; resolves with the function that frees the slot (call it once). */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal, onAbort: undefined, queuedAt: this.#now() };
      if (signal) {
        w.onAbort = () => {
          const i = this.#queue.indexOf(w);
          if (i >= 0) this.#queue.splice(i, 1);
          reject(abortReason(signal));
          this.#pump();
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.#queue.push(w);
      this.#pump();
    });
  }

  /** Tell the limiter what an answer said: a 429 pauses the bucket, anything else resets the backoff. */
  observe(status: number, headers: Headers | undefined): void {
    if (status !== 429) {
      this.#consecutive429 = 0;
      return;
    }
    this.stats.rateLimited += 1;
    this.#consecutive429 += 1;
    const asked = retryAfterMs(headers);
    const ms = asked ?? Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (this.#consecutive429 - 1));
    const until = this.#now() + Math.min(MAX_PAUSE_MS, Math.max(0, ms));
    if (until > this.#pausedUntil) {
      this.#pausedUntil = until;
      this.stats.pauses += 1;
    }
    // nothing may go out before the pause ends, and the bucket starts empty after it
    this.#tokens = Math.min(this.#tokens, 0);
    this.#refilledAt = Math.max(this.#refilledAt, until);
    this.#pump();
  }

  /** A `fetch` for the SDK: waits for the limiter, then sends, then reports the status. */
  wrap(inner?: FetchFn): FetchFn {
    return async (input: Parameters<FetchFn>[0], init?: Parameters<FetchFn>[1]) => {
      const release = await this.acquire(init?.signal ?? undefined);
      try {
        const res = await (inner ?? globalThis.fetch)(input, init);
        this.observe(res.status, res.headers);
        return res;
      } finally {
        release();
      }
    };
  }

  #refill(): void {
    const now = this.#now();
    if (now > this.#refilledAt) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#refilledAt) * this.#rate) / 1000);
      this.#refilledAt = now;
    }
  }

  #pump(): void {
    for (;;) {
      const w = this.#queue[0];
      if (!w) {
        this.#clearTimer();
        return;
      }
      const now = this.#now();
      if (now < this.#pausedUntil) return this.#wake(this.#pausedUntil - now);
      if (this.#inFlight >= this.#maxInFlight) return this.#clearTimer(); // a release pumps again
      this.#refill();
      if (this.#tokens < 1) return this.#wake(((1 - this.#tokens) * 1000) / this.#rate);
      this.#tokens -= 1;
      this.#inFlight += 1;
      this.#queue.shift();
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      const waited = now - w.queuedAt;
      this.stats.requests += 1;
      if (waited >= 1) {
        this.stats.waited += 1;
        this.stats.waitMs += waited;
      }
      let released = false;
      w.resolve(() => {
        if (released) return;
        released = true;
        this.#inFlight -= 1;
        this.#pump();
      });
    }
  }

  /** one timer for the head of the queue; it keeps the process alive only while someone waits */
  #wake(ms: number): void {
    const at = this.#now() + Math.max(1, ms);
    if (this.#timer && Math.abs(this.#timerAt - at) < 1) return;
    this.#clearTimer();
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#pump();
      },
      Math.max(1, Math.ceil(ms)),
    );
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** `retry-after-ms` (ms) or `retry-after` (seconds or an HTTP date), as ms; undefined when absent or unusable. */
export function retryAfterMs(headers: Headers | undefined): number | undefined {
  const ms = headers?.get('retry-after-ms');
  if (ms) {
    const n = Number.parseFloat(ms);
    if (Number.isFinite(n) && n >= 0) return n;
  }
  const ra = headers?.get('retry-after');
  if (ra) {
    const s = Number.parseFloat(ra);
    if (Number.isFinite(s) && s >= 0) return s * 1000;
    const at = Date.parse(ra);
    if (Number.isFinite(at)) return Math.max(0, at - Date.now());
  }
  return undefined;
}

// ------------------------------------------------------------------ one bucket per account

const limiters = new Map<string, RateLimiter>();

/** The bucket key: base URL plus a digest of the admin key (never the key itself). */
export function limiterKey(baseURL: string, adminKey: string | undefined): string {
  const who = adminKey
    ? createHash('sha256').update(`keyrotor/openai-ratelimit/${adminKey}`).digest('hex').slice(0, 24)
    : 'no-admin-key';
  return `${baseURL.replace(/\/+$/, '')}#${who}`;
}

/**
 * The process-wide limiter for this key, created on first use. When issuers sharing it are
 * configured differently, the strictest settings win.
 */
export function sharedLimiter(key: string, o: Omit<RateLimitOptions, 'now'>): RateLimiter {
  const found = limiters.get(key);
  if (found) {
    found.tighten(o);
    return found;
  }
  const l = new RateLimiter(o);
  limiters.set(key, l);
  return l;
}

/** Forget every shared limiter (tests, benchmarks that start a fresh fleet). */
export function resetSharedLimiters(): void {
  limiters.clear();
}

/** Every shared limiter and its counters (benchmarks, diagnostics); keys carry no secret. */
export function sharedLimiterStats(): Array<{
  key: string;
  requestsPerSecond: number;
  burst: number;
  maxInFlight: number;
  stats: RateLimiterStats;
}> {
  return [...limiters].map(([key, l]) => ({
    key,
    requestsPerSecond: l.requestsPerSecond,
    burst: l.burst,
    maxInFlight: l.maxInFlight,
    stats: { ...l.stats },
  }));
}
