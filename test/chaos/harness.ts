/**
 * The SIGKILL harness shared by the chaos suites that spawn the real CLI and kill it (kill.test.ts on
 * the file state backend with file/AWS/GCP stores, backend-kill.test.ts on the PostgreSQL and
 * DynamoDB state backends, consumer-eye.test.ts's few real kills):
 *   - `spawnKillable`: spawn `keyrotor -c <config> ...` and read its JSON log (stderr) line by line, so
 *     a caller can SIGKILL it at a log line; captures its output and reports a printed canary;
 *   - `spawnAndKill`: the same with a seeded kill plan (a stage transition, the n-th request of an
 *     issuer route, a GCP method about to be handled, or a timer once `preflight` is entered);
 *   - `KillLedger`: the violations and counts of one suite, how a result is judged (`settle`), and the
 *     end-of-suite checks every kill suite makes (`finalChecks`: `sweep --dry-run` finds nothing to
 *     delete, `audit verify` passes, no rotation recorded `rotated` twice).
 */
import { spawn } from 'node:child_process';
import { capture } from '../helpers/artifacts.ts';
import { CANARY } from '../canary.ts';
import type { FakeRoute } from '../fakes/openai-admin.ts';
import type { GcpMethod } from '../fakes/gcp-secret-manager.ts';
import { CLI } from '../entrypoints/cli-helpers.ts';
import { noteLeftovers, workingKey, type Backends, type World } from './world.ts';
import { STAGES } from '../../src/core/stages.ts';
import type { KeyResult } from '../../src/app/run.ts';
import type { SweepKeyResult } from '../../src/app/sweep.ts';

/** the forward stages, in order */
export const FORWARD_STAGES: readonly string[] = STAGES;

export type KillPlan =
  /** kill at the `nth` (default 0) time the log shows `stage` entered (or its side effect starting) */
  | { kind: 'transition'; stage: string; start: boolean; nth?: number }
  /** kill when the OpenAI fake receives the `nth` (default 0) request of `route` (it applies it) */
  | { kind: 'request'; route: FakeRoute; nth?: number }
  /** kill when the GCP fake is about to handle `method` */
  | { kind: 'gcp'; method: GcpMethod }
  /** kill `ms` after the log shows `preflight` entered */
  | { kind: 'timer'; ms: number };

export function planName(plan: KillPlan): string {
  switch (plan.kind) {
    case 'transition':
      return `transition:${plan.stage}${plan.start ? ' start' : ''}`;
    case 'request':
      return `request:${plan.route}`;
    case 'gcp':
      return `gcp:${plan.method}`;
    case 'timer':
      return 'timer';
  }
}

/** the fields of a JSON log line the kill points look at */
export interface LogLine {
  stage?: string;
  msg?: string;
}

export interface Spawned {
  /** it died of SIGKILL */
  killed: boolean;
  /** the last stage its log showed entered or starting */
  stage: string;
  stdout: string;
  stderr: string;
  /** its output held the canary secret */
  printedSecret: boolean;
}

/**
 * Spawn the real CLI; `onLine` sees each JSON log line with the stage tracked so far and a `kill()`
 * (SIGKILL, once; a no-op once the child exited). Resolves when the child closed.
 */
export async function spawnKillable(o: {
  configFile: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** names the captured stdout/stderr */
  name: string;
  /** called with kill() right after the spawn (to arm kills on fake-side events) */
  arm?: (kill: () => void) => void;
  onLine?: (l: LogLine, kill: () => void) => void;
}): Promise<Spawned> {
  const child = spawn(process.execPath, [CLI, '-c', o.configFile, ...o.args], {
    env: o.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let buf = '';
  let stage = 'start';
  let killed = false;
  const kill = () => {
    if (killed || child.exitCode !== null) return;
    killed = child.kill('SIGKILL');
  };
  o.arm?.(kill);
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    const text = d.toString();
    stderr += text;
    buf += text;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let l: LogLine;
      try {
        l = JSON.parse(raw) as LogLine;
      } catch {
        continue;
      }
      if (!l.stage) continue;
      if (l.msg === l.stage || l.msg === `${l.stage} start`) stage = l.stage;
      o.onLine?.(l, kill);
    }
  });
  const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_c, s) => resolve(s)));
  capture(`${o.name}-child.stdout`, stdout);
  capture(`${o.name}-child.stderr`, stderr);
  return { killed: signal === 'SIGKILL', stage, stdout, stderr, printedSecret: (stdout + stderr).includes(CANARY) };
}

/** Spawn the real CLI and SIGKILL it at the planned point (null: let it run). */
export async function spawnAndKill(o: {
  configFile: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  name: string;
  b: Backends;
  plan: KillPlan | null;
}): Promise<Spawned> {
  const { b, plan } = o;
  const seen = new Map<string, number>();
  let unlisten: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const r = await spawnKillable({
    ...o,
    arm: (kill) => {
      if (plan?.kind === 'request') {
        let n = 0;
        unlisten = b.openai.onRequest((e) => {
          if (e.route === plan.route && n++ === (plan.nth ?? 0)) kill();
        });
      } else if (plan?.kind === 'gcp') {
        b.gcp!.beforeNext(plan.method, kill);
      }
    },
    onLine: (l, kill) => {
      const entered = l.msg === l.stage;
      const starting = l.msg === `${l.stage} start`;
      if (plan?.kind === 'timer' && entered && l.stage === 'preflight' && !timer) timer = setTimeout(kill, plan.ms);
      if (plan?.kind === 'transition' && l.stage === plan.stage && (plan.start ? starting : entered)) {
        const k = `${l.stage}:${plan.start}`;
        const n = seen.get(k) ?? 0;
        seen.set(k, n + 1);
        if (n === (plan.nth ?? 0)) kill();
      }
    },
  });
  unlisten?.();
  if (timer) clearTimeout(timer);
  if (plan?.kind === 'gcp') b.gcp!.resetKnobs(); // an unused beforeNext hook must not fire later
  return r;
}

