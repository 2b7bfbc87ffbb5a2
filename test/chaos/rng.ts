/**
 * A small seeded PRNG (mulberry32) so every chaos run can be reproduced: the seed is printed at the
 * start and with every violation; set KEYROTOR_CHAOS_SEED=<n> to replay a run.
 */
export interface Rng {
  readonly seed: number;
  /** [0, 1) */
  next(): number;
  /** integer in [lo, hi] */
  int(lo: number, hi: number): number;
  chance(p: number): boolean;
  pick<T>(xs: readonly T[]): T;
  /** a child generator with its own stream (stable for a given parent seed and label) */
  fork(label: string): Rng;
}

export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rng: Rng = {
    seed,
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
    fork: (label) => {
      let h = seed ^ 0x9e3779b9;
      for (const c of label) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
      return mulberry32(h >>> 0);
    },
  };
  return rng;
}

/** The run's seed: KEYROTOR_CHAOS_SEED if set, else random. */
export function chaosSeed(): number {
  const env = process.env.KEYROTOR_CHAOS_SEED;
  if (env && /^\d+$/.test(env)) return Number(env) >>> 0;
  return (Math.random() * 2 ** 32) >>> 0;
}
