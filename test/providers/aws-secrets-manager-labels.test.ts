// The AWS Secrets Manager store's label codec, view and local label moves: pure functions, no moto.
import { describe, expect, it } from 'vitest';
import { KeyrotorError } from '../../src/core/errors.ts';
import {
  MAX_LABEL_LENGTH,
  PLACEHOLDER_LABEL,
  isOurLabel,
  metaLabel,
  parseMetaLabel,
  prevOfLabel,
  publicMeta,
  requestToken,
  toLabelState,
} from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.labels.ts';
import {
  applyPut,
  applyRelabel,
  cloneModel,
  modelOf,
  stateOfModel,
} from '../../providers/stores/aws-secrets-manager/aws-secrets-manager.simulate.ts';

const R1 = 'r-2026-11-01-aaaa';
const R2 = 'r-2026-12-01-bbbb';
const m1 = metaLabel(R1, { issuerKeyId: 'key_1', fingerprint: 'fp1', createdAt: '2026-11-01T00:00:00.000Z' });
const m2 = metaLabel(R2, { issuerKeyId: 'key_2', fingerprint: 'fp2' });

describe('aws-secrets-manager labels: metadata codec', () => {
  it('round-trips rotation id, issuer key id, fingerprint and creation time, escaping ; = and %', () => {
    const meta = { issuerKeyId: 'key;with=odd%chars', fingerprint: 'sha256:ab/cd', createdAt: '2026-12-06T00:00:00Z' };
    const label = metaLabel('rot;1=x', meta);
    expect(label.startsWith('kr:')).toBe(true);
    expect(label.split(';')).toHaveLength(4); // the separators in values are escaped
    expect(parseMetaLabel(label)).toEqual({ rotationId: 'rot;1=x', ...meta });
  });

  it('leaves out absent fields and ignores unknown or undecodable ones', () => {
    expect(metaLabel(R1, {})).toBe(`kr:${R1}`);
    expect(parseMetaLabel(`kr:${R1}`)).toEqual({ rotationId: R1 });
    expect(parseMetaLabel(`kr:${R1};z=1;k=key_1;f=%E0%A4%A;noequals`)).toEqual({
      rotationId: R1,
      issuerKeyId: 'key_1',
    });
  });

  it('is not fooled by labels that are not ours', () => {
    for (const l of ['AWSCURRENT', 'AWSPENDING', 'kr-empty', 'kr-prev:r1', 'kr:', 'kr:%E0%A4%A', 'KR:r1'])
      expect(parseMetaLabel(l)).toBeUndefined();
    expect(isOurLabel(m1)).toBe(true);
    expect(isOurLabel(PLACEHOLDER_LABEL)).toBe(true);
    expect(isOurLabel(prevOfLabel(R1))).toBe(true);
    expect(isOurLabel('AWSPREVIOUS')).toBe(false);
    expect(isOurLabel('my-own-label')).toBe(false);
  });

  it('drops createdAt first when the label would exceed 256 characters, and refuses when it still does', () => {
    const fp = 'f'.repeat(200);
    const label = metaLabel(R1, { issuerKeyId: 'key_1', fingerprint: fp, createdAt: '2026-12-06T00:00:00.000Z' });
    expect(label.length).toBeLessThanOrEqual(MAX_LABEL_LENGTH);
    expect(parseMetaLabel(label)).toEqual({ rotationId: R1, issuerKeyId: 'key_1', fingerprint: fp });
    let err: unknown;
    try {
      metaLabel(R1, { fingerprint: 'f'.repeat(260) });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KeyrotorError);
    expect(err).toMatchObject({ code: 'STORE_CONFLICT', stage: 'stage', retryable: false });
  });

  it('publicMeta reports only the fields present', () => {
    expect(publicMeta(undefined)).toEqual({});
    expect(publicMeta(parseMetaLabel(m2))).toEqual({ rotationId: R2, issuerKeyId: 'key_2', fingerprint: 'fp2' });
  });

  it('derives one UUID-shaped ClientRequestToken per rotation and purpose', () => {
    const t = requestToken('stage', R1);
    expect(t).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(requestToken('stage', R1)).toBe(t);
    expect(requestToken('empty', R1)).not.toBe(t);
    expect(requestToken('stage', R2)).not.toBe(t);
  });
});

