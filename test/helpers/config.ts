/**
 * The one-key `rotation.config.yaml` most CLI and state tests write: one key (`app` by default) with
 * the file secret store, short verify intervals and whatever the test varies (the state backend, the
 * issuer, the health gates, a lease ttl, ...).
 *
 *   keyConfig({ state: 'state: { type: postgres }', health: SMOKE_TEST });
 *   keyConfig({ issuer: openaiIssuer(fake, sa), interval: '100ms', timeout: '2s', revoke: null });
 */

export interface KeyConfigOptions {
  /** a top-level line such as `state: { type: postgres }` (after `version: 1`) */
  state?: string;
  /** the key's name (default `app`) */
  name?: string;
  /** the issuer as a YAML flow map (default the local issuer) */
  issuer?: string;
  /** the stores as YAML flow (default the file store) */
  stores?: string;
  /** verify and verifyRevoked timeout (default 5s) */
  timeout?: string;
  /** verify and verifyRevoked interval (default 50ms) */
  interval?: string;
  /** the `revoke:` default (null: none; default 2 attempts, 50ms backoff) */
  revoke?: string | null;
  /** more lines under `defaults:`, e.g. `lease: { ttl: 1s }` */
  defaults?: string[];
  /** what follows `health:` (e.g. ` []`, or `\n      - {...}` lines; see SMOKE_TEST); none: no health */
  health?: string;
}

/** an issuer-smoke-test gate, as `health` */
export const SMOKE_TEST = '\n      - { type: issuer-smoke-test, timeout: 5s, interval: 50ms }';

/** the OpenAI issuer against the loopback fake (test/fakes/openai-admin.ts) */
export function openaiIssuer(
  fake: { project: string; baseURL: string },
  serviceAccount: string,
  timeout = '5s',
): string {
  return `{ type: openai, project: ${fake.project}, serviceAccount: ${serviceAccount}, baseURL: "${fake.baseURL}", timeout: ${timeout} }`;
}

export function keyConfig(o: KeyConfigOptions = {}): string {
  const t = o.timeout ?? '5s';
  const i = o.interval ?? '50ms';
  const revoke = o.revoke === undefined ? '{ attempts: 2, backoff: 50ms }' : o.revoke;
  const defaults = [
    `verify: { timeout: ${t}, interval: ${i} }`,
    `verifyRevoked: { timeout: ${t}, interval: ${i} }`,
    ...(revoke === null ? [] : [`revoke: ${revoke}`]),
    ...(o.defaults ?? []),
  ];
  return `version: 1
${o.state ? `${o.state}\n` : ''}defaults:
${defaults.map((d) => `  ${d}\n`).join('')}keys:
  - name: ${o.name ?? 'app'}
    issuer: ${o.issuer ?? '{ type: local }'}
    stores: ${o.stores ?? '[ { type: file } ]'}
${o.health === undefined ? '' : `    health:${o.health}\n`}`;
}
