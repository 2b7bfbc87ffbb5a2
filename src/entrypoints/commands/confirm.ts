/**
 * `keyrotor confirm <key|rotationId> [--reject]`: the person's answer to a `manual` health gate.
 *
 * The decision is one JSON file per rotation, `<stateDir>/confirm/<key>.<rotationId>.json`, created
 * atomically and exclusively (temp file + fsync + link: a crash leaves no torn file, and of two
 * people deciding at once exactly one wins). The manual gate of the running rotation reads it on its
 * next poll, also after a restart. A recorded decision is never changed; repeating it is a no-op.
 * With a database state backend (postgres, dynamodb) the decision is created once in the key's
 * record there instead, so a confirm from a laptop reaches a rotation held by a Lambda.
 */
import { link, open, rm } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import path from 'node:path';
import type { ResolvedKey } from '../../app/config/schema.ts';
import { KeyrotorError } from '../../core/errors.ts';
import { ROTATION_ID_RE } from '../../core/ids.ts';
import type { KeyRecord } from '../../core/ports.ts';
import { scrubText } from '../../core/secret.ts';
import { FILE_MODE, displayPath, ensureDir, errnoOf, fsyncDir, uniqueSibling } from '../../core/fs.ts';
import { loadManualDecisions, type Decision } from '../../../providers/index.ts';
import type { CommandContext } from './context.ts';

interface ConfirmOptions {
  reject?: boolean;
  reason?: string;
  json?: boolean;
}

function who(): string {
  let user: string | undefined;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME;
  }
  return `${user || 'unknown'}@${hostname()}`;
}

/** create `file` with `data` only if it does not exist yet; false when it already existed */
async function createExclusive(file: string, data: string): Promise<boolean> {
  const dir = path.dirname(file);
  await ensureDir(dir);
  const tmp = uniqueSibling(file, 'tmp');
  const fh = await open(tmp, 'wx', FILE_MODE);
  try {
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file);
    return true;
  } catch (e) {
    if (errnoOf(e) === 'EEXIST') return false;
    throw e;
  } finally {
    await rm(tmp, { force: true }).catch(() => undefined);
    await fsyncDir(dir).catch(() => undefined);
  }
}

const stageOf = (rec: KeyRecord | null): string | undefined => {
  const v = (rec?.active?.snapshot as { value?: unknown } | undefined)?.value;
  return typeof v === 'string' ? v : undefined;
};