describe('aws-secrets-manager labels: the view of VersionIdsToStages', () => {
  it('finds current, previous and pending among several versions, with their metadata', () => {
    const st = toLabelState({
      VersionIdsToStages: {
        v0: ['AWSPREVIOUS', m1, prevOfLabel(R2)],
        v1: ['AWSCURRENT'],
        v2: ['AWSPENDING', m2],
        old: ['my-own-label'],
      },
    });
    expect(st.versions.map((v) => v.id)).toEqual(['v0', 'v1', 'v2', 'old']);
    expect(st.current?.id).toBe('v1');
    expect(st.current?.meta).toBeUndefined(); // written by someone else
    expect(st.previous?.id).toBe('v0');
    expect(st.previous?.meta).toEqual({
      rotationId: R1,
      issuerKeyId: 'key_1',
      fingerprint: 'fp1',
      createdAt: '2026-11-01T00:00:00.000Z',
    });
    expect(st.previous?.prevOf).toEqual([R2]);
    expect(st.pending?.id).toBe('v2');
    expect(st.byRotation(R2)?.id).toBe('v2');
    expect(st.byRotation('nobody')).toBeUndefined();
    expect(st.withLabel(prevOfLabel(R2))?.id).toBe('v0');
    expect(st.rotationEnabled).toBe(false);
    expect(st.deletedDate).toBeUndefined();
  });

  it('without AWSCURRENT there is no current (a pending version alone stays pending)', () => {
    const st = toLabelState({ VersionIdsToStages: { v2: ['AWSPENDING', m2] }, RotationEnabled: true });
    expect(st.current).toBeUndefined();
    expect(st.previous).toBeUndefined();
    expect(st.pending?.id).toBe('v2');
    expect(st.rotationEnabled).toBe(true);
  });

  it('an empty or absent map is a secret with no versions', () => {
    for (const st of [toLabelState({}), toLabelState({ VersionIdsToStages: {} })]) {
      expect(st.versions).toEqual([]);
      expect(st.current).toBeUndefined();
      expect(st.pending).toBeUndefined();
    }
  });

  it('AWSPENDING on the current version is not a pending version; unlabelled versions are left out', () => {
    const deleted = new Date('2026-12-01T00:00:00Z');
    const st = toLabelState({
      VersionIdsToStages: { v1: ['AWSCURRENT', 'AWSPENDING', 'AWSCURRENT'], gone: [], alsoGone: undefined },
      DeletedDate: deleted,
    });
    expect(st.versions.map((v) => v.id)).toEqual(['v1']);
    expect(st.versions[0]!.labels).toEqual(['AWSCURRENT', 'AWSPENDING']); // duplicates collapse
    expect(st.current?.id).toBe('v1');
    expect(st.pending).toBeUndefined();
    expect(st.deletedDate).toBe(deleted);
  });

  it('marks the placeholder version', () => {
    const st = toLabelState({ VersionIdsToStages: { p: ['AWSCURRENT', PLACEHOLDER_LABEL], v2: ['AWSPENDING', m2] } });
    expect(st.current?.placeholder).toBe(true);
    expect(st.pending?.placeholder).toBe(false);
  });
});

describe('aws-secrets-manager labels: local label moves (as Secrets Manager makes them)', () => {
  const start = () =>
    modelOf({ VersionIdsToStages: { v0: ['AWSPREVIOUS'], v1: ['AWSCURRENT', m1], v2: ['AWSPENDING', m2] } });

  it('moving AWSCURRENT puts AWSPREVIOUS on the version it left (and takes it from the old previous)', () => {
    const m = start();
    applyRelabel(m, { VersionStage: 'AWSCURRENT', MoveToVersionId: 'v2', RemoveFromVersionId: 'v1' });
    const st = stateOfModel(m);
    expect(st.current?.id).toBe('v2');
    expect(st.previous?.id).toBe('v1');
    expect(st.versions.find((v) => v.id === 'v0')).toBeUndefined(); // no labels left: deprecated
    expect(st.current?.has('AWSPENDING')).toBe(true); // still there until removed
    applyRelabel(m, { VersionStage: 'AWSPENDING', RemoveFromVersionId: 'v2' });
    expect(stateOfModel(m).current?.labels).toEqual([m2, 'AWSCURRENT']);
  });

  it('a label sits on one version at most: attaching moves it', () => {
    const m = start();
    applyRelabel(m, { VersionStage: prevOfLabel(R2), MoveToVersionId: 'v0' });
    applyRelabel(m, { VersionStage: prevOfLabel(R2), MoveToVersionId: 'v1', RemoveFromVersionId: 'v0' });
    const st = stateOfModel(m);
    expect(st.withLabel(prevOfLabel(R2))?.id).toBe('v1');
    expect(st.versions.find((v) => v.id === 'v0')?.labels).toEqual(['AWSPREVIOUS']);
  });

  it('a put attaches its labels to the new version and takes them from any other', () => {
    const m = modelOf({ VersionIdsToStages: { v1: ['AWSCURRENT'], v2: ['AWSPENDING', m2] } });
    const before = cloneModel(m);
    const m3 = metaLabel('r3', {});
    applyPut(m, 'v3', ['AWSPENDING', m3]);
    const st = stateOfModel(m);
    expect(st.pending?.id).toBe('v3');
    expect(st.byRotation('r3')?.id).toBe('v3');
    expect(st.versions.find((v) => v.id === 'v2')?.labels).toEqual([m2]);
    // the clone is independent of the model it was taken from
    expect(stateOfModel(before).pending?.id).toBe('v2');
  });
});
