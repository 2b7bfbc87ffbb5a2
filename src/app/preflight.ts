/**
 * Preflight checks (`keyrotor check`, and `rotate --dry-run`): per key, one line per check, with the
 * fix when it fails. Read-only: nothing is created, written or locked (providers' `check()` writes
 * nothing; provider state is not updated).
 *
 *   state            the state record is readable; an unfinished rotation is named
 *   providers        the config builds the issuer, stores and gates (env vars present, ...)
 *   issuer.list      the issuer's keys can be listed (OpenAI: the admin key can list the project)
 *   issuer.check     the issuer's own preflight (OpenAI: the service account exists)
 *   issuer.create    what can be known about create rights without creating a key
 *   issuer.current   the current key in the state is still alive at the issuer
 *   store[i]         each store is reachable and readable, its folder / secret writable as far as
 *                    that can be checked without writing
 *   stores.agree     every store serves the same current key (by fingerprint metadata)
 *   gate[i]          each gate's endpoints answer
 */
import { access, constants, stat } from 'node:fs/promises';
import path from 'node:path';
import { closeProviders, composeKey, type KeyProviders } from './compose.ts';
import type { LoadedConfig } from './config/load.ts';
import type { ResolvedKey } from './config/schema.ts';
import type { Clock } from '../core/clock.ts';
import { toKeyrotorError, type ErrorCode } from '../core/errors.ts';
import type { HealthGate, IssuerKeyInfo, KeyRecord, Logger, StateStore } from '../core/ports.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckLine {
  key: string;
  /** stable check id: state, providers, issuer.list, issuer.check, issuer.create, issuer.current, store[0], stores.agree, gate[0] */
  check: string;
  status: CheckStatus;
  /** what was checked / seen; secret-free */
  detail: string;
  /** how to fix it (fail and warn) */
  fix?: string;
  code?: ErrorCode;
}

export interface PreflightReport {
  /** no check failed (warnings allowed) */
  ok: boolean;
  checks: CheckLine[];
}

export interface PreflightOptions {
  config: LoadedConfig;
  keys: ResolvedKey[];
  stateStore: StateStore;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  /** per gate endpoint probe (default 5 s) */
  probeTimeoutMs?: number;
}

/** A state store that reads through and never writes (providers may try to remember facts). */
function readOnly(s: StateStore): StateStore {
  return {
    label: s.label,
    read: (k) => s.read(k),
    keys: () => s.keys(),
    saveActive: async () => {},
    finish: async () => {},
    setProviderState: async () => {},
    put: async () => {},
    acquire: () => Promise.reject(new Error('preflight takes no lease')),
  };
}

export async function runPreflight(o: PreflightOptions): Promise<PreflightReport> {
  const checks: CheckLine[] = [];
  for (const key of o.keys) checks.push(...(await checkKey(key, o)));
  return { ok: !checks.some((c) => c.status === 'fail'), checks };
}

function failLine(key: string, check: string, e: unknown, fallbackFix?: string): CheckLine {
  const err = toKeyrotorError(e);
  const fix = err.hint ?? fallbackFix;
  return { key, check, status: 'fail', detail: `${err.code}: ${err.message}`, code: err.code, ...(fix ? { fix } : {}) };
}

