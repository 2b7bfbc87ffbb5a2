import { z } from 'zod';
import { duration, envName, httpUrl } from '../../../src/core/config-fields.ts';

export const openaiIssuerSchema = z
  .object({
    type: z.literal('openai'),
    /** project id, `proj_...` */
    project: z.string().min(1),
    /** service account id (`user-...`/`svc_acct_...` as the API returns it); omitted = keyrotor creates
     *  one named `keyrotor-<key>` on first rotation and remembers its id in the state dir */
    serviceAccount: z.string().min(1).optional(),
    /** env var holding the admin key (never the key itself) */
    adminKeyEnv: envName.default('OPENAI_ADMIN_KEY'),
    /** Admin API base URL (tests point it at a loopback fake) */
    baseURL: httpUrl.default('https://api.openai.com/v1'),
    /** base URL used to check a project key with GET /models; defaults to baseURL */
    verifyBaseURL: httpUrl.optional(),
    /** scopes applied to every new key: the API cannot read an existing key's scopes */
    scopes: z.array(z.string().min(1)).optional(),
    /** `auto` = schedule period + grace; `off` = no expiry; or a duration */
    expiresAfter: z.union([z.literal('auto'), z.literal('off'), duration]).default('auto'),
    /** per request timeout */
    timeout: duration.default(30_000),
    organization: z.string().optional(),
    /** requests per second to the OpenAI API, shared by every key using the same baseURL and admin key
     *  in one process (token bucket, burst = half a second's worth); a 429 pauses it for `retry-after` */
    rateLimit: z.number().positive().max(10_000).default(20),
    /** requests awaiting an answer at once, shared like rateLimit */
    maxConcurrentRequests: z.number().int().min(1).max(1_000).default(16),
  })
  .strict();
export type OpenAIIssuerConfig = z.output<typeof openaiIssuerSchema>;
