/**
 * What the file state backend holds for a key right now, read the way the store reads it: the last
 * complete line of `<stateDir>/state/<key>.journal` (one line per write), else `<key>.json` (written by
 * keyrotor 0.2.0, and what a long journal is folded into). For tests that watch a rotation from
 * outside the process running it.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface StoredRecord {
  keyName: string;
  active: { rotationId: string; snapshot: { value: unknown; context?: Record<string, unknown> } } | null;
  providerState: Record<string, string>;
  [k: string]: unknown;
}

/** undefined when the key has no state yet or a write is in progress */
export function fileStateRecord(stateDir: string, key: string): StoredRecord | undefined {
  try {
    const journal = path.join(stateDir, 'state', `${key}.journal`);
    if (existsSync(journal)) {
      const text = readFileSync(journal, 'utf8');
      const end = text.lastIndexOf('\n');
      if (end !== -1) {
        const line = text.slice(text.lastIndexOf('\n', end - 1) + 1, end);
        return (JSON.parse(line) as { record: StoredRecord }).record;
      }
    }
    const file = path.join(stateDir, 'state', `${key}.json`);
    if (!existsSync(file)) return undefined;
    return (JSON.parse(readFileSync(file, 'utf8')) as { record: StoredRecord }).record;
  } catch {
    return undefined; // mid-write
  }
}

/** the raw bytes the file backend holds for a key (journal and state file), '' when none */
export function fileStateText(stateDir: string, key: string): string {
  return ['journal', 'json']
    .map((ext) => path.join(stateDir, 'state', `${key}.${ext}`))
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
}
