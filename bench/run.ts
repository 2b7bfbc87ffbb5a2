/**
 * `npm run bench`: keyrotor against the floor, side by side in one run, as ratios (so the numbers hold
 * on a noisy machine). Prints a table of P1-P5 and writes every figure to bench/results.json.
 * It measures, it does not judge: the exit code is 0 whether or not a target is met (a section that
 * cannot run is reported with its error).
 *
 *   P1  overhead: median wall time of a full rotation vs. a straight-line script making the same SDK
 *       calls with the same clients (per store; target <= 1.10)
 *   P2  provider requests per rotation per store vs. a documented minimum (target: equal)
 *   P3  fleet: 1,000 keys / 10 projects, 20 ms per request, issuer limited to 50 requests/s
 *       (targets <= 1.2x bound, 0 failures, <= 1% 429s)
 *   P3 fleet  the same 1,000 keys rotated by 3 worker processes claiming due keys in one PostgreSQL
 *       backend, the issuer limited the same (targets <= 1.2x bound, 0 failures, 0 double rotations)
 *   P4  cold start: Lambda handler ready and `keyrotor --help` (through the installed bin, and from
 *       source) vs `node -e 0`, median of >= 10 runs
 *       (targets <= 2.5x and <= 2x)
 *   P5  1,000 rotations waiting at a gate: peak RSS of a worker (target <= 256 MB); the waits are
 *       durable (parked by one worker process, continued by another), not live actors
 *   P6  leak response: `rotate --now --leaked` as a new process until the old key is rejected, 200 ms per
 *       issuer request, file store and a 4-store fan-out, vs. node start + create + verify + delete +
 *       check (target <= 1.2x); `--revoke-first` vs. node start + delete + check
 *
 * Knobs (environment): BENCH_ONLY=p1,p4 (a subset; the sections not run keep their figures from the last
 * results.json, marked `carried`), BENCH_QUICK=1 (smaller sizes, for trying it out;
 * not for the README), BENCH_KEEP=1 (keep the temp dir), BENCH_P3_KEYS, BENCH_P1_ROUNDS, BENCH_P4_RUNS,
 * BENCH_P6_RUNS, BENCH_P6_BASE (another checkout, its dist/pkg built: its `--leaked` runs interleaved as a baseline).
 */
import { registerHooks } from 'node:module';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CANARY } from '../test/canary.ts';
import { runP1 } from './lib/p1-overhead.ts';
import { runP1State } from './lib/p1-state.ts';
import { runP4 } from './lib/p4-coldstart.ts';
import { runP6 } from './lib/p6-leak.ts';
import { createFleetWorld, runP3, runP5, type FleetWorld } from './lib/p3-fleet.ts';
import { runP3Fleet } from './lib/p3-pg-fleet.ts';
import { postgresSupport } from '../test/fakes/postgres.ts';
import { benchTmp, fastTmp, filesContaining, fmtMs, machine, progress, round } from './lib/util.ts';

// The Azure store is built with a stub credential and the fake's CA in this process (see azure-shim.ts).
const AZURE_SHIM = new URL('./lib/azure-shim.ts', import.meta.url).href;
registerHooks({
  resolve(specifier, context, nextResolve) {
    const r = nextResolve(specifier, context);
    return r.url.endsWith('/providers/stores/azure-key-vault/index.ts')
      ? { ...r, url: AZURE_SHIM, shortCircuit: true }
      : r;
  },
});

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const env = process.env;
const quick = env.BENCH_QUICK === '1';
const only = new Set(
  (env.BENCH_ONLY ?? 'p1,p2,p3,p3fleet,p4,p5,p6')
    .toLowerCase()
    .split(',')
    .map((s) => s.trim()),
);
const int = (v: string | undefined, d: number) => (v && Number.isInteger(Number(v)) && Number(v) > 0 ? Number(v) : d);
const SIZES = {
  p1Rounds: int(env.BENCH_P1_ROUNDS, quick ? 4 : 10),
  p1Warmup: 1,
  p3Keys: int(env.BENCH_P3_KEYS, quick ? 200 : 1000),
  p3Projects: 10,
  p3LatencyMs: 20,
  p3Rps: 50,
  p3Concurrency: 32,
  p3FleetWorkers: 3,
  p3FleetConcurrency: 16,
  p4Runs: int(env.BENCH_P4_RUNS, 10),
  p5Concurrency: int(env.BENCH_P5_CONCURRENCY, 32),
  p6Runs: int(env.BENCH_P6_RUNS, quick ? 3 : 7),
  p6LatencyMs: 200,
};
const TARGETS = {
  p1Ratio: 1.1,
  p3Ratio: 1.2,
  p3Failures: 0,
  p3Share429Percent: 1,
  p4Lambda: 2.5,
  p4Help: 2,
  p5PeakMB: 256,
  p6Ratio: 1.2,
  p6RevokeFirstRatio: 1.2,
};

