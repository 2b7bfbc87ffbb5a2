import { z } from 'zod';
import { duration, envName, httpUrl } from '../../../src/core/config-fields.ts';

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name');

const consumerUrl = httpUrl.refine((s) => {
  const u = new URL(s);
  return u.username === '' && u.password === '';
}, 'must not carry credentials (user:password@): put them in a header whose value comes from the environment (headers)');

/**
 * Consumers report the fingerprint of the key they have loaded (`keyrotor/consumer` serves it); the
 * gate passes when every URL reports the new key's fingerprint in `consecutive` rounds in a row.
 */
export const httpGateSchema = z
  .object({
    type: z.literal('http'),
    name: z.string().min(1).optional(),
    /** consumer endpoints; every one must report the new fingerprint */
    urls: z.array(consumerUrl).min(1, 'at least one URL is required'),
    /** request headers whose values come from environment variables: `{ Authorization: HEALTH_TOKEN }` */
    headers: z.record(headerName, envName).default({}),
    /** absolute deadline for the whole wait, from the moment the key is promoted */
    timeout: duration.default(15 * 60_000),
    /** time between polling rounds (backs off to 4x while nothing changes) */
    interval: duration.default(10_000),
    /** per request: connect, answer and body */
    requestTimeout: duration.default(5_000),
    /** rounds in a row in which every URL must report the new fingerprint (guards against flapping
     *  consumers and load balancers that reach one instance at a time) */
    consecutive: z.number().int().min(1).max(100).default(2),
    /** PEM file of the CA(s) to trust instead of the system roots (private CA); relative to the config
     *  file. TLS verification cannot be turned off. */
    caFile: z.string().min(1).optional(),
  })
  .strict();
export type HttpGateConfig = z.output<typeof httpGateSchema>;
