/**
 * The staging-label codec and view of the AWS Secrets Manager store: pure (no SDK, no I/O).
 *
 * Slots: AWSCURRENT = current (what consumers read), AWSPREVIOUS = previous, AWSPENDING = pending.
 * Per-version metadata lives in custom staging labels (tags are per secret only):
 *
 *   kr:<rotationId>;k=<issuerKeyId>;f=<fingerprint>;t=<createdAt>   one label per version keyrotor wrote
 *                                                                    (values URI-encoded, max 256 chars)
 *   kr-empty                                                         the placeholder version
 *   kr-prev:<rotationId>                                             the version that was AWSPREVIOUS when
 *                                                                    that rotation promoted (for demote)
 *
 * `toLabelState` turns a DescribeSecret answer's `VersionIdsToStages` into current / previous / pending
 * and the per-version metadata; see aws-secrets-manager.store.ts for how the store uses them.
 */
import { createHash } from 'node:crypto';
import { KeyrotorError } from '../../../src/core/errors.ts';
import type { VersionMeta } from '../../../src/core/ports.ts';

export const CURRENT = 'AWSCURRENT';
export const PREVIOUS = 'AWSPREVIOUS';
export const PENDING = 'AWSPENDING';
export const META_PREFIX = 'kr:';
export const PLACEHOLDER_LABEL = 'kr-empty';
export const PREV_OF_PREFIX = 'kr-prev:';
/** Secrets Manager limit on one staging label */
export const MAX_LABEL_LENGTH = 256;
/** What consumers read from AWSCURRENT before the first promote (plain mode). Not a key. */
export const PLACEHOLDER_TEXT = 'keyrotor placeholder: no key has been promoted into this secret yet';

// ------------------------------------------------------------------ labels

export interface ParsedMeta extends VersionMeta {
  rotationId: string;
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
export function dec(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** `kr:<rotationId>;k=..;f=..;t=..` (createdAt is dropped first if the label would exceed 256 chars) */
export function metaLabel(rotationId: string, meta: VersionMeta): string {
  const base = `${META_PREFIX}${enc(rotationId)}`;
  const k = meta.issuerKeyId ? `;k=${enc(meta.issuerKeyId)}` : '';
  const f = meta.fingerprint ? `;f=${enc(meta.fingerprint)}` : '';
  const t = meta.createdAt ? `;t=${enc(meta.createdAt)}` : '';
  const full = base + k + f + t;
  if (full.length <= MAX_LABEL_LENGTH) return full;
  const short = base + k + f;
  if (short.length <= MAX_LABEL_LENGTH) return short;
  throw new KeyrotorError(
    'STORE_CONFLICT',
    `version metadata for rotation ${rotationId} does not fit in one Secrets Manager staging label (${short.length} > ${MAX_LABEL_LENGTH} chars)`,
    { stage: 'stage', retryable: false },
  );
}

export function parseMetaLabel(label: string): ParsedMeta | undefined {
  if (!label.startsWith(META_PREFIX)) return undefined;
  const [head, ...fields] = label.slice(META_PREFIX.length).split(';');
  const rotationId = head ? dec(head) : undefined;
  if (!rotationId) return undefined;
  const meta: ParsedMeta = { rotationId };
  for (const f of fields) {
    const i = f.indexOf('=');
    if (i < 0) continue;
    const v = dec(f.slice(i + 1));
    if (!v) continue;
    const key = f.slice(0, i);
    if (key === 'k') meta.issuerKeyId = v;
    else if (key === 'f') meta.fingerprint = v;
    else if (key === 't') meta.createdAt = v;
  }
  return meta;
}

export function prevOfLabel(rotationId: string): string {
  return `${PREV_OF_PREFIX}${enc(rotationId)}`;
}

export function isOurLabel(label: string): boolean {
  return label.startsWith(META_PREFIX) || label === PLACEHOLDER_LABEL || label.startsWith(PREV_OF_PREFIX);
}

/** Deterministic ClientRequestToken (UUID-shaped, 36 chars) for one rotation and purpose. */
export function requestToken(purpose: 'stage' | 'empty', rotationId: string): string {
  const h = createHash('sha256').update(`keyrotor/aws-secrets-manager/${purpose}/${rotationId}`).digest('hex');
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// ------------------------------------------------------------------ view (labels only, no values)

export interface VersionView {
  id: string;
  labels: string[];
  meta: ParsedMeta | undefined;
  placeholder: boolean;
  /** rotation ids this version is the pre-promote AWSPREVIOUS of */
  prevOf: string[];
  has(label: string): boolean;
}

/** What the labels say, values aside. */
export interface LabelState {
  versions: VersionView[];
  current: VersionView | undefined;
  previous: VersionView | undefined;
  /** the version holding AWSPENDING, unless that is the current one */
  pending: VersionView | undefined;
  deletedDate: Date | undefined;
  rotationEnabled: boolean;
  byRotation(rotationId: string): VersionView | undefined;
  withLabel(label: string): VersionView | undefined;
}

/** The parts of a DescribeSecret answer the labels come from. */
export interface LabelAnswer {
  VersionIdsToStages?: Record<string, string[] | undefined> | undefined;
  DeletedDate?: Date | undefined;
  RotationEnabled?: boolean | undefined;
}

/**
 * The label view of a DescribeSecret answer. Versions without labels are left out (moto lists
 * deprecated versions; AWS does not). `pending` is the AWSPENDING holder unless that is the current one.
 */
export function toLabelState(out: LabelAnswer): LabelState {
  const versions: VersionView[] = [];
  for (const [id, raw] of Object.entries(out.VersionIdsToStages ?? {})) {
    const labels = [...new Set(raw ?? [])];
    if (labels.length === 0) continue;
    let meta: ParsedMeta | undefined;
    const prevOf: string[] = [];
    for (const l of labels) {
      meta ??= parseMetaLabel(l);
      if (l.startsWith(PREV_OF_PREFIX)) {
        const r = dec(l.slice(PREV_OF_PREFIX.length));
        if (r) prevOf.push(r);
      }
    }
    versions.push({
      id,
      labels,
      meta,
      placeholder: labels.includes(PLACEHOLDER_LABEL),
      prevOf,
      has: (x) => labels.includes(x),
    });
  }
  const withLabel = (label: string) => versions.find((v) => v.has(label));
  const current = withLabel(CURRENT);
  const pendingHolder = withLabel(PENDING);
  return {
    versions,
    current,
    previous: withLabel(PREVIOUS),
    pending: pendingHolder && pendingHolder !== current ? pendingHolder : undefined,
    deletedDate: out.DeletedDate,
    rotationEnabled: out.RotationEnabled === true,
    byRotation: (rotationId) => versions.find((v) => v.meta?.rotationId === rotationId),
    withLabel,
  };
}

/** The metadata a store reports (VersionMeta), from a parsed `kr:` label. */
export function publicMeta(m: ParsedMeta | undefined): VersionMeta {
  if (!m) return {};
  return {
    rotationId: m.rotationId,
    ...(m.issuerKeyId ? { issuerKeyId: m.issuerKeyId } : {}),
    ...(m.fingerprint ? { fingerprint: m.fingerprint } : {}),
    ...(m.createdAt ? { createdAt: m.createdAt } : {}),
  };
}