// loopback fakes only: no metadata servers, no real clouds
Object.assign(process.env, {
  AWS_EC2_METADATA_DISABLED: 'true',
  METADATA_SERVER_DETECTION: 'none',
  AWS_ACCESS_KEY_ID: 'test',
  AWS_SECRET_ACCESS_KEY: 'test',
});

type Section<T> = { ok: true; value: T; seconds: number } | { ok: false; error: string; seconds: number };
async function section<T>(name: string, fn: () => Promise<T>): Promise<Section<T>> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ok: true, value, seconds: round((performance.now() - t0) / 1000, 1) };
  } catch (e) {
    const error = e instanceof Error ? e.message.split('\n')[0]! : String(e);
    progress(`${name} failed: ${error}`);
    return { ok: false, error, seconds: round((performance.now() - t0) / 1000, 1) };
  }
}

const started = performance.now();
const startedAt = new Date();
const loadAtStart = machine().loadAverage;
const tmp = benchTmp();
progress(`temp dir ${tmp}${quick ? ' (BENCH_QUICK: reduced sizes)' : ''}`);

const p4 = only.has('p4') ? await section('P4', () => runP4({ root: ROOT, tmp, runs: SIZES.p4Runs })) : undefined;
const p6 = only.has('p6')
  ? await section('P6', () =>
      runP6({ root: ROOT, tmp, runs: SIZES.p6Runs, latencyMs: SIZES.p6LatencyMs, baseRoot: env.BENCH_P6_BASE }),
    )
  : undefined;
const p1 =
  only.has('p1') || only.has('p2')
    ? await section('P1/P2', () => runP1({ tmp, pairs: SIZES.p1Rounds, warmup: SIZES.p1Warmup }))
    : undefined;
const p1s =
  only.has('p1') || only.has('p1s')
    ? await section('P1 per state backend', () =>
        runP1State({ tmp, rounds: 3 * SIZES.p1Rounds, warmup: SIZES.p1Warmup }),
      )
    : undefined;
// P3 on the temp dir's disk (fsync costs are part of a fleet run); P5 measures memory, not time, so
// its world lives on tmpfs when there is one, to keep the bench short (page cache is not process RSS)
const worlds: { p3?: FleetWorld; p3fleet?: FleetWorld; p5?: FleetWorld } = {};
const p3World = only.has('p3')
  ? await section('P3 setup', async () => {
      progress(`P3: seeding ${SIZES.p3Keys} keys across ${SIZES.p3Projects} projects`);
      worlds.p3 = await createFleetWorld(tmp, SIZES.p3Keys, SIZES.p3Projects);
      return { keys: SIZES.p3Keys };
    })
  : undefined;
const p3 = worlds.p3
  ? await section('P3', () =>
      runP3({ world: worlds.p3!, rps: SIZES.p3Rps, latencyMs: SIZES.p3LatencyMs, concurrency: SIZES.p3Concurrency }),
    )
  : undefined;
await worlds.p3?.close();
// P3 fleet: the same world, three workers on one PostgreSQL backend (needs a PostgreSQL server binary)
const p3FleetWorld =
  only.has('p3fleet') && postgresSupport().available
    ? await section('P3 fleet setup', async () => {
        progress(`P3 fleet: seeding ${SIZES.p3Keys} keys across ${SIZES.p3Projects} projects`);
        worlds.p3fleet = await createFleetWorld(path.join(tmp, 'p3fleet'), SIZES.p3Keys, SIZES.p3Projects);
        return { keys: SIZES.p3Keys };
      })
    : undefined;
const p3fleet = worlds.p3fleet
  ? await section('P3 fleet', () =>
      runP3Fleet({
        world: worlds.p3fleet!,
        rps: SIZES.p3Rps,
        latencyMs: SIZES.p3LatencyMs,
        concurrency: SIZES.p3FleetConcurrency,
        workers: SIZES.p3FleetWorkers,
      }),
    )
  : undefined;
