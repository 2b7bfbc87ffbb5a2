/** One name per stage, used in state names, actor ids, provider methods, logs, errors, audit and docs. */
export const STAGES = [
  'preflight',
  'issue',
  'stage',
  'verify',
  'promote',
  'confirm',
  'revoke',
  'verifyRevoked',
] as const;
export const COMPENSATIONS = ['demote', 'unstage', 'discard'] as const;
export type ForwardStage = (typeof STAGES)[number];
export type Compensation = (typeof COMPENSATIONS)[number];
export type Stage = ForwardStage | Compensation;

export const OUTCOMES = [
  'rotated',
  'rolled_back',
  'skipped',
  'locked',
  'needs_attention',
  'in_progress',
  'waiting',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** CLI exit code per outcome; the process exits with the worst of its results. */
export const OUTCOME_EXIT: Record<Outcome, number> = {
  rotated: 0,
  skipped: 0,
  in_progress: 0,
  /** parked at a wait (a health gate): a durable deadline, continued by the next worker run; no failure */
  waiting: 0,
  rolled_back: 1,
  locked: 3,
  needs_attention: 4,
};
