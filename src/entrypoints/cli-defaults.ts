/**
 * The few values `keyrotor --help` (and `keyrotor <command> --help`) prints that belong to modules
 * which are expensive to load (run.ts pulls in xstate, zod and every workflow; config/load.ts yaml and
 * the config schema; daemon.ts croner; cloud-run.ts zod). The CLI loads a command's implementation
 * only when that command runs, so help and usage errors need these copies.
 *
 * Each must equal its owner's value: `cliDefaultsDrift()` compares them (a test calls it; it loads
 * the owners, so never call it on a hot path). The version is not copied: src/app/version.ts reads it
 * from package.json (a few small reads, cheap enough for --help).
 */
export const CLI_DEFAULT_CONFIG_FILE = 'rotation.config.yaml'; // src/app/config/load.ts DEFAULT_CONFIG_FILE
export const CLI_DAEMON_TICK = '*/5 * * * *'; // src/entrypoints/daemon.ts DEFAULT_TICK
export const CLI_DAEMON_JITTER_MS = 30_000; // src/entrypoints/daemon.ts DEFAULT_JITTER_MS
export const CLI_DAEMON_METRICS_HOST = '127.0.0.1'; // src/entrypoints/metrics-server.ts DEFAULT_METRICS_HOST
export const CLI_SERVE_MAX_BODY_BYTES = 64 * 1024; // src/entrypoints/cloud-run.ts DEFAULT_MAX_BODY_BYTES
export const CLI_SERVE_REQUEST_TIMEOUT_MS = 300_000; // src/entrypoints/cloud-run.ts DEFAULT_REQUEST_TIMEOUT_MS
export const CLI_SERVE_SAFETY_MARGIN_MS = 15_000; // src/entrypoints/cloud-run.ts DEFAULT_SAFETY_MARGIN_MS

/** Every copy above that differs from its owner, as "NAME: copy != owner" (empty when all agree). */
export async function cliDefaultsDrift(): Promise<string[]> {
  const [load, daemon, cloudRun, metricsServer] = await Promise.all([
    import('../app/config/load.ts'),
    import('./daemon.ts'),
    import('./cloud-run.ts'),
    import('./metrics-server.ts'),
  ]);
  const pairs: [string, unknown, unknown][] = [
    ['CLI_DEFAULT_CONFIG_FILE', CLI_DEFAULT_CONFIG_FILE, load.DEFAULT_CONFIG_FILE],
    ['CLI_DAEMON_TICK', CLI_DAEMON_TICK, daemon.DEFAULT_TICK],
    ['CLI_DAEMON_JITTER_MS', CLI_DAEMON_JITTER_MS, daemon.DEFAULT_JITTER_MS],
    ['CLI_DAEMON_METRICS_HOST', CLI_DAEMON_METRICS_HOST, metricsServer.DEFAULT_METRICS_HOST],
    ['CLI_SERVE_MAX_BODY_BYTES', CLI_SERVE_MAX_BODY_BYTES, cloudRun.DEFAULT_MAX_BODY_BYTES],
    ['CLI_SERVE_REQUEST_TIMEOUT_MS', CLI_SERVE_REQUEST_TIMEOUT_MS, cloudRun.DEFAULT_REQUEST_TIMEOUT_MS],
    ['CLI_SERVE_SAFETY_MARGIN_MS', CLI_SERVE_SAFETY_MARGIN_MS, cloudRun.DEFAULT_SAFETY_MARGIN_MS],
  ];
  return pairs.filter(([, a, b]) => a !== b).map(([n, a, b]) => `${n}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
}
