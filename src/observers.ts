/**
 * The observers every entry point attaches to a rotation (audit trail, metrics, notifications).
 * One place, so the CLI, Lambda, Cloud Run and the daemon record the same things.
 */
import type { LoadedConfig } from './config/load.ts';
import type { Logger } from './core/ports.ts';
import type { RotationObserver } from './run.ts';

export interface ObserverOptions {
  config: LoadedConfig;
  logger: Logger;
  /** cli | lambda | cloud-run | daemon */
  actor: string;
}

export function defaultObservers(_o: ObserverOptions): RotationObserver[] {
  return [];
}