async function checkKey(key: ResolvedKey, o: PreflightOptions): Promise<CheckLine[]> {
  const out: CheckLine[] = [];
  const k = key.name;
  const stateStore = readOnly(o.stateStore);

  // ---------------------------------------------------------------- state
  let record: KeyRecord | null = null;
  try {
    record = await o.stateStore.read(k);
    const active = record?.active;
    if (active) {
      const stage = (active.snapshot as { value?: unknown } | null)?.value;
      out.push({
        key: k,
        check: 'state',
        status: 'warn',
        detail: `unfinished rotation ${active.rotationId} at ${typeof stage === 'string' ? stage : 'an unknown stage'} (saved ${active.updatedAt})`,
        fix: `the next \`keyrotor rotate ${k}\` (or \`keyrotor resume ${k}\`) finishes it first`,
      });
    } else {
      out.push({
        key: k,
        check: 'state',
        status: 'ok',
        detail: record
          ? `readable; current key ${record.currentKeyId ?? 'unknown'}, no unfinished rotation`
          : 'no state yet (never rotated)',
      });
    }
  } catch (e) {
    out.push(failLine(k, 'state', e));
  }

  // ---------------------------------------------------------------- providers
  let p: KeyProviders;
  try {
    p = await composeKey({
      config: o.config,
      key,
      stateStore,
      record,
      logger: o.logger,
      ...(o.clock ? { clock: o.clock } : {}),
      ...(o.env ? { env: o.env } : {}),
    });
    out.push({
      key: k,
      check: 'providers',
      status: 'ok',
      detail: `issuer ${p.issuer.type}, stores ${p.stores.map((s) => s.label).join(', ')}${p.gates.length ? `, gates ${p.gates.map((g) => g.name).join(', ')}` : ''}`,
    });
  } catch (e) {
    out.push(failLine(k, 'providers', e, 'fix the key in the config (`keyrotor validate`)'));
    return out;
  }

  try {
    // ---------------------------------------------------------------- issuer
    const issuerCfg = key.issuer as { type: string; project?: string; serviceAccount?: string };
    const scope = issuerCfg.project ? `project ${issuerCfg.project}` : `the ${p.issuer.type} issuer`;
    let listed: IssuerKeyInfo[] | null = null;
    try {
      listed = await p.issuer.list();
      out.push({
        key: k,
        check: 'issuer.list',
        status: 'ok',
        detail: `can list the keys of ${scope} (${listed.length} key${listed.length === 1 ? '' : 's'})`,
      });
    } catch (e) {
      out.push(
        failLine(
          k,
          'issuer.list',
          e,
          issuerCfg.type === 'openai'
            ? 'use an admin key (Organization settings → Admin keys) with read and write access to API keys'
            : undefined,
        ),
      );
    }

    try {
      await p.issuer.check();
      if (issuerCfg.type === 'openai') {
        const sa = issuerCfg.serviceAccount ?? record?.providerState['openai.serviceAccountId'];
        out.push(
          sa
            ? { key: k, check: 'issuer.check', status: 'ok', detail: `service account ${sa} exists in ${scope}` }
            : {
                key: k,
                check: 'issuer.check',
                status: 'warn',
                detail: `no service account configured or remembered: the first rotation creates keyrotor-${k} in ${scope}`,
                fix: 'set issuer.serviceAccount to the id of the service account the application uses',
              },
        );
      } else {
        out.push({
          key: k,
          check: 'issuer.check',
          status: 'ok',
          detail: `the ${p.issuer.type} issuer answers its preflight`,
        });
      }
    } catch (e) {
      out.push(failLine(k, 'issuer.check', e));
    }

    if (issuerCfg.type === 'local') {
      out.push(
        await writableLine(
          k,
          'issuer.create',
          path.join(o.config.stateDir, 'local-issuer'),
          'the local issuer can record new keys in',
        ),
      );
    } else {
      out.push({
        key: k,
        check: 'issuer.create',
        status: 'skip',
        detail: `create rights cannot be checked without creating a key (the ${p.issuer.type} API has no dry run); a rotation creates one only after its own preflight passed, and deletes it on any failure`,
      });
    }

    const currentId = record?.currentKeyId ?? null;
    if (currentId && listed) {
      const found = listed.find((x) => x.keyId === currentId);
      out.push(
        found
          ? {
              key: k,
              check: 'issuer.current',
              status: 'ok',
              detail: `current key ${currentId} is alive at the issuer${found.expiresAt ? ` (expires ${found.expiresAt})` : ''}`,
            }
          : {
              key: k,
              check: 'issuer.current',
              status: 'fail',
              detail: `current key ${currentId} (from the state) is not at the issuer: it was deleted or expired outside keyrotor, so consumers hold a dead key`,
              fix: `run \`keyrotor rotate --now ${k}\` to issue and store a new key`,
            },
      );
    }

    // ---------------------------------------------------------------- stores
    const fingerprints: (string | null)[] = [];
    for (const [i, s] of p.stores.entries()) {
      const check = `store[${i}]`;
      try {
        await s.check();
        const slots = await s.describe();
        fingerprints.push(slots.current ? (slots.current.meta.fingerprint ?? '?') : null);
        const cur = slots.current
          ? `current ${slots.current.meta.issuerKeyId ?? slots.current.versionId}`
          : 'empty (the first rotation bootstraps it)';
        const pend = slots.pending
          ? `; pending version of ${slots.pending.meta.rotationId ?? 'an unknown rotation'}`
          : '';
        out.push({
          key: k,
          check,
          status: 'ok',
          detail: `${s.label}: reachable and readable; ${cur}${pend}${s.type === 'file' ? '; folder writable' : '; write access is proven by the first stage write (undone on failure)'}`,
        });
      } catch (e) {
        fingerprints.push('error');
        const l = failLine(k, check, e);
        out.push({ ...l, detail: `${s.label}: ${l.detail}` });
      }
    }
    if (p.stores.length > 1 && !fingerprints.includes('error')) {
      const present = fingerprints.filter((f): f is string => f !== null);
      const known = present.filter((f) => f !== '?');
      if (present.length === 0)
        out.push({ key: k, check: 'stores.agree', status: 'ok', detail: 'every store is empty' });
      else if (present.length !== fingerprints.length || new Set(known).size > 1) {
        out.push({
          key: k,
          check: 'stores.agree',
          status: 'fail',
          detail: `the stores serve different current keys (${p.stores.map((s, i) => `${s.label}=${fingerprints[i] ?? 'empty'}`).join(', ')})`,
          fix: 'make every store serve the same key (or `keyrotor adopt`), then rotate',
        });
      } else if (known.length === present.length)
        out.push({ key: k, check: 'stores.agree', status: 'ok', detail: `every store serves ${known[0]}` });
      else
        out.push({
          key: k,
          check: 'stores.agree',
          status: 'skip',
          detail:
            'some current values carry no keyrotor metadata (placed by hand): the rotation preflight compares the values',
        });
    }

    // ---------------------------------------------------------------- gates
    for (const [i, g] of p.gates.entries())
      out.push(await checkGate(k, i, g, key.health[i], o.probeTimeoutMs ?? 5_000));
  } finally {
    await closeProviders(p);
  }
  return out;
}

