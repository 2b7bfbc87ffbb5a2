/**
 * Metrics after real rotations (local issuer + file store): `text()` parses as Prometheus text
 * exposition format 0.0.4 (checked by a strict parser below), with the counters and histograms the
 * issue asks for; `snapshot()` is plain JSON for Lambda results.
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { parseConfig } from '../../src/app/config/load.ts';
import { rotateKey } from '../../src/app/run.ts';
import { createFileStateStore } from '../../src/app/state/index.ts';
import { silentLogger } from '../../src/app/log.ts';
import { createMetrics } from '../../src/app/metrics.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';
import { LOCAL_CONFIG } from '../entrypoints/cli-helpers.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A strict parser of the Prometheus text format (0.0.4); throws on anything malformed. */
export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const familyOf = (sample: string): Family | undefined => {
    for (const suffix of ['', '_bucket', '_sum', '_count', '_total']) {
      if (suffix && !sample.endsWith(suffix)) continue;
      const f = families.get(suffix ? sample.slice(0, -suffix.length) : sample);
      if (
        f &&
        (suffix === '' ||
          f.type === 'histogram' ||
          f.type === 'summary' ||
          (suffix === '_total' && f.type === 'counter'))
      )
        return f;
    }
    return undefined;
  };
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  text.split('\n').forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`bad metric name: ${where}`);
      const f = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest))
          throw new Error(`bad type: ${where}`);
        if (f.samples.length) throw new Error(`TYPE after samples: ${where}`);
        f.type = rest;
      } else f.help = rest;
      families.set(name, f);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample: ${where}`);
    const [, name, , labelText, valueText] = m as unknown as [
      string,
      string,
      string | undefined,
      string | undefined,
      string,
    ];
    const labels: Record<string, string> = {};
    if (labelText) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      let pos = 0;
      while (pos < labelText.length) {
        re.lastIndex = pos;
        const lm = re.exec(labelText);
        if (!lm) throw new Error(`bad labels: ${where}`);
        if (!LABEL.test(lm[1]!) || lm[1]! in labels) throw new Error(`bad or duplicate label: ${where}`);
        labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        pos = re.lastIndex;
      }
    }
    const value =
      valueText === '+Inf'
        ? Infinity
        : valueText === '-Inf'
          ? -Infinity
          : valueText === 'NaN'
            ? NaN
            : Number(valueText);
    if (Number.isNaN(value) && valueText !== 'NaN') throw new Error(`bad value: ${where}`);
    const f = familyOf(name);
    if (!f) throw new Error(`sample without HELP/TYPE: ${where}`);
    if (f.type === 'histogram' && name === `${f.name}_bucket` && labels.le === undefined)
      throw new Error(`bucket without le: ${where}`);
    f.samples.push({ name, labels, value });
  });
  // histograms: cumulative buckets, +Inf bucket = count
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples) {
      const { le: _le, ...rest } = s.labels;
      const id = JSON.stringify(rest);
      series.set(id, [...(series.get(id) ?? []), s]);
    }
    for (const [id, ss] of series) {
      const buckets = ss.filter((s) => s.name.endsWith('_bucket'));
      for (let i = 1; i < buckets.length; i++)
        if (buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${f.name}${id}: buckets not cumulative`);
      const inf = buckets.find((b) => b.labels.le === '+Inf');
      const count = ss.find((s) => s.name.endsWith('_count'));
      if (!inf || !count || inf.value !== count.value) throw new Error(`${f.name}${id}: +Inf bucket != count`);
    }
  }
  return families;
}

const sample = (fams: Map<string, Family>, family: string, name: string, labels: Record<string, string>) =>
  fams.get(family)?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

