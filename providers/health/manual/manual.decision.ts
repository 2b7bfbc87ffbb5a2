/**
 * The decision `keyrotor confirm` records for the manual gate: one small JSON file per rotation,
 * `<stateDir>/confirm/<key>.<rotationId>.json`, written atomically by the command and only read by
 * the gate (so it survives restarts, and a resumed rotation sees a decision made while it was down).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ROTATION_ID_RE } from '../../../src/core/ids.ts';

export const DECISION_FORMAT = 'keyrotor-confirm/1';
const SAFE_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export const decisionSchema = z
  .object({
    format: z.literal(DECISION_FORMAT),
    key: z.string().regex(SAFE_KEY_NAME),
    rotationId: z.string().regex(ROTATION_ID_RE),
    decision: z.enum(['confirm', 'reject']),
    /** ISO time of the decision */
    at: z.string(),
    /** who decided: `user@host` */
    by: z.string(),
    reason: z.string().max(500).optional(),
  })
  .strict();
export type Decision = z.output<typeof decisionSchema>;

export function decisionFile(stateDir: string, key: string, rotationId: string): string {
  if (!SAFE_KEY_NAME.test(key)) throw new Error(`invalid key name ${JSON.stringify(key)}`);
  if (!ROTATION_ID_RE.test(rotationId)) throw new Error(`invalid rotation id ${JSON.stringify(rotationId)}`);
  return path.join(stateDir, 'confirm', `${key}.${rotationId}.json`);
}

/**
 * With a database state backend the decision is a remembered fact of the key instead of a file
 * (`keyrotor confirm` creates it once; the gate reads it fresh from the store on every poll).
 */
export function decisionStateKey(rotationId: string): string {
  if (!ROTATION_ID_RE.test(rotationId)) throw new Error(`invalid rotation id ${JSON.stringify(rotationId)}`);
  return `confirm.${rotationId}`;
}

export type ReadDecision =
  { kind: 'none' } | { kind: 'decision'; decision: Decision } | { kind: 'unreadable'; detail: string };

/** The decision recorded for this rotation, if any. Never throws. */
export async function readDecision(stateDir: string, key: string, rotationId: string): Promise<ReadDecision> {
  const file = decisionFile(stateDir, key, rotationId);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'none' };
    return { kind: 'unreadable', detail: `cannot read ${file} (${code ?? 'error'})` };
  }
  return parseDecision(text, file, key, rotationId);
}

/** Validate a stored decision (`where` names it in messages). Never throws. */
export function parseDecision(text: string, where: string, key: string, rotationId: string): ReadDecision {
  const file = where;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { kind: 'unreadable', detail: `${file} is not JSON` };
  }
  const p = decisionSchema.safeParse(doc);
  if (!p.success)
    return {
      kind: 'unreadable',
      detail: `${file} is not a keyrotor decision (${p.error.issues[0]?.path.join('.') || 'root'}: ${p.error.issues[0]?.message})`,
    };
  if (p.data.key !== key || p.data.rotationId !== rotationId)
    return { kind: 'unreadable', detail: `${file} names another rotation (${p.data.key} ${p.data.rotationId})` };
  return { kind: 'decision', decision: p.data };
}