async function writableLine(key: string, check: string, dir: string, what: string): Promise<CheckLine> {
  let d = dir;
  for (;;) {
    try {
      const st = await stat(d);
      if (!st.isDirectory())
        return { key, check, status: 'fail', detail: `${d} is not a folder`, fix: `move ${d} aside` };
      break;
    } catch {
      const up = path.dirname(d);
      if (up === d) break;
      d = up;
    }
  }
  try {
    await access(d, constants.W_OK | constants.X_OK);
    return { key, check, status: 'ok', detail: `${what} ${dir}` };
  } catch {
    return {
      key,
      check,
      status: 'fail',
      detail: `${d} is not writable`,
      fix: `give the user running keyrotor write access to ${d}`,
    };
  }
}

type GatePreflight = HealthGate & { preflight(signal: AbortSignal): Promise<string | void> };

/** One gate's preflight line: its own `preflight()` if it has one, else every configured URL must answer. */
export async function checkGate(
  key: string,
  i: number,
  gate: HealthGate,
  cfg: unknown,
  timeoutMs: number,
): Promise<CheckLine> {
  const check = `gate[${i}]`;
  const name = `gate "${gate.name}" (${gate.type})`;
  // a gate may bring its own preflight (optional capability)
  if (typeof (gate as Partial<GatePreflight>).preflight === 'function') {
    try {
      const said = await (gate as GatePreflight).preflight(AbortSignal.timeout(timeoutMs));
      return { key, check, status: 'ok', detail: `${name}: ${said || 'answers'}` };
    } catch (e) {
      const l = failLine(key, check, e, 'check the gate endpoint and that the consumer runs');
      return { ...l, detail: `${name}: ${l.detail}` };
    }
  }
  const c = (cfg ?? {}) as { urls?: unknown; url?: unknown };
  const urls = [...(Array.isArray(c.urls) ? c.urls : []), ...(c.url !== undefined ? [c.url] : [])].filter(
    (u): u is string => typeof u === 'string',
  );
  if (urls.length === 0) {
    return gate.type === 'issuer-smoke-test'
      ? { key, check, status: 'ok', detail: `${name}: asks the issuer (checked above)` }
      : { key, check, status: 'skip', detail: `${name}: no endpoint to probe` };
  }
  const bad: string[] = [];
  const seen: string[] = [];
  await Promise.all(
    urls.map(async (u) => {
      const shown = safeUrl(u);
      try {
        // fetch refuses URLs with credentials: send them as basic auth instead
        const url = new URL(u);
        const headers: Record<string, string> = {};
        if (url.username || url.password) {
          headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
          url.username = '';
          url.password = '';
        }
        const res = await fetch(url, {
          method: 'GET',
          headers,
          redirect: 'manual',
          signal: AbortSignal.timeout(timeoutMs),
        });
        await res.body?.cancel().catch(() => undefined);
        seen.push(`${shown} ${res.status}`);
      } catch (e) {
        bad.push(
          `${shown} ${e instanceof Error && e.name === 'TimeoutError' ? `did not answer within ${timeoutMs} ms` : 'cannot be reached'}`,
        );
      }
    }),
  );
  return bad.length
    ? {
        key,
        check,
        status: 'fail',
        detail: `${name}: ${bad.join('; ')}`,
        fix: 'check the URL, DNS / firewall, and that the consumer is running',
      }
    : { key, check, status: 'ok', detail: `${name}: every endpoint answers (${seen.join(', ')})` };
}

