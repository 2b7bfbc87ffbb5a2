import type { ResolvedKey } from '../../app/config/schema.ts';
import type { KeyRecord } from '../../core/ports.ts';
import { isDue } from '../../app/run.ts';
import type { CommandContext } from './context.ts';

/** What a key is waiting for in an unfinished rotation (from its saved snapshot; references only). */
export interface Waiting {
  /** verify (the new key to work), gate (a health gate), revokeRetry (backoff), verifyRevoked (the old key to die) */
  what: 'verify' | 'gate' | 'revokeRetry' | 'verifyRevoked';
  name?: string;
  deadline: string | null;
}

export interface KeyStatus {
  name: string;
  currentKeyId: string | null;
  lastRotatedAt: string | null;
  nextDueAt: string | null;
  due: boolean;
  lastOutcome: string | null;
  /** id of an unfinished rotation (kept for compatibility; see `active`) */
  activeRotation: string | null;
  /** ms since the last rotation (null: never rotated) */
  ageMs: number | null;
  scheduleEveryMs: number;
  /** ms past nextDueAt (0 when not overdue) */
  overdueMs: number;
  lastRotationId: string | null;
  lastFinishedAt: string | null;
  lastError: { code: string; message: string; stage?: string } | null;
  leftovers: string[];
  active: {
    rotationId: string;
    stage: string | null;
    updatedAt: string;
    leaked: boolean;
    waiting: Waiting[];
    /** parked (a durable wait): no process holds it; any worker continues it from this time (ISO) */
    wakeAt: string | null;
  } | null;
}

export function keyStatus(k: ResolvedKey, rec: KeyRecord | null, now: number): KeyStatus {
  const due = isDue(k, rec, now);
  const last = rec?.last ?? null;
  const ageMs = rec?.lastRotatedAt ? Math.max(0, now - Date.parse(rec.lastRotatedAt)) : null;
  return {
    name: k.name,
    currentKeyId: rec?.currentKeyId ?? null,
    lastRotatedAt: rec?.lastRotatedAt ?? null,
    nextDueAt: due.nextDueAt,
    due: due.due,
    lastOutcome: last?.outcome ?? null,
    activeRotation: rec?.active?.rotationId ?? null,
    ageMs,
    scheduleEveryMs: k.schedule.every,
    overdueMs: due.nextDueAt ? Math.max(0, now - Date.parse(due.nextDueAt)) : 0,
    lastRotationId: last?.rotationId ?? null,
    lastFinishedAt: last?.finishedAt ?? null,
    lastError: last?.error
      ? { code: last.error.code, message: last.error.message, ...(last.error.stage ? { stage: last.error.stage } : {}) }
      : null,
    leftovers: last?.leftovers ?? [],
    active: rec?.active
      ? activeOf(rec.active.rotationId, rec.active.updatedAt, rec.active.snapshot, rec.active.wakeAt)
      : null,
  };
}

function activeOf(
  rotationId: string,
  updatedAt: string,
  snapshot: unknown,
  wakeAt: string | undefined,
): NonNullable<KeyStatus['active']> {
  const s = (snapshot ?? {}) as { value?: unknown; context?: Record<string, unknown> };
  const stage = typeof s.value === 'string' ? s.value : null;
  const c = s.context ?? {};
  const deadlines = (c.deadlines ?? {}) as {
    verify?: unknown;
    confirm?: unknown;
    verifyRevoked?: unknown;
    revokeRetryAt?: unknown;
  };
  const iso = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? new Date(v).toISOString() : null);
  const waiting: Waiting[] = [];
  if (stage === 'verify') waiting.push({ what: 'verify', deadline: iso(deadlines.verify) });
  if (stage === 'confirm') {
    const names = Array.isArray(c.gateNames) ? (c.gateNames as unknown[]) : [];
    const dl = Array.isArray(deadlines.confirm) ? (deadlines.confirm as unknown[]) : [];
    names.forEach((n, i) => waiting.push({ what: 'gate', name: String(n), deadline: iso(dl[i]) }));
  }
  if (stage === 'revokeRetry') waiting.push({ what: 'revokeRetry', deadline: iso(deadlines.revokeRetryAt) });
  if (stage === 'verifyRevoked') waiting.push({ what: 'verifyRevoked', deadline: iso(deadlines.verifyRevoked) });
  return { rotationId, stage, updatedAt, leaked: c.leaked === true, waiting, wakeAt: wakeAt ?? null };
}

