/** Webhook bodies: generic JSON and a Slack-compatible `{ text, blocks }`. References only. */
import type { KeyResult } from '../run.ts';
import type { NotifyEvent } from './schema.ts';

export const PAYLOAD_VERSION = 1;

export interface GenericPayload {
  source: 'keyrotor';
  version: number;
  /** the result's outcome */
  event: string;
  /** every event this result matches (the outcome, plus `leaked` in leak mode) */
  events: NotifyEvent[];
  key: string;
  rotationId: string | null;
  outcome: string;
  leaked: boolean;
  oldKeyId: string | null;
  newKeyId: string | null;
  stage: string | null;
  error: { code: string; message: string; stage?: string; hint?: string } | null;
  leftovers: string[];
  oldKeyLastUsedAt?: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  host: string;
  actor: string | null;
  /** one-line human summary (the same text the Slack format shows) */
  text: string;
}

export function eventsOf(r: KeyResult): NotifyEvent[] {
  const out: NotifyEvent[] = [];
  if (r.outcome !== 'skipped') out.push(r.outcome);
  if (r.leaked) out.push('leaked');
  return out;
}

const HEADLINE: Record<string, string> = {
  rotated: 'rotated',
  rolled_back: 'ROLLED BACK (the old key still serves)',
  needs_attention: 'NEEDS ATTENTION (a human must act)',
  locked: 'locked by another rotation',
  in_progress: 'paused (continues on the next run)',
  waiting: 'waiting at a health gate (parked: the next worker run continues it)',
};

export function summary(r: KeyResult): string {
  const head = `keyrotor: ${r.leaked ? 'LEAKED key ' : ''}${r.key} ${HEADLINE[r.outcome] ?? r.outcome}`;
  const what =
    r.outcome === 'rotated'
      ? r.bootstrap
        ? `: new key ${r.newKeyId}`
        : `: ${r.oldKeyId ?? '?'} → ${r.newKeyId ?? '?'}`
      : r.error
        ? ` at ${r.error.stage ?? r.stage ?? '?'}: ${r.error.code}: ${r.error.message}`
        : r.outcome === 'waiting' && r.wakeAt
          ? ` at ${r.stage ?? '?'} until ${r.wakeAt}`
          : '';
  return `${head}${what}${r.rotationId ? ` [${r.rotationId}]` : ''}`;
}

export function genericPayload(r: KeyResult, meta: { host: string; actor: string | null }): GenericPayload {
  return {
    source: 'keyrotor',
    version: PAYLOAD_VERSION,
    event: r.outcome,
    events: eventsOf(r),
    key: r.key,
    rotationId: r.rotationId,
    outcome: r.outcome,
    leaked: r.leaked === true,
    oldKeyId: r.oldKeyId,
    newKeyId: r.newKeyId,
    stage: r.stage ?? r.error?.stage ?? null,
    error: r.error
      ? {
          code: r.error.code,
          message: r.error.message,
          ...(r.error.stage ? { stage: r.error.stage } : {}),
          ...(r.error.hint ? { hint: r.error.hint } : {}),
        }
      : null,
    leftovers: r.leftovers ?? [],
    ...(r.leaked ? { oldKeyLastUsedAt: r.oldKeyLastUsedAt ?? null } : {}),
    startedAt: r.startedAt ?? null,
    finishedAt: r.finishedAt ?? null,
    host: meta.host,
    actor: meta.actor,
    text: summary(r),
  };
}

const EMOJI: Record<string, string> = {
  rotated: ':white_check_mark:',
  rolled_back: ':warning:',
  needs_attention: ':rotating_light:',
  locked: ':lock:',
  in_progress: ':hourglass_flowing_sand:',
  waiting: ':hourglass:',
};

/** Slack incoming-webhook body (also accepted by Mattermost and Rocket.Chat). */
export function slackPayload(
  r: KeyResult,
  meta: { host: string; actor: string | null },
): { text: string; blocks: unknown[] } {
  const text = `${r.leaked ? ':rotating_light: ' : ''}${EMOJI[r.outcome] ?? ''} ${summary(r)}`.trim();
  const lines = [`*${escape(text)}*`];
  for (const l of r.leftovers ?? []) lines.push(`• ${escape(l)}`);
  if (r.error?.hint) lines.push(`_fix: ${escape(r.error.hint)}_`);
  if (r.leaked && r.oldKeyLastUsedAt !== undefined) lines.push(`old key last used: ${r.oldKeyLastUsedAt ?? 'never'}`);
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: lines.join('\n') } },
      {
        type: 'context',
        elements: [
          {
            type: 'mrkdwn',
            text: escape(
              `${r.rotationId ?? 'no rotation'} · ${meta.actor ?? 'keyrotor'} on ${meta.host}${r.finishedAt ? ` · ${r.finishedAt}` : ''}`,
            ),
          },
        ],
      },
    ],
  };
}

/** Slack mrkdwn control characters */
function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
