import { describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { parseDuration, formatDuration } from '../../src/core/duration.ts';
import { Secret, scrubText } from '../../src/core/secret.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { issuedKeyName, newRotationId, parseIssuedKeyName, ROTATION_ID_RE } from '../../src/core/ids.ts';
import { KeyrotorError, toKeyrotorError } from '../../src/core/errors.ts';
import { CANARY } from '../canary.ts';

describe('core', () => {
  it('parses durations', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('30d')).toBe(2_592_000_000);
    expect(parseDuration(250)).toBe(250);
    expect(parseDuration('soon')).toBeUndefined();
    expect(parseDuration('-5s')).toBeUndefined();
    expect(formatDuration(5_400_000)).toBe('1h30m');
  });

  it('a Secret never prints its value', () => {
    const s = Secret.of(CANARY);
    const printed = [
      String(s),
      `${s}`,
      JSON.stringify({ s }),
      inspect(s),
      inspect({ nested: { s } }, { depth: 9 }),
    ].join(' ');
    expect(printed).not.toContain(CANARY);
    expect(s.reveal()).toBe(CANARY);
  });

  it('scrubs key-shaped text from foreign messages', () => {
    expect(scrubText(`Incorrect API key provided: ${CANARY}. Bearer abcdefghijkl`)).not.toMatch(/canary|abcdefghijkl/);
    expect(scrubText('Incorrect API key provided: sk-proj-****abcd')).not.toContain('abcd');
  });

  it('fingerprints are short, stable, one-way', () => {
    const f = fingerprint(CANARY);
    expect(f).toMatch(/^fp_[0-9a-f]{12}$/);
    expect(fingerprint(Secret.of(CANARY))).toBe(f);
    expect(f).not.toContain(CANARY.slice(0, 8));
  });

  it('rotation ids and issued key names round-trip', () => {
    const id = newRotationId(new Date('2026-11-23T15:00:00Z'));
    expect(id).toMatch(ROTATION_ID_RE);
    expect(id.startsWith('rot-20261123t150000z-')).toBe(true);
    expect(parseIssuedKeyName(issuedKeyName('openai-prod', id))).toEqual({ keyName: 'openai-prod', rotationId: id });
    expect(parseIssuedKeyName('my key')).toBeUndefined();
  });

  it('errors carry stable codes, exit codes and scrubbed messages', () => {
    const e = new KeyrotorError('LOCKED', `held (${CANARY})`, { stage: 'issue' });
    expect(e.exitCode).toBe(3);
    expect(e.message).not.toContain(CANARY);
    expect(e.toRecord()).toMatchObject({ code: 'LOCKED', stage: 'issue', retryable: false });
    const u = toKeyrotorError(new Error(`boom ${CANARY}`), 'verify');
    expect(u.code).toBe('INTERNAL');
    expect(u.stage).toBe('verify');
    expect(u.message).not.toContain(CANARY);
  });
});