/** origin and path only: no credentials or query (tokens) */
function safeUrl(u: string): string {
  try {
    const x = new URL(u);
    return `${x.origin}${x.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

// ---------------------------------------------------------------- rendering

const MARK: Record<CheckStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };

export interface RenderOptions {
  color?: boolean;
}

/** One line per check: `FAIL  app  store[0]  <detail>  → fix: <fix>` */
export function renderPreflight(r: PreflightReport, opts: RenderOptions = {}): string {
  const paint = painter(opts.color === true);
  const wKey = Math.max(3, ...r.checks.map((c) => c.key.length));
  const wCheck = Math.max(5, ...r.checks.map((c) => c.check.length));
  const lines = r.checks.map((c) => {
    const mark = paint(c.status, MARK[c.status].padEnd(4));
    const fix = c.fix && (c.status === 'fail' || c.status === 'warn') ? `  → fix: ${c.fix}` : '';
    return `${mark}  ${c.key.padEnd(wKey)}  ${c.check.padEnd(wCheck)}  ${c.detail}${fix}`;
  });
  const failed = r.checks.filter((c) => c.status === 'fail').length;
  const warned = r.checks.filter((c) => c.status === 'warn').length;
  lines.push(
    failed
      ? paint('fail', `${failed} check(s) failed`)
      : `all checks passed${warned ? ` (${warned} warning${warned === 1 ? '' : 's'})` : ''}`,
  );
  return lines.join('\n') + '\n';
}

/**
 * Colours for human output: only on a TTY, never with NO_COLOR set (https://no-color.org);
 * FORCE_COLOR=1 forces them (unless NO_COLOR).
 */
export function colorEnabled(env: NodeJS.ProcessEnv, stream: { isTTY?: boolean } = process.stdout): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true && env.TERM !== 'dumb';
}

const COLORS: Record<CheckStatus, string> = { ok: '32', warn: '33', fail: '31', skip: '2' };
function painter(on: boolean) {
  return (status: CheckStatus, s: string) => (on ? `\u001b[${COLORS[status]}m${s}\u001b[0m` : s);
}