/** The first result of a `--json` run's stdout. */
export function resultOf(stdout: string): KeyResult | undefined {
  try {
    return (JSON.parse(stdout) as { results: KeyResult[] }).results[0];
  } catch {
    return undefined;
  }
}

export type Cli = (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** The violations and counts of one kill suite, and how it judges a result. */
export class KillLedger {
  readonly violations: string[] = [];
  readonly outcomes: Record<string, number> = {};
  readonly byPlan: Record<string, number> = {};
  readonly byStage: Record<string, number> = {};
  kills = 0;
  finishedBeforeKill = 0;
  readonly seed: number;
  readonly debug: boolean;
  constructor(seed: number, debug = false) {
    this.seed = seed;
    this.debug = debug;
  }

  /** record each of `v` as a violation of `who` at `where` */
  violation(who: string, where: string, v: string[], detail: string): void {
    for (const x of v) this.violations.push(`[seed ${this.seed}] ${who} ${where}: ${x} (${detail})`);
  }

  /** a kill landed: count it by plan and by the stage the child was in */
  killed(plan: KillPlan, stage: string): void {
    this.kills++;
    this.byPlan[plan.kind] = (this.byPlan[plan.kind] ?? 0) + 1;
    this.byStage[stage] = (this.byStage[stage] ?? 0) + 1;
  }

  /** the forward stages no kill has landed in yet */
  missingStages(stages: readonly string[] = FORWARD_STAGES): string[] {
    return stages.filter((s) => !((this.byStage[s] ?? 0) > 0));
  }

  /**
   * Take a finished rotation's result into account: it must end rotated, rolled_back,
   * needs_attention (with a reason) or skipped; a leak rotation that ended rotated must have killed
   * the leaked key; a needs_attention result's leftovers are remembered.
   */
  settle(w: World, b: Backends, r: KeyResult, detail: string, who = w.key): void {
    if (r.rotationId && r.finishedAt) w.seenResults.add(`${r.rotationId}@${r.finishedAt}`);
    w.needsAttention = r.outcome === 'needs_attention' || (w.needsAttention && r.outcome !== 'rotated');
    this.outcomes[r.outcome] = (this.outcomes[r.outcome] ?? 0) + 1;
    if (this.debug && r.outcome !== 'rotated')
      console.log(
        `${who} ${detail}: ${JSON.stringify({ outcome: r.outcome, error: r.error, leftovers: r.leftovers })}`,
      );
    const bad: string[] = [];
    if (!['rotated', 'rolled_back', 'needs_attention', 'skipped'].includes(r.outcome))
      bad.push(`ended ${r.outcome}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`);
    if ((r.outcome === 'rolled_back' || r.outcome === 'needs_attention') && !r.error && !r.leftovers?.length)
      bad.push(`${r.outcome} without a reason`);
    if (r.outcome === 'rotated') {
      w.bootstrapped = true;
      if (w.leak && r.leaked && workingKey(b, w.leak.value))
        bad.push(`leak rotation ${r.rotationId} ended rotated but the leaked key still works`);
    }
    if (r.outcome === 'needs_attention') noteLeftovers(b, w, r.leftovers);
    this.violation(who, `result ${r.rotationId}`, bad, detail);
  }

  /**
   * A process killed right after recording its result never printed it: take the state store's last
   * result (what `keyrotor status` shows an operator) into account once.
   */
  absorbLast(w: World, b: Backends, last: KeyResult | null | undefined, detail: string, who = w.key): void {
    if (last?.rotationId && !w.seenResults.has(`${last.rotationId}@${last.finishedAt}`))
      this.settle(w, b, last, `${detail} (result read from the state store)`, who);
  }

  /**
   * The end of a kill suite: `sweep --dry-run` of each key has nothing to delete; `audit verify`
   * passes (every audit record was committed with its snapshot, or not at all); no rotation recorded
   * `rotated` more than once. `cli(w)` runs the CLI in process for a world.
   */
  async finalChecks(
    worlds: readonly World[],
    cli: (w: World) => Cli,
    who: (w: World) => string,
    expectOk: (code: number, stderr: string) => void,
  ): Promise<void> {
    for (const w of worlds) {
      const dry = await cli(w)(['sweep', '--dry-run', w.key, '--json']);
      expectOk(dry.code, dry.stderr);
      const res = (JSON.parse(dry.stdout) as { keys: SweepKeyResult[] }).keys[0]!;
      this.violation(
        who(w),
        'final sweep --dry-run',
        res.entries.filter((e) => e.action !== 'kept').map((e) => `would delete ${e.keyId} (${e.reason})`),
        'end',
      );
    }
    const first = worlds[0]!;
    const verified = await cli(first)(['audit', 'verify', '--json']);
    if (verified.code !== 0) this.violation(who(first), 'audit verify', [verified.stdout.slice(0, 600)], 'end');
    const history = await cli(first)(['history', '--json']);
    const { rotations } = JSON.parse(history.stdout || '{"rotations":[]}') as {
      rotations: { rotationId: string | null; stages: { state: string }[] }[];
    };
    for (const h of rotations)
      if (h.rotationId && h.stages.filter((x) => x.state === 'rotated').length > 1)
        this.violation(who(first), 'history', [`${h.rotationId} recorded "rotated" more than once`], 'end');
  }
}
