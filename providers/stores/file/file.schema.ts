import { z } from 'zod';
import { envName } from '../../../src/core/config-fields.ts';

/** The embedded default store: one AES-256-GCM encrypted file per key. */
export const fileStoreSchema = z
  .object({
    type: z.literal('file'),
    /** default `<stateDir>/secrets/<key>.json`; relative paths resolve from the config file's folder */
    path: z.string().min(1).optional(),
    /** env var holding a 32-byte master key (64 hex chars or base64); when unset, a generated 0600
     *  key file is used */
    masterKeyEnv: envName.default('KEYROTOR_MASTER_KEY'),
    /** default `<stateDir>/master.key` */
    keyFile: z.string().min(1).optional(),
  })
  .strict();
export type FileStoreConfig = z.output<typeof fileStoreSchema>;
