/**
 * P3 fleet: the P3 world (N keys across P projects, 20 ms per issuer request, the fake answers 429
 * beyond `rps`) rotated by three keyrotor worker processes sharing one PostgreSQL state backend
 * (a throwaway cluster, test/fakes/postgres.ts). Each worker runs a scheduled run (due keys claimed in
 * the backend, docs/state-backends.md "Claiming"); each worker's issuer is limited to rps / workers,
 * so the fleet together stays within the issuer's limit as one P3 process does. Reported: wall time
 * from the start of the workers to the end of the last vs. the rate-limit bound (answered issuer
 * requests ÷ rps), failures (keys not rotated), double rotations (keys with more than one rotation at
 * the issuer, i.e. creates under more than one name), the share of 429s and the keys per worker.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startPostgres } from '../../test/fakes/postgres.ts';
import { createStateStore } from '../../src/app/state/index.ts';
import { loadConfig } from '../../src/app/config/load.ts';
import { procMemory, startChild, writeConfig, type FleetWorld } from './p3-fleet.ts';
import { progress, ratio, round } from './util.ts';

export interface P3FleetOptions {
  world: FleetWorld;
  rps: number;
  latencyMs: number;
  /** per worker */
  concurrency: number;
  workers: number;
}

export async function runP3Fleet(o: P3FleetOptions) {
  const w = o.world;
  const pgServer = await startPostgres();
  try {
    const url = await pgServer.createDatabase('bench');
    const env = { ...w.env, KEYROTOR_DATABASE_URL: url };
    const file = writeConfig(
      w,
      path.join(w.dir, 'p3-fleet.config.yaml'),
      JSON.stringify({ rateLimit: o.rps / o.workers }),
      '',
    );
    const cfgJson = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...cfgJson, state: { type: 'postgres' } }, null, 1));
    const store = createStateStore(await loadConfig(file, env), env);
    await store.init!();
    await store.close?.();

    w.fake.resetFaults();
    w.fake.setLatency(o.latencyMs);
    w.fake.setRateLimit({ requestsPerSecond: o.rps });
    const mark = w.fake.log.length;
    const children = await Promise.all(Array.from({ length: o.workers }, () => startChild(env)));
    progress(
      `P3 fleet: ${o.workers} workers on PostgreSQL rotating ${w.keys.length} keys, concurrency ${o.concurrency} each, issuer limited to ${o.rps} requests/s (${round(o.rps / o.workers, 1)}/s per worker), ${o.latencyMs} ms per request`,
    );
    const t0 = performance.now();
    children.forEach(({ child }, i) =>
      child.send({
        cmd: 'run',
        config: file,
        logFile: path.join(w.dir, `p3-fleet-${i}.keyrotor.log.jsonl`),
        concurrency: o.concurrency,
        fleet: true,
      }),
    );
    const done = await Promise.all(children.map(({ next }) => next('done', 20 * 60_000)));
    const wallS = (performance.now() - t0) / 1000;
    const peaks = children.map(({ child }) => (child.pid ? (procMemory(child.pid)?.hwmMB ?? 0) : 0));
    for (const { child } of children) child.kill();
    w.fake.setRateLimit(null);
    w.fake.setLatency(0);

    const log = w.fake.log.slice(mark);
    const rejected = log.filter((e) => e.status === 429).length;
    const answered = log.length - rejected;
    // rotations per key at the issuer: distinct names of the keys created for it
    const names = new Map<string, Set<string>>();
    for (const e of log)
      if (e.route === 'serviceAccounts.apiKeys.create' && e.status !== 429) {
        const name = (e.body as { name?: string } | undefined)?.name ?? '';
        const key = /^keyrotor\.(.+)\.rot-[^.]+$/.exec(name)?.[1] ?? '?';
        names.set(key, (names.get(key) ?? new Set()).add(name));
      }
    const doubles = [...names.values()].filter((s) => s.size > 1).length;
    const rotatedPerWorker = done.map((d) => (d.outcomes as Record<string, number>).rotated ?? 0);
    const rotated = rotatedPerWorker.reduce((a, b) => a + b, 0);
    const keys = w.keys.length;
    const rateBoundS = answered / o.rps;
    return {
      keys,
      workers: o.workers,
      concurrencyPerWorker: o.concurrency,
      latencyMs: o.latencyMs,
      limitRps: o.rps,
      wallS: round(wallS, 1),
      rateBoundS: round(rateBoundS, 1),
      ratio: ratio(wallS, rateBoundS),
      failures: keys - rotated,
      doubleRotations: doubles,
      rotatedPerWorker,
      outcomesPerWorker: done.map((d) => d.outcomes),
      errors: done.map((d) => d.errors),
      firstError: done.map((d) => d.firstError).find(Boolean) ?? null,
      requests: log.length,
      requestsAnswered: answered,
      requests429: rejected,
      share429Percent: round((100 * rejected) / Math.max(1, log.length), 2),
      issuerRequestsPerRotation: round(answered / keys, 2),
      achievedRps: round(answered / wallS, 1),
      peakRssMBPerWorker: peaks,
    };
  } finally {
    await pgServer.close();
  }
}
