/** zod schemas for what the state store reads back: stored data is input and is validated. */
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.ts';
import type { KeyRecord, PersistedRotation, RotationResult } from '../../core/ports.ts';
import { COMPENSATIONS, OUTCOMES, STAGES } from '../../core/stages.ts';

export const STATE_FORMAT = 'keyrotor-state/1';
export const STATE_FORMAT_RE = /^keyrotor-state\/(\d+)$/;

const stage = z.enum([...STAGES, ...COMPENSATIONS]);
const errorCode = z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]);

const errorRecord = z.object({
  code: errorCode,
  message: z.string(),
  stage: stage.optional(),
  retryable: z.boolean(),
  hint: z.string().optional(),
});

export const rotationResultSchema: z.ZodType<RotationResult> = z.object({
  key: z.string(),
  rotationId: z.string().nullable(),
  outcome: z.enum(OUTCOMES),
  oldKeyId: z.string().nullable(),
  newKeyId: z.string().nullable(),
  error: errorRecord.optional(),
  leftovers: z.array(z.string()).optional(),
  bootstrap: z.boolean().optional(),
  placeholder: z.boolean().optional(),
  leaked: z.boolean().optional(),
  oldKeyLastUsedAt: z.string().nullable().optional(),
  revokedFirst: z.boolean().optional(),
  consumersWithoutKeyMs: z.number().nonnegative().optional(),
  consumersStillWithoutKey: z.boolean().optional(),
  stage: stage.optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  wakeAt: z.string().optional(),
});

export const persistedRotationSchema: z.ZodType<PersistedRotation> = z.object({
  rotationId: z.string().min(1),
  keyName: z.string().min(1),
  machineVersion: z.number().int().nonnegative(),
  keyrotorVersion: z.string(),
  updatedAt: z.string(),
  snapshot: z.unknown().refine((v) => v !== undefined && v !== null, 'required'),
  /** a parked rotation: resumable from this time on (optional: snapshots written before it are readable) */
  wakeAt: z
    .string()
    .refine((s) => Number.isFinite(Date.parse(s)), 'must be an ISO time')
    .optional(),
});

export const keyRecordSchema: z.ZodType<KeyRecord> = z.object({
  keyName: z.string().min(1),
  active: persistedRotationSchema.nullable(),
  last: rotationResultSchema.nullable(),
  lastRotatedAt: z.string().nullable(),
  currentKeyId: z.string().nullable(),
  providerState: z.record(z.string(), z.string()),
});

export const lockContentSchema = z.object({
  owner: z.string().min(1),
  pid: z.number().int(),
  host: z.string(),
  /** holder identity (see holder.ts): a holder on this host that provably died is taken over at once */
  bootId: z.string().optional(),
  pidStart: z.string().optional(),
  pidNs: z.string().optional(),
  acquiredAt: z.string(),
  expiresAt: z.string().refine((s) => Number.isFinite(Date.parse(s)), 'must be an ISO time'),
});
export type LockContent = z.output<typeof lockContentSchema>;