describe('metrics', () => {
  it('after a bootstrap and a rotation (dry and not-due runs count nothing): Prometheus text that parses, with every series', async () => {
    const dir = tempDir('ops-metrics');
    const cfg = parseConfig(
      LOCAL_CONFIG.replace('- name: demo', '- name: demo\n    schedule: { every: 7d }'),
      path.join(dir, 'rotation.config.yaml'),
      {},
    );
    const stateStore = createFileStateStore(cfg.stateDir);
    const metrics = createMetrics();
    metrics.trackKeys(cfg, stateStore);
    const base = {
      config: cfg,
      stateStore,
      logger: silentLogger(),
      env: {},
      now: true,
      observers: [metrics.observer()],
    };
    const key = cfg.keys[0]!;
    expect((await rotateKey(key, base)).outcome).toBe('rotated');
    expect((await rotateKey(key, base)).outcome).toBe('rotated');
    // a dry run and a not-due run count nothing
    await rotateKey(key, { ...base, dryRun: true });
    await rotateKey(key, { ...base, now: false });

    const text = await metrics.text();
    capture('metrics.prom', text);
    const fams = parsePrometheusText(text);
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);

    expect(fams.get('keyrotor_rotations_total')?.type).toBe('counter');
    expect(
      sample(fams, 'keyrotor_rotations_total', 'keyrotor_rotations_total', {
        key: 'demo',
        outcome: 'rotated',
        leaked: 'false',
      })?.value,
    ).toBe(2);
    expect(fams.get('keyrotor_rotations_total')!.samples).toHaveLength(1);

    expect(fams.get('keyrotor_stage_duration_seconds')?.type).toBe('histogram');
    for (const stage of ['preflight', 'issue', 'stage', 'verify', 'promote', 'confirm', 'revoke', 'verifyRevoked']) {
      expect(
        sample(fams, 'keyrotor_stage_duration_seconds', 'keyrotor_stage_duration_seconds_count', {
          key: 'demo',
          stage,
          result: 'ok',
        })?.value,
        stage,
      ).toBeGreaterThanOrEqual(1);
    }
    expect(
      sample(fams, 'keyrotor_gate_wait_seconds', 'keyrotor_gate_wait_seconds_count', { key: 'demo', result: 'ok' })
        ?.value,
    ).toBe(2);
    expect(
      sample(fams, 'keyrotor_rotation_duration_seconds', 'keyrotor_rotation_duration_seconds_count', {
        key: 'demo',
        outcome: 'rotated',
      })?.value,
    ).toBe(2);
    const age = sample(fams, 'keyrotor_key_age_seconds', 'keyrotor_key_age_seconds', { key: 'demo' })!;
    expect(age.value).toBeGreaterThanOrEqual(0);
    expect(age.value).toBeLessThan(3600);
    expect(sample(fams, 'keyrotor_key_schedule_seconds', 'keyrotor_key_schedule_seconds', { key: 'demo' })?.value).toBe(
      7 * 86400,
    );
    expect(
      sample(fams, 'keyrotor_last_success_timestamp_seconds', 'keyrotor_last_success_timestamp_seconds', {
        key: 'demo',
      })?.value,
    ).toBeGreaterThan(1.7e9);

    const snap = await metrics.snapshot();
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(snap.keyrotor_rotations_total).toEqual([
      { labels: { key: 'demo', outcome: 'rotated', leaked: 'false' }, value: 2 },
    ]);
    expect(snap.keyrotor_stage_duration_seconds!.find((x) => x.labels.stage === 'revoke')).toMatchObject({
      count: 1,
      sum: expect.any(Number),
    });
  });

  it('stage failures are counted by code; the parser rejects malformed text', async () => {
    const metrics = createMetrics();
    const obs = metrics.observer();
    obs.onStage!('app', 'rot-1', {
      stage: 'verify',
      phase: 'error',
      ms: 1500,
      error: Object.assign(new Error('x'), { code: 'KEY_INVALID' }) as never,
    });
    obs.onStage!('app', 'rot-1', {
      stage: 'confirm',
      phase: 'error',
      ms: 90_000,
      error: Object.assign(new Error('x'), { code: 'GATE_TIMEOUT' }) as never,
    });
    await obs.onResult!({
      key: 'app',
      rotationId: 'rot-1',
      outcome: 'rolled_back',
      oldKeyId: 'a',
      newKeyId: 'b',
      startedAt: '2026-11-23T12:00:00Z',
      finishedAt: '2026-11-23T12:01:40Z',
    });
    const fams = parsePrometheusText(await metrics.text());
    expect(
      sample(fams, 'keyrotor_stage_failures_total', 'keyrotor_stage_failures_total', {
        key: 'app',
        stage: 'confirm',
        code: 'GATE_TIMEOUT',
      })?.value,
    ).toBe(1);
    expect(
      sample(fams, 'keyrotor_gate_wait_seconds', 'keyrotor_gate_wait_seconds_sum', { key: 'app', result: 'error' })
        ?.value,
    ).toBe(90);
    expect(
      sample(fams, 'keyrotor_rotation_duration_seconds', 'keyrotor_rotation_duration_seconds_sum', {
        key: 'app',
        outcome: 'rolled_back',
      })?.value,
    ).toBe(100);

    for (const bad of [
      'x{a="1} 1\n',
      '# TYPE x counter\nx 1 2 3\n',
      'orphan_metric 1\n',
      '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 3\n',
      '# TYPE x counter\nx{a="1",a="2"} 1\n',
    ]) {
      expect(() => parsePrometheusText(bad), bad).toThrow();
    }
  });
});