export async function runConfirm(ctx: CommandContext, target: string, opts: ConfirmOptions): Promise<void> {
  ctx.setJson(opts.json === true);
  const cfg = await ctx.config();
  const stateStore = await ctx.stateStore(cfg);

  let key: ResolvedKey | undefined = cfg.keys.find((k) => k.name === target);
  let record: KeyRecord | null = null;
  let rotationId: string | undefined;
  if (key) {
    record = await stateStore.read(key.name);
    rotationId = record?.active?.rotationId;
    if (!rotationId) {
      const last = record?.last;
      throw new KeyrotorError('USAGE', `${key.name} has no rotation in progress: nothing to confirm`, {
        ...(last?.rotationId ? { hint: `its last rotation ${last.rotationId} ended ${last.outcome}` } : {}),
      });
    }
  } else if (ROTATION_ID_RE.test(target)) {
    for (const k of cfg.keys) {
      const rec = await stateStore.read(k.name);
      if (rec?.active?.rotationId === target) {
        key = k;
        record = rec;
        rotationId = target;
        break;
      }
      if (rec?.last?.rotationId === target) {
        throw new KeyrotorError(
          'USAGE',
          `rotation ${target} of ${k.name} already ended (${rec.last.outcome}): nothing to confirm`,
        );
      }
    }
    if (!key || !rotationId)
      throw new KeyrotorError(
        'USAGE',
        `no rotation ${target} is in progress in ${cfg.raw.state.type === 'file' ? displayPath(cfg.stateDir) : stateStore.label}`,
      );
  } else {
    throw new KeyrotorError(
      'UNKNOWN_KEY',
      `unknown key "${target}" (configured: ${cfg.keys.map((x) => x.name).join(', ')}); or pass a rotation id (rot-...)`,
    );
  }
  if (!key.health.some((g) => g.type === 'manual')) {
    throw new KeyrotorError('USAGE', `${key.name} has no manual gate: nothing waits for a confirmation`, {
      hint: 'add `{ type: manual }` to its health list to wait for `keyrotor confirm`',
    });
  }

  const { DECISION_FORMAT, decisionFile, decisionStateKey, parseDecision, readDecision } = await loadManualDecisions();
  const decision: Decision = {
    format: DECISION_FORMAT,
    key: key.name,
    rotationId,
    decision: opts.reject ? 'reject' : 'confirm',
    at: new Date().toISOString(),
    by: who(),
    ...(opts.reason?.trim() ? { reason: scrubText(opts.reason.replace(/\s+/g, ' ').trim()).slice(0, 500) } : {}),
  };
  const inStore = cfg.raw.state.type !== 'file' && stateStore.setProviderStateIfAbsent !== undefined;
  const file = inStore ? stateStore.label : decisionFile(cfg.stateDir, key.name, rotationId);
  let created: boolean;
  let recorded = decision;
  if (inStore) {
    const text = JSON.stringify(decision);
    const stored = await stateStore.setProviderStateIfAbsent!(key.name, decisionStateKey(rotationId), text);
    created = stored === text;
    if (!created) {
      const existing = parseDecision(stored, `the decision in ${stateStore.label}`, key.name, rotationId);
      if (existing.kind !== 'decision')
        throw new KeyrotorError(
          'STATE_UNREADABLE',
          `a decision for rotation ${rotationId} exists in ${stateStore.label} but is unreadable: ${existing.kind === 'unreadable' ? existing.detail : 'vanished'}`,
        );
      if (existing.decision.decision !== decision.decision)
        throw new KeyrotorError(
          'USAGE',
          `rotation ${rotationId} of ${key.name} was already ${existing.decision.decision === 'confirm' ? 'confirmed' : 'rejected'} by ${existing.decision.by} at ${existing.decision.at}; a decision cannot be changed`,
        );
      recorded = existing.decision;
    }
  } else created = await createExclusive(file, JSON.stringify(decision, null, 2) + '\n');
  if (!created && !inStore) {
    const existing = await readDecision(cfg.stateDir, key.name, rotationId);
    if (existing.kind !== 'decision') {
      throw new KeyrotorError(
        'STATE_UNREADABLE',
        `a decision file for rotation ${rotationId} exists but is unreadable: ${existing.kind === 'unreadable' ? existing.detail : 'vanished'}`,
        {
          hint: `check ${displayPath(file)}, remove it, and run keyrotor confirm again`,
        },
      );
    }
    if (existing.decision.decision !== decision.decision) {
      throw new KeyrotorError(
        'USAGE',
        `rotation ${rotationId} of ${key.name} was already ${existing.decision.decision === 'confirm' ? 'confirmed' : 'rejected'} by ${existing.decision.by} at ${existing.decision.at}; a decision cannot be changed`,
      );
    }
    recorded = existing.decision;
    created = false;
  }
  // a rotation parked at its gate (durable wait): clear its wake time, so the next worker checks at once
  const { wakeParked } = await import('../../app/run/wake.ts');
  const wake = await wakeParked(stateStore, key.name, rotationId, Date.now(), 'confirm');
  const stage = stageOf(record);
  const out = {
    key: key.name,
    rotationId,
    decision: recorded.decision,
    by: recorded.by,
    at: recorded.at,
    ...(recorded.reason ? { reason: recorded.reason } : {}),
    alreadyRecorded: !created,
    stage: stage ?? null,
    file: displayPath(file),
    /** true: the rotation was parked (durable wait) and is now due at once for the next worker run */
    woken: wake === 'woken',
  };
  if (opts.json) {
    ctx.io.stdout(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  const verb = recorded.decision === 'confirm' ? 'confirmed' : 'rejected';
  const effect =
    recorded.decision === 'confirm'
      ? 'the manual gate passes on its next check; the old key is revoked once every gate passed'
      : 'the manual gate fails on its next check and the rotation rolls back to the old key';
  const woke =
    wake === 'woken'
      ? `; it was parked at its gate: the next worker run (daemon tick, scheduled run, \`keyrotor resume ${key.name}\`) checks it at once`
      : wake === 'held'
        ? '; it is parked but another process holds its lock right now: it is checked at its wake time (or once that lock is released or expires)'
        : '';
  ctx.io.stdout(
    `${key.name}: rotation ${rotationId} ${verb}${created ? '' : ' (already recorded)'}: ${effect}` +
      `${stage && stage !== 'confirm' ? ` (it is at stage ${stage} now)` : ''}${woke}\n`,
  );
}