await worlds.p3fleet?.close();
const p5Tmp = fastTmp(tmp);
const p5World = only.has('p5')
  ? await section('P5 setup', async () => {
      progress(`P5: seeding ${SIZES.p3Keys} keys in ${p5Tmp}`);
      worlds.p5 = await createFleetWorld(p5Tmp, SIZES.p3Keys, SIZES.p3Projects);
      return { keys: SIZES.p3Keys };
    })
  : undefined;
const p5 = worlds.p5
  ? await section('P5', () => runP5({ world: worlds.p5!, concurrency: SIZES.p5Concurrency }))
  : undefined;
await worlds.p5?.close();

// ------------------------------------------------------------------ results

const totalS = round((performance.now() - started) / 1000, 1);
const canaryHits = [...filesContaining(tmp, CANARY), ...(p5Tmp !== tmp ? filesContaining(p5Tmp, CANARY) : [])];
const results = {
  date: startedAt.toISOString(),
  machine: { ...machine(), loadAverageAtStart: loadAtStart },
  quick,
  sizes: SIZES,
  targets: TARGETS,
  durationS: totalS,
  p1: p1 ? (p1.ok ? { seconds: p1.seconds, ...p1.value } : p1) : null,
  p1State: p1s ? (p1s.ok ? { seconds: p1s.seconds, ...p1s.value } : p1s) : null,
  p3: p3 ? (p3.ok ? { seconds: p3.seconds, ...p3.value } : p3) : p3World && !p3World.ok ? p3World : null,
  p3fleet: p3fleet
    ? p3fleet.ok
      ? { seconds: p3fleet.seconds, ...p3fleet.value }
      : p3fleet
    : p3FleetWorld && !p3FleetWorld.ok
      ? p3FleetWorld
      : only.has('p3fleet')
        ? { error: `skipped: ${postgresSupport().reason ?? 'no PostgreSQL server'}` }
        : null,
  p4: p4 ? (p4.ok ? { seconds: p4.seconds, ...p4.value } : p4) : null,
  p5: p5
    ? p5.ok
      ? { seconds: p5.seconds, ...p5.value, storage: p5Tmp === tmp ? 'temp dir' : 'tmpfs' }
      : p5
    : p5World && !p5World.ok
      ? p5World
      : null,
  canary: { scanned: 'every file the bench wrote (logs, state, stores, configs)', filesContainingCanary: canaryHits },
};
const out = path.join(ROOT, 'bench', 'results.json');
// a subset run keeps the other sections' figures from the last run (marked with the date they are from)
const previous = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>) : {};
const keep = (name: string, value: unknown) => {
  if (value !== null && value !== undefined) return value;
  const old = previous[name] as Record<string, unknown> | null | undefined;
  if (!old) return null;
  return { ...old, carried: (old.carried as string | undefined) ?? (previous.date as string | undefined) ?? 'unknown' };
};
const json =
  JSON.stringify(
    {
      ...results,
      p1: keep('p1', results.p1),
      p3: keep('p3', results.p3),
      p4: keep('p4', results.p4),
      p5: keep('p5', results.p5),
      p6: keep('p6', p6 ? (p6.ok ? { seconds: p6.seconds, ...p6.value } : p6) : null),
    },
    null,
    2,
  ) + '\n';
if (json.includes(CANARY)) throw new Error('bench: refusing to write results.json: it contains the canary secret');
writeFileSync(out, json);
if (env.BENCH_KEEP !== '1') for (const d of new Set([tmp, p5Tmp])) rmSync(d, { recursive: true, force: true });

// ------------------------------------------------------------------ table

const lines: string[] = [];
const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
const row = (cells: string[], widths: number[]) =>
  cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
