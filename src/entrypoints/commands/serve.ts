import { KeyrotorError } from '../../core/errors.ts';
import type { CommandContext } from './context.ts';
import { durationOpt, intOpt, list } from './options.ts';

export interface ServeOptions {
  port: number | string;
  host: string;
  audience: string[];
  allowedEmail: string[];
  allowAnyGoogleIdentity?: boolean;
  jwksUrl?: string;
  tokenEnv: string;
  maxBody: number | string;
  requestTimeout: number | string;
  safetyMargin: number | string;
}

/** `keyrotor serve` (declared in index.ts) */
export async function runServe(ctx: CommandContext, opts: ServeOptions): Promise<void> {
  const env = ctx.io.env;
  // defaults given as strings are not run through the parsers by commander
  const port = typeof opts.port === 'number' ? opts.port : intOpt('PORT', 0, 65535)(opts.port);
  const maxBody =
    typeof opts.maxBody === 'number'
      ? opts.maxBody
      : intOpt('KEYROTOR_SERVE_MAX_BODY', 256, 10 * 1024 * 1024)(opts.maxBody);
  const requestTimeout =
    typeof opts.requestTimeout === 'number'
      ? opts.requestTimeout
      : durationOpt('KEYROTOR_SERVE_REQUEST_TIMEOUT')(opts.requestTimeout);
  const safetyMargin =
    typeof opts.safetyMargin === 'number' ? opts.safetyMargin : durationOpt('--safety-margin')(opts.safetyMargin);
  const audiences = opts.audience.flatMap((a) => list(a));
  const emails = opts.allowedEmail.flatMap((a) => list(a));
  if (audiences.length > 0 && emails.length === 0 && !opts.allowAnyGoogleIdentity) {
    throw new KeyrotorError(
      'USAGE',
      'OIDC needs --allowed-email: any Google identity can get a token for any audience',
      {
        hint: 'pass the Cloud Scheduler / Pub/Sub push service account(s) with --allowed-email, or --allow-any-google-identity',
      },
    );
  }
  if (emails.length > 0 && audiences.length === 0) throw new KeyrotorError('USAGE', '--allowed-email needs --audience');
  if (requestTimeout <= safetyMargin)
    throw new KeyrotorError('USAGE', '--request-timeout must be longer than --safety-margin');
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(opts.tokenEnv))
    throw new KeyrotorError(
      'USAGE',
      `--token-env must be an environment variable name (got ${JSON.stringify(opts.tokenEnv)})`,
    );
  const { bearerTokenFromEnv, createAuthenticator } = await import('../auth/index.ts');
  const auth = createAuthenticator({
    oidc: audiences.length ? { audiences, emails, ...(opts.jwksUrl ? { jwksUrl: opts.jwksUrl } : {}) } : undefined,
    bearer: bearerTokenFromEnv(env, opts.tokenEnv),
  });
  const cfg = await ctx.config();
  const logger = await ctx.logger();
  const [{ startServer }, { enableProcessMetrics }] = await Promise.all([
    import('../cloud-run.ts'),
    import('../../app/metrics.ts'),
  ]);
  await enableProcessMetrics(); // CPU, memory, event loop on GET /metrics
  // the stop signals are taken before the server starts: a SIGTERM right after the "listening" line
  // (or during start-up) stops it cleanly, exit 0, instead of killing the process
  const stopped = new Promise<string>((resolve) => {
    const on = (s: string) => () => resolve(s);
    process.once('SIGTERM', on('SIGTERM'));
    process.once('SIGINT', on('SIGINT'));
  });
  const srv = await startServer({
    config: cfg,
    auth,
    logger,
    stateStore: await ctx.stateStore(cfg),
    env,
    host: opts.host,
    port,
    maxBodyBytes: maxBody,
    requestTimeoutMs: requestTimeout,
    safetyMarginMs: safetyMargin,
  });
  const signal = await stopped;
  logger.info({ signal }, 'stopping: running rotations pause at the next safe point');
  await srv.close();
}
