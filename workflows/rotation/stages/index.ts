/**
 * The side effects of the rotation machine, one job per file:
 *   deps.ts    what a rotation's stages run against (ports, clock, vault, hooks)
 *   bodies.ts  what each stage does, against the ports only
 *   actors.ts  the bodies as the machine's actors; `createRotationActor`, the one way to run a rotation
 *   vault.ts   the in-memory home of secret values, and reading the new value back from the stores
 *   retry.ts   backoff for writes, deadline polling for waits
 */
export { createRotationActor } from './actors.ts';
export { preflightReads } from './bodies.ts';
export type { PreflightReads, RotationDeps, StageEvent } from './deps.ts';
export { SecretVault } from './vault.ts';
