import { z } from 'zod';
import { httpUrl } from '../../../src/core/config-fields.ts';

export const awsSecretsManagerStoreSchema = z
  .object({
    type: z.literal('aws-secrets-manager'),
    /** secret name or ARN; the secret must exist */
    secretId: z.string().min(1),
    region: z.string().min(1).optional(),
    /** custom endpoint (tests: moto on loopback) */
    endpoint: httpUrl.optional(),
    /** the secret holds a JSON object; the key lives in this field, other fields are preserved */
    jsonKey: z.string().min(1).optional(),
  })
  .strict();
export type AwsSecretsManagerStoreConfig = z.output<typeof awsSecretsManagerStoreSchema>;
