/**
 * Small shared helpers for the benchmark: statistics, formatting, temp dirs, the machine description,
 * and a logger that writes keyrotor's JSON logs to a file (so their cost is measured and the canary
 * scan can read them) instead of the terminal.
 */
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { cpus, platform, release, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createLogger } from '../../src/app/log.ts';
import type { Logger } from '../../src/core/ports.ts';

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const round = (x: number, digits = 2): number => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);

export function ratio(a: number, b: number): number {
  return b > 0 ? round(a / b, 2) : Number.NaN;
}

export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}

export function benchTmp(): string {
  return mkdtempSync(path.join(tmpdir(), 'keyrotor-bench-'));
}

/** a temp dir on tmpfs (/dev/shm) when there is one and the temp dir is not already there; else `fallback` */
export function fastTmp(fallback: string): string {
  if (fallback.startsWith('/dev/shm/')) return fallback;
  try {
    accessSync('/dev/shm', constants.W_OK);
    return mkdtempSync(path.join('/dev/shm', 'keyrotor-bench-'));
  } catch {
    return fallback;
  }
}

export function machine() {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model?.trim() ?? 'unknown',
    memoryGB: round(totalmem() / 2 ** 30, 1),
    os: `${platform()} ${release()}`,
    node: process.version,
    loadAverage: (() => {
      try {
        return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
      } catch {
        return null;
      }
    })(),
  };
}

/** keyrotor's own logger (JSON, level info, as the CLI runs unattended), written to a file. */
export async function fileLogger(file: string): Promise<Logger> {
  return createLogger({
    level: 'info',
    pretty: false,
    destination: pino.destination({ dest: file, sync: true, mkdir: true }),
  });
}

/** Every file under `dir` whose bytes contain `needle` (relative paths). */
export function filesContaining(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = path.join(d, n);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && readFileSync(p).includes(needle)) hits.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return hits;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A short status line on stderr while the bench runs (the table goes to stdout at the end). */
export function progress(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/**
 * P1's rotation.config.yaml (the bench and the hot-path harnesses share it): keys rotated against the
 * OpenAI fake with one `issuer-smoke-test` gate and short polls; `head` holds extra top-level lines
 * (`stateDir:`, `state:`), each key its own service account and store.
 */
export function p1Yaml(o: {
  baseURL: string;
  head?: string;
  keys: Array<{ name: string; serviceAccount: string; store?: string }>;
}): string {
  const key = (k: { name: string; serviceAccount: string; store?: string }) => `  - name: ${k.name}
    issuer: { type: openai, project: proj_bench, serviceAccount: ${k.serviceAccount}, baseURL: "${o.baseURL}", timeout: 10s, rateLimit: 10000 }
    stores:
      - ${k.store ?? '{ type: file }'}
    health:
      - { type: issuer-smoke-test, timeout: 10s, interval: 100ms }
`;
  return `version: 1
${o.head ? `${o.head}\n` : ''}defaults:
  verify: { timeout: 10s, interval: 100ms }
  verifyRevoked: { timeout: 10s, interval: 100ms }
  revoke: { attempts: 3, backoff: 100ms }
keys:
${o.keys.map(key).join('')}`;
}
