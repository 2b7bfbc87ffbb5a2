import { randomBytes } from 'node:crypto';

/** Rotation ids sort by time and are safe in key names, labels, tags and file names. */
export function newRotationId(now: Date = new Date()): string {
  const ts = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z'); // 20261123T151500Z
  return `rot-${ts.toLowerCase()}-${randomBytes(4).toString('hex')}`;
}

export const ROTATION_ID_RE = /^rot-\d{8}t\d{6}z-[0-9a-f]{8}$/;

/** Marker carried by every issuer key keyrotor creates: `keyrotor.<keyName>.<rotationId>`. */
export const KEY_NAME_PREFIX = 'keyrotor';
export function issuedKeyName(keyName: string, rotationId: string): string {
  return `${KEY_NAME_PREFIX}.${keyName}.${rotationId}`;
}
export function parseIssuedKeyName(
  name: string | null | undefined,
): { keyName: string; rotationId: string } | undefined {
  if (!name) return undefined;
  const m = /^keyrotor\.(.+)\.(rot-\d{8}t\d{6}z-[0-9a-f]{8})$/.exec(name);
  return m ? { keyName: m[1]!, rotationId: m[2]! } : undefined;
}