/** `keyrotor status` (declared in index.ts; this module is loaded when the command runs) */
export async function runStatus(ctx: CommandContext, names: string[], opts: { json?: boolean }): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const stateStore = await ctx.stateStore(cfg);
  const { colorEnabled } = await import('../../app/preflight.ts');
  const now = Date.now();
  const keys: KeyStatus[] = [];
  for (const k of ctx.pickKeys(cfg, names)) keys.push(keyStatus(k, await stateStore.read(k.name), now));
  ctx.io.stdout(
    opts.json ? JSON.stringify({ keys }, null, 2) + '\n' : renderStatus(keys, now, colorEnabled(ctx.io.env)),
  );
}

// ---------------------------------------------------------------- rendering

function span(ms: number): string {
  const m = Math.floor(ms / 60_000);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

// eslint-disable-next-line no-control-regex -- matches ANSI colour escapes
const ANSI = /\u001b\[[0-9;]*m/g;
const visible = (s: string) => s.replace(ANSI, '').length;

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c + ' '.repeat(Math.max(0, widths[i]! - visible(c))))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

const OUTCOME_COLOR: Record<string, string> = {
  rotated: '32',
  rolled_back: '33',
  needs_attention: '31',
  locked: '33',
  in_progress: '36',
  waiting: '36',
};

export function renderStatus(keys: KeyStatus[], now: number, color = false): string {
  const c = (code: string | undefined, s: string) => (color && code ? `\u001b[${code}m${s}\u001b[0m` : s);
  const rows = keys.map((k) => {
    const age = k.ageMs === null ? `- / ${span(k.scheduleEveryMs)}` : `${span(k.ageMs)} / ${span(k.scheduleEveryMs)}`;
    const ageColor =
      k.ageMs === null
        ? undefined
        : k.ageMs > k.scheduleEveryMs
          ? '31'
          : k.ageMs > k.scheduleEveryMs * 0.8
            ? '33'
            : '32';
    const next = k.due
      ? c('31', k.lastRotatedAt ? `now (overdue ${span(k.overdueMs)})` : 'now (never rotated)')
      : k.nextDueAt
        ? `in ${span(Date.parse(k.nextDueAt) - now)} (${k.nextDueAt.slice(0, 16)}Z)`
        : '-';
    const last = k.lastOutcome
      ? c(OUTCOME_COLOR[k.lastOutcome], k.lastOutcome) +
        (k.lastFinishedAt ? ` ${span(now - Date.parse(k.lastFinishedAt))} ago` : '')
      : '-';
    const parked = k.active?.wakeAt ? `, parked until ${k.active.wakeAt.slice(0, 19)}Z` : '';
    const active = k.active ? c('36', `${k.active.stage ?? 'unfinished'} (${k.active.rotationId}${parked})`) : '-';
    return [
      k.name,
      k.currentKeyId ?? '-',
      k.lastRotatedAt ? `${k.lastRotatedAt.slice(0, 16)}Z` : 'never',
      next,
      last,
      c(ageColor, age),
      active,
    ];
  });
  let out = table(
    ['KEY', 'CURRENT KEY ID', 'LAST ROTATED', 'NEXT DUE', 'LAST OUTCOME', 'AGE / SCHEDULE', 'UNFINISHED'],
    rows,
  );
  const notes: string[] = [];
  for (const k of keys) {
    if (k.active) {
      const waits = k.active.waiting.map((w) => {
        const until = w.deadline ? ` until ${w.deadline}` : '';
        if (w.what === 'gate') return `waiting for gate "${w.name}"${until}`;
        if (w.what === 'verify') return `waiting for the new key to work${until}`;
        if (w.what === 'revokeRetry') return `retrying the revoke of the old key at ${w.deadline ?? '?'}`;
        return `waiting for the old key to die${until}`;
      });
      const wake = k.active.wakeAt;
      const how = !wake
        ? `\`keyrotor resume ${k.name}\` continues it`
        : Date.parse(wake) > now
          ? `parked until ${wake}: no process holds it; the next worker run from then checks it again (\`keyrotor resume --now ${k.name}\` at once)`
          : `parked until ${wake} (due now): the next worker run or \`keyrotor resume ${k.name}\` continues it`;
      notes.push(
        `${k.name}: rotation ${k.active.rotationId}${k.active.leaked ? ' (LEAKED key)' : ''} is at ${k.active.stage ?? '?'} (saved ${k.active.updatedAt})${waits.length ? `; ${waits.join('; ')}` : ''}; ${how}`,
      );
    }
    if (k.lastOutcome && k.lastOutcome !== 'rotated' && k.lastError)
      notes.push(`${k.name}: last rotation ${k.lastOutcome}: ${k.lastError.code}: ${k.lastError.message}`);
    for (const l of k.lastOutcome === 'needs_attention' ? k.leftovers : []) notes.push(`${k.name}: ! ${l}`);
  }
  if (notes.length) out += '\n' + notes.join('\n') + '\n';
  return out;
}
