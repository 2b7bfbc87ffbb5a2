// The per-step memory every store uses (providers/common/step-memo.ts).
import { describe, expect, it } from 'vitest';
import { StepMemo } from '../../providers/common/step-memo.ts';

describe('StepMemo', () => {
  it('check -> readCurrent -> stage: each permitted step gets the value once; stage forgets', () => {
    const m = new StepMemo<string>();
    m.remember('after-check', { readCurrent: true, stage: true });
    expect(m.take({ step: 'readCurrent' })).toBe('after-check');
    expect(m.take({ step: 'stage' })).toBe('after-check');
    expect(m.take({ step: 'stage' })).toBeUndefined();
    expect(m.take({ step: 'readCurrent' })).toBeUndefined();
  });

  it('a second readCurrent is not permitted, and forgets what stage could have used', () => {
    const m = new StepMemo<string>();
    m.remember('after-check', { readCurrent: true, stage: true });
    expect(m.take({ step: 'readCurrent' })).toBe('after-check');
    expect(m.take({ step: 'readCurrent' })).toBeUndefined();
    expect(m.take({ step: 'stage' })).toBeUndefined();
  });

  it('stage(r) -> readPending(r) -> promote(r), for that rotation only', () => {
    const m = new StepMemo<string>();
    m.remember('after-stage', { readPending: 'r1', promote: 'r1' });
    expect(m.take({ step: 'readPending', rotationId: 'r1' })).toBe('after-stage');
    expect(m.take({ step: 'promote', rotationId: 'r1' })).toBe('after-stage');
    expect(m.take({ step: 'promote', rotationId: 'r1' })).toBeUndefined();

    m.remember('after-stage', { readPending: 'r1', promote: 'r1' });
    expect(m.take({ step: 'readPending', rotationId: 'r2' })).toBeUndefined();
    expect(m.take({ step: 'promote', rotationId: 'r1' })).toBeUndefined();

    m.remember('after-stage', { readPending: 'r1', promote: 'r1' });
    expect(m.take({ step: 'promote', rotationId: 'r2' })).toBeUndefined();
    expect(m.take({ step: 'readPending', rotationId: 'r1' })).toBeUndefined();
  });

  it('steps not named in the permits get nothing and forget everything', () => {
    const m = new StepMemo<string>();
    m.remember('after-check', { readCurrent: true });
    expect(m.take({ step: 'stage' })).toBeUndefined();
    expect(m.take({ step: 'readCurrent' })).toBeUndefined();
    m.remember('after-check', { stage: true });
    m.forget();
    expect(m.take({ step: 'stage' })).toBeUndefined();
  });

  it('remember replaces earlier permits', () => {
    const m = new StepMemo<string>();
    m.remember('a', { readCurrent: true, stage: true });
    m.remember('b', { promote: 'r1' });
    expect(m.take({ step: 'readCurrent' })).toBeUndefined();
    m.remember('b', { promote: 'r1' });
    expect(m.take({ step: 'promote', rotationId: 'r1' })).toBe('b');
  });

  it('with a scope, another instance remembering, or announcing a change, drops what this one remembers', () => {
    const scope = `test-scope-${process.pid}-${Math.random()}`;
    const a = new StepMemo<string>({ scope });
    const b = new StepMemo<string>({ scope });
    a.remember('a', { stage: true });
    b.remember('b', { stage: true });
    expect(a.take({ step: 'stage' })).toBeUndefined();
    expect(b.take({ step: 'stage' })).toBe('b');

    a.remember('a', { stage: true });
    b.changed();
    expect(a.take({ step: 'stage' })).toBeUndefined();

    // a plain forget, or a step another instance may not take, leaves the owner alone
    a.remember('a', { readCurrent: true });
    b.forget();
    expect(b.take({ step: 'readCurrent' })).toBeUndefined();
    expect(a.take({ step: 'readCurrent' })).toBe('a');

    // other scopes (and unscoped memos) are independent
    const c = new StepMemo<string>({ scope: `${scope}-other` });
    const d = new StepMemo<string>();
    a.remember('a', { stage: true });
    c.remember('c', { stage: true });
    d.remember('d', { stage: true });
    b.changed();
    expect(a.take({ step: 'stage' })).toBeUndefined();
    expect(c.take({ step: 'stage' })).toBe('c');
    expect(d.take({ step: 'stage' })).toBe('d');
  });
});