const W = [46, 11, 11, 7, 8, 7];
const m = results.machine;
lines.push(
  `keyrotor bench  ${results.date.slice(0, 16).replace('T', ' ')} UTC  ${m.cpus} x ${m.cpuModel}, ${m.memoryGB} GB, ${m.os}, Node ${m.node}${m.loadAverageAtStart ? `, load average ${m.loadAverageAtStart[0]} at start, ${m.loadAverage?.[0]} at end` : ''}`,
);
lines.push(`total ${totalS} s${quick ? '  (BENCH_QUICK: reduced sizes, not for the README)' : ''}`);
lines.push('');
if (p1) {
  lines.push(row(['P1 full rotation, median (keyrotor vs floor)', 'keyrotor', 'floor', 'ratio', 'target', ''], W));
  if (p1.ok) {
    for (const s of p1.value.perStore) {
      lines.push(
        row(
          [
            `  ${s.store}`,
            fmtMs(s.keyrotorMs),
            fmtMs(s.floorMs),
            s.ratio.toFixed(2),
            `<= ${TARGETS.p1Ratio}`,
            mark(s.ratio <= TARGETS.p1Ratio),
          ],
          W,
        ),
      );
    }
    lines.push('  where the time goes (same rotations, parts switched off):');
    for (const s of p1.value.perStore) {
      lines.push(
        row(
          [
            `    ${s.store}: without observers (audit, metrics)`,
            fmtMs(s.keyrotorNoObserversMs),
            fmtMs(s.floorMs),
            s.ratioNoObservers.toFixed(2),
            '',
            '',
          ],
          W,
        ),
      );
      lines.push(
        row(
          [
            `    ${s.store}: + state in memory (no snapshots)`,
            fmtMs(s.keyrotorMemStateMs),
            fmtMs(s.floorMs),
            s.ratioMemState.toFixed(2),
            '',
            '',
          ],
          W,
        ),
      );
    }
    for (const n of p1.value.notes) lines.push(`  note: ${n}`);
    lines.push('');
    lines.push(row(['P2 provider requests per rotation', 'keyrotor', 'minimum', '', 'target', ''], W));
    const iss = p1.value.perStore[0]?.requests.issuer;
    if (iss)
      lines.push(
        row(
          [
            '  issuer (OpenAI Admin API + /v1/models)',
            String(iss.keyrotor),
            String(iss.minimum),
            '',
            'equal',
            mark(iss.keyrotor === iss.minimum),
          ],
          W,
        ),
      );
    for (const s of p1.value.perStore) {
      const r = s.requests.store;
      lines.push(
        row(
          [
            `  ${s.store} store`,
            String(r.keyrotor),
            String(r.minimum.requests),
            '',
            'equal',
            mark(r.keyrotor === r.minimum.requests),
          ],
          W,
        ),
      );
    }
    const st = p1.value.perStore[0];
    if (st)
      lines.push(
        `  + keyrotor's own files per rotation: state ${st.stateFileWrites} file opens for writing + ${st.stateFileReads} reads; audit trail ${st.auditFileWrites} file opens for writing`,
      );
  } else lines.push(`  error: ${p1.error}`);
  lines.push('');
}
if (p1s) {
  lines.push(row(['P1 per state backend (file secret store)', 'keyrotor', 'floor', 'ratio', 'target', ''], W));
  if (p1s.ok) {
    for (const b of p1s.value.perBackend)
      lines.push(
        row(
          [
            `  ${b.backend} (${b.durableWrites} durable writes)`,
            fmtMs(b.keyrotorMs),
            fmtMs(p1s.value.floorMs),
            b.ratio.toFixed(2),
            b.backend === 'file' ? `<= ${TARGETS.p1Ratio}` : '',
            b.backend === 'file' ? mark(b.ratio <= TARGETS.p1Ratio) : '',
          ],
          W,
        ),
      );
    const d = p1s.value.durableFloor;
    lines.push(
      row(
        [
          `  floor + ${d.fsyncs} fsync'd appends (one per transition)`,
          fmtMs(d.ms),
          fmtMs(p1s.value.floorMs),
          d.ratio.toFixed(2),
          '',
          '',
        ],
        W,
      ),
    );
    lines.push(
      `    one of those fsyncs took ${d.fsyncMs} ms (median): ${d.fsyncs} of them are ${d.fsyncsShareOfFloor}x the floor's time`,
    );
    for (const n of p1s.value.notes) lines.push(`  note: ${n}`);
  } else lines.push(`  error: ${p1s.error}`);
  lines.push('');
}
if (p3) {
  lines.push(
    row(
      [
        `P3 fleet ${SIZES.p3Keys} keys / ${SIZES.p3Projects} projects, ${SIZES.p3Rps}/s, ${SIZES.p3LatencyMs} ms`,
        'wall',
        'bound',
        'ratio',
        'target',
        '',
      ],
      W,
    ),
  );
  if (p3.ok) {
    const v = p3.value;
    lines.push(
      row(
        [
          '  wall time vs bound',
          `${v.wallS} s`,
          `${v.boundS} s`,
          v.ratio.toFixed(2),
          `<= ${TARGETS.p3Ratio}`,
          mark(v.ratio <= TARGETS.p3Ratio),
        ],
        W,
      ),
    );
    lines.push(row(['  failures', String(v.failures), '', '', '0', mark(v.failures === 0)], W));
    lines.push(
      row(
        [
          '  429 share of issuer requests',
          `${v.share429Percent}%`,
          '',
          '',
          '<= 1%',
          mark(v.share429Percent <= TARGETS.p3Share429Percent),
        ],
        W,
      ),
    );
    lines.push(
      `  ${v.requestsAnswered} issuer requests answered (${v.issuerRequestsPerRotation}/rotation), ${v.requests429} x 429, busiest second ${v.busiestSecond} requests, ${v.achievedRps}/s achieved, concurrency ${v.concurrency}`,
    );
  } else lines.push(`  error: ${p3.error}`);
  lines.push('');
}
if (p3fleet) {
  lines.push(
    row(
      [
        `P3 fleet: ${SIZES.p3FleetWorkers} workers on PostgreSQL, ${SIZES.p3Keys} keys`,
        'wall',
        'bound',
        'ratio',
        'target',
        '',
      ],
      W,
    ),
  );
  if (p3fleet.ok) {
    const v = p3fleet.value;
    lines.push(
      row(
        [
          '  wall time vs rate-limit bound',
          `${v.wallS} s`,
          `${v.rateBoundS} s`,
          v.ratio.toFixed(2),
          `<= ${TARGETS.p3Ratio}`,
          mark(v.ratio <= TARGETS.p3Ratio),
        ],
        W,
      ),
    );
    lines.push(row(['  failures', String(v.failures), '', '', '0', mark(v.failures === 0)], W));
    lines.push(row(['  double rotations', String(v.doubleRotations), '', '', '0', mark(v.doubleRotations === 0)], W));
    lines.push(
      `  ${v.requestsAnswered} issuer requests answered (${v.issuerRequestsPerRotation}/rotation), ${v.requests429} x 429 (${v.share429Percent}%), ${v.achievedRps}/s achieved; rotated per worker ${v.rotatedPerWorker.join(' / ')}, concurrency ${v.concurrencyPerWorker} each`,
    );
  } else lines.push(`  error: ${p3fleet.error}`);
  lines.push('');
}
if (p4) {
  lines.push(row([`P4 cold start, median of ${SIZES.p4Runs} runs`, 'command', 'node -e 0', 'ratio', 'target', ''], W));
  if (p4.ok) {
    const node = p4.value.results.find((r) => r.id === 'node')!;
    for (const r of p4.value.results) {
      if (r.id === 'node') continue;
      const target = r.id === 'lambda' ? TARGETS.p4Lambda : r.id === 'helpBin' ? TARGETS.p4Help : undefined;
      const short: Record<string, string> = {
        helpBin: 'keyrotor --help, installed bin (dist/pkg)',
        helpBinNoCache: '  installed bin, no compile cache (first run)',
        help: 'keyrotor --help from source (cli.ts)',
        lambda: `Lambda handler ready (${p4.value.lambdaMeasured.startsWith('bundle') ? 'dist bundle' : 'source, no bundle'})`,
        helpBundle: `keyrotor --help, ${p4.value.cliBundle ?? 'bundle'}`,
        helpBundleCache: '  with NODE_COMPILE_CACHE',
        helpCache: '  with NODE_COMPILE_CACHE',
        lambdaCache: '  Lambda with NODE_COMPILE_CACHE',
        helpBenchBundle: '  esbuild bundle of the CLI (bench-built)',
        helpBenchBundleCache: '  bench bundle + NODE_COMPILE_CACHE',
      };
      const label = `  ${short[r.id] ?? r.label}${r.main ? '' : ` (${r.runs} runs)`}`;
      lines.push(
        row(
          [
            label.slice(0, W[0]),
            fmtMs(r.medianMs),
            fmtMs(node.medianMs),
            r.ratioToNode.toFixed(2),
            target ? `<= ${target}` : '',
            target ? mark(r.ratioToNode <= target) : '',
          ],
          W,
        ),
      );
    }
  } else lines.push(`  error: ${p4.error}`);
  lines.push('');
}
if (p5) {
  lines.push(row([`P5 memory, ${SIZES.p3Keys} rotations waiting at a gate`, 'peak RSS', '', '', 'target', ''], W));
  if (p5.ok) {
    const v = p5.value;
    const all = (o: Record<string, number>, outcome: string) => (o[outcome] ?? 0) === v.wanted;
    for (const r of v.runs) {
      for (const [label, phase, outcome] of [
        [`  ${r.variant}, worker 1: start + park all`, r.park, 'waiting'],
        [`  ${r.variant}, worker 2: continue all`, r.continue, 'rotated'],
      ] as const) {
        lines.push(
          row(
            [
              label.slice(0, W[0]),
              `${phase.peakRssMB} MB`,
              `${phase.cpuS ?? '?'} s CPU`,
              '',
              `<= ${TARGETS.p5PeakMB} MB`,
              mark(phase.peakRssMB <= TARGETS.p5PeakMB && all(phase.outcomes, outcome)),
            ],
            W,
          ),
        );
      }
      const err = r.park.firstError ?? r.continue.firstError;
      lines.push(
        `    ${r.flags.length ? `node ${r.flags.join(' ')}` : 'no heap flags'}; worker 1 ${r.park.wallS} s, ${JSON.stringify(r.park.outcomes)}, ${r.park.parkedInStore} parked in the store; worker 2 ${r.continue.wallS} s, ${JSON.stringify(r.continue.outcomes)}, ${r.continue.stillActive} left unfinished${err ? `; first error: ${err}` : ''}`,
      );
    }
    lines.push(`  concurrency ${v.concurrency} per worker; gate ${JSON.stringify(v.gate)}; defaults.park.after 30s`);
  } else lines.push(`  error: ${p5.error}`);
  lines.push('');
}
if (p6) {
  lines.push(
    row(
      [`P6 leak response, ${SIZES.p6LatencyMs} ms per issuer request`, 'old key', 'critical', 'ratio', 'target', ''],
      W,
    ),
  );
  if (p6.ok) {
    const v = p6.value;
    const line = (label: string, x: typeof v.file, target: number) =>
      lines.push(
        row(
          [
            label,
            fmtMs(x.oldKeyDeadMs),
            fmtMs(x.criticalPathMs),
            x.ratio.toFixed(2),
            `<= ${target}`,
            mark(x.ratio <= target),
          ],
          W,
        ),
      );
    line('  --leaked, file store: until old key rejected', v.file, TARGETS.p6Ratio);
    line(`  --leaked, ${v.fanoutStores}-store fan-out`, v.fanout, TARGETS.p6Ratio);
    line('  --leaked --revoke-first, file store', v.revokeFirst, TARGETS.p6RevokeFirstRatio);
    lines.push(
      `  critical path = node -e 0 (${fmtMs(v.nodeStartMs)}) + create, verify, delete, check (${fmtMs(v.floorFourRequestsMs)}); revoke-first: + delete, check (${fmtMs(v.floorDeleteAndCheckMs)})`,
    );
    lines.push(
      `  issuer requests per leak rotation: file ${v.file.requests}, fan-out ${v.fanout.requests}, revoke-first ${v.revokeFirst.requests}; before the create ${v.file.requestsBeforeFirstWrite}, before the revoke-first delete ${v.revokeFirst.requestsBeforeFirstWrite}; consumers without a key (revoke-first) ${fmtMs(v.revokeFirst.consumersWithoutKeyMs ?? NaN)}; median of ${v.runs}`,
    );
    if (v.base) {
      line(`  baseline ${path.basename(v.base.root)}: --leaked, file store`, v.base.file, TARGETS.p6Ratio);
      line(`  baseline ${path.basename(v.base.root)}: --leaked, fan-out`, v.base.fanout, TARGETS.p6Ratio);
      lines.push(
        `  baseline issuer requests per leak rotation: file ${v.base.file.requests}, fan-out ${v.base.fanout.requests}`,
      );
    }
    for (const n of v.notes) lines.push(`  note: ${n}`);
  } else lines.push(`  error: ${p6.error}`);
  lines.push('');
}
lines.push(
  `canary scan of everything the bench wrote: ${canaryHits.length === 0 ? 'clean' : `FOUND in ${canaryHits.join(', ')}`}`,
);
lines.push(`all figures: ${path.relative(process.cwd(), out) || out}`);
process.stdout.write(lines.join('\n') + '\n');
process.exit(0);
