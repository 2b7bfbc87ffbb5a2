/** What the stages of one rotation run against: the ports, the clock, the vault and the run loop's hooks. */
import type { Clock } from '../../../src/core/clock.ts';
import type { KeyrotorError } from '../../../src/core/errors.ts';
import type { HealthGate, Issuer, Logger, SecretStore, StoredVersion } from '../../../src/core/ports.ts';
import type { Stage } from '../../../src/core/stages.ts';
import type { SecretVault } from './vault.ts';

export interface RotationDeps {
  issuer: Issuer;
  stores: SecretStore[];
  gates: HealthGate[];
  /** `all` (default): every gate must pass; `any`: one passing gate confirms */
  gateRequire?: 'all' | 'any';
  clock: Clock;
  logger: Logger;
  vault: SecretVault;
  /** resolves once the snapshot of the state being entered is durable */
  persisted(): Promise<void>;
  /** key ids recorded by `keyrotor adopt`, by fingerprint of the value */
  adopted(fingerprint: string): string | undefined;
  /** values declared not to be keys (`keyrotor adopt --placeholder`), by fingerprint: see placeholder.ts */
  placeholder?(fingerprint: string): boolean;
  verifyIntervalMs: number;
  verifyRevokedIntervalMs: number;
  /** attempts for each store/issuer write (stage, promote and every compensation) on retryable errors */
  retryAttempts: number;
  /** called on every stage start/finish, for progress rendering, audit and metrics */
  onStage?(e: StageEvent): void;
  /**
   * preflight's reads, when the run loop started them with the rotation (`preflightReads`, while its
   * first snapshot is written), if started for this leak mode: handed out once, to preflight's first
   * attempt; otherwise (or once taken) preflight reads itself
   */
  takePreflightReads?(leaked: boolean): Promise<PreflightReads> | undefined;
  /** the state a restored rotation resumed in (absent for a rotation started in this process) */
  resumedIn?: string | undefined;
}

/** What preflight read (`preflightReads`): the checks (issuer first, then each store's) and each store's current value, settled. */
export interface PreflightReads {
  checks: PromiseSettledResult<unknown>[];
  reads: PromiseSettledResult<StoredVersion | null>[];
}

export interface StageEvent {
  stage: Stage;
  /** `wait`: a wait (verify, confirm, verifyRevoked) polled and is not done yet, see `observation` */
  phase: 'start' | 'done' | 'error' | 'wait';
  index?: number;
  ms?: number;
  detail?: string;
  error?: KeyrotorError;
  /** wait events: the health gate polled (confirm) */
  gate?: string;
  /** wait events: what the poll saw (secret-free), e.g. "2/3 consumers on the new key" */
  observation?: string;
  /** wait events: the absolute deadline of the wait (ms since epoch) */
  deadline?: number;
}
