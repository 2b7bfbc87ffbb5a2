/**
 * The progress observer on a TTY: one live line per waiting rotation, redrawn in place, with what the
 * gate observed and the time left; the line goes away when the wait ends.
 */
import { describe, expect, it } from 'vitest';
import { liveArea, progressObserver } from '../../src/app/progress.ts';
import type { Clock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/app/log.ts';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('progress on a TTY', () => {
  it('draws a live line per waiting rotation and removes it when the wait ends', async () => {
    let t = 1_000_000;
    const clock: Clock = { now: () => t, sleep: async () => {} };
    let out = '';
    const p = progressObserver({ tty: true, write: (s) => void (out += s), logger: silentLogger(), clock });
    p.onStage!('app', 'rot-1', {
      stage: 'confirm',
      phase: 'wait',
      gate: 'consumers',
      observation: '2/3 consumers on the new key',
      deadline: t + 125_000,
    });
    p.onStage!('db', 'rot-2', { stage: 'verify', phase: 'wait', observation: 'not working yet', deadline: t + 5_000 });
    await tick(300);
    expect(out).toBe(
      '… app waiting at confirm [consumers, 2m5s left] 2/3 consumers on the new key\n' +
        '… db waiting at verify [5s left] not working yet\n',
    );
    out = '';
    t += 1_000;
    p.onStage!('app', 'rot-1', {
      stage: 'confirm',
      phase: 'wait',
      gate: 'consumers',
      observation: '3/3 consumers on the new key',
      deadline: 1_000_000 + 125_000,
    });
    await tick(300);
    // redrawn in place: two lines up, clear, both lines again
    expect(out).toBe(
      '\x1b[2F\x1b[J… app waiting at confirm [consumers, 2m4s left] 3/3 consumers on the new key\n' +
        '… db waiting at verify [4s left] not working yet\n',
    );
    out = '';
    p.onStage!('db', 'rot-2', { stage: 'verify', phase: 'done', ms: 10 });
    expect(out).toBe('\x1b[2F\x1b[J… app waiting at confirm [consumers, 2m4s left] 3/3 consumers on the new key\n');
    out = '';
    await p.onResult!({ key: 'app', rotationId: 'rot-1', outcome: 'rotated', oldKeyId: 'a', newKeyId: 'b' });
    expect(out).toBe('\x1b[1F\x1b[J');
  });

  it('other output (log lines, messages) is printed above the live lines, which are drawn again below it', () => {
    let out = '';
    const area = liveArea((s) => void (out += s));
    area.print('before\n');
    expect(out).toBe('before\n');
    area.render(['… a', '… b']);
    out = '';
    area.print('{"level":30,"msg":"a log line"}\n');
    expect(out).toBe('\x1b[2F\x1b[J{"level":30,"msg":"a log line"}\n… a\n… b\n');
    out = '';
    area.render([]);
    expect(out).toBe('\x1b[2F\x1b[J');
  });
});
