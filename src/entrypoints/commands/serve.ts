import { Option } from 'commander';
import { bearerTokenFromEnv, createAuthenticator } from '../../auth/index.ts';
import { parseDuration } from '../../core/duration.ts';
import { KeyrotorError } from '../../core/errors.ts';
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_SAFETY_MARGIN_MS, startServer } from '../cloud-run.ts';
import type { RegisterCommand } from './context.ts';

const HELP = `
Routes:
  GET  /healthz   liveness (no authentication)
  POST /rotate    rotate every due key (Cloud Scheduler); body {} or { "keys": [...], "now": true }
  POST /pubsub    Pub/Sub push of Secret Manager notifications: SECRET_ROTATE rotates the key whose
                  gcp-secret-manager store is that secret; other event types are acknowledged

Authentication (every route but /healthz): a Google-signed OIDC ID token for one of the --audience
values, from one of the --allowed-email identities, or the bearer token held in the env var named by
--token-env (compared in constant time). At least one must be configured.

Environment (flags win):
  PORT                          port (Cloud Run sets it)
  KEYROTOR_SERVE_HOST           bind address
  KEYROTOR_OIDC_AUDIENCE        audiences, comma-separated
  KEYROTOR_OIDC_EMAILS          allowed caller e-mails, comma-separated
  KEYROTOR_OIDC_JWKS_URL        signing keys URL (default Google's)
  KEYROTOR_SERVE_TOKEN_ENV      name of the env var holding the bearer token (default KEYROTOR_SERVE_TOKEN)
  KEYROTOR_SERVE_MAX_BODY       body limit in bytes
  KEYROTOR_SERVE_REQUEST_TIMEOUT  the platform's request timeout (Cloud Run: the service timeout)
`;

const list = (v: string | undefined) =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function durationOpt(name: string) {
  return (v: string) => {
    const ms = parseDuration(v);
    if (ms === undefined) throw new KeyrotorError('USAGE', `${name} must be a duration like 300s or 5m (got ${JSON.stringify(v)})`);
    return ms;
  };
}

function intOpt(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new KeyrotorError('USAGE', `${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(v)})`);
    return n;
  };
}

export const registerServe: RegisterCommand = (ctx) => {
  const env = ctx.io.env;
  ctx.program
    .command('serve')
    .description('HTTP server for Cloud Run: POST /rotate (Cloud Scheduler), POST /pubsub (Secret Manager SECRET_ROTATE), GET /healthz')
    .addOption(new Option('--port <port>', 'port to listen on (0 = any free port)').default(env.PORT ?? '8080').argParser(intOpt('--port', 0, 65535)))
    .option('--host <address>', 'address to bind', env.KEYROTOR_SERVE_HOST ?? '0.0.0.0')
    .option('--audience <aud...>', 'accepted OIDC audience(s), e.g. the service URL', list(env.KEYROTOR_OIDC_AUDIENCE))
    .option('--allowed-email <email...>', 'service account(s) allowed to call (the token\'s verified email)', list(env.KEYROTOR_OIDC_EMAILS))
    .option('--allow-any-google-identity', 'accept any Google identity holding a token for the audience (not recommended)')
    .option('--jwks-url <url>', 'OIDC signing keys (default Google\'s)', env.KEYROTOR_OIDC_JWKS_URL)
    .option('--token-env <name>', 'env var holding the shared bearer token', env.KEYROTOR_SERVE_TOKEN_ENV ?? 'KEYROTOR_SERVE_TOKEN')
    .addOption(
      new Option('--max-body <bytes>', 'largest accepted request body')
        .default(env.KEYROTOR_SERVE_MAX_BODY ?? String(DEFAULT_MAX_BODY_BYTES))
        .argParser(intOpt('--max-body', 256, 10 * 1024 * 1024)),
    )
    .addOption(
      new Option('--request-timeout <duration>', 'the platform\'s request timeout: rotations pause before it')
        .default(env.KEYROTOR_SERVE_REQUEST_TIMEOUT ?? `${DEFAULT_REQUEST_TIMEOUT_MS / 1000}s`)
        .argParser(durationOpt('--request-timeout')),
    )
    .addOption(
      new Option('--safety-margin <duration>', 'stop this long before the request timeout').default(`${DEFAULT_SAFETY_MARGIN_MS / 1000}s`).argParser(durationOpt('--safety-margin')),
    )
    .addHelpText('after', HELP)
    .action(
      async (opts: {
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
      }) => {
        // defaults given as strings are not run through the parsers by commander
        const port = typeof opts.port === 'number' ? opts.port : intOpt('PORT', 0, 65535)(opts.port);
        const maxBody = typeof opts.maxBody === 'number' ? opts.maxBody : intOpt('KEYROTOR_SERVE_MAX_BODY', 256, 10 * 1024 * 1024)(opts.maxBody);
        const requestTimeout = typeof opts.requestTimeout === 'number' ? opts.requestTimeout : durationOpt('KEYROTOR_SERVE_REQUEST_TIMEOUT')(opts.requestTimeout);
        const safetyMargin = typeof opts.safetyMargin === 'number' ? opts.safetyMargin : durationOpt('--safety-margin')(opts.safetyMargin);
        const audiences = opts.audience.flatMap((a) => list(a));
        const emails = opts.allowedEmail.flatMap((a) => list(a));
        if (audiences.length > 0 && emails.length === 0 && !opts.allowAnyGoogleIdentity) {
          throw new KeyrotorError('USAGE', 'OIDC needs --allowed-email: any Google identity can get a token for any audience', {
            hint: 'pass the Cloud Scheduler / Pub/Sub push service account(s) with --allowed-email, or --allow-any-google-identity',
          });
        }
        if (emails.length > 0 && audiences.length === 0) throw new KeyrotorError('USAGE', '--allowed-email needs --audience');
        if (requestTimeout <= safetyMargin) throw new KeyrotorError('USAGE', '--request-timeout must be longer than --safety-margin');
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(opts.tokenEnv)) throw new KeyrotorError('USAGE', `--token-env must be an environment variable name (got ${JSON.stringify(opts.tokenEnv)})`);
        const auth = createAuthenticator({
          oidc: audiences.length ? { audiences, emails, ...(opts.jwksUrl ? { jwksUrl: opts.jwksUrl } : {}) } : undefined,
          bearer: bearerTokenFromEnv(env, opts.tokenEnv),
        });
        const cfg = await ctx.config();
        const logger = await ctx.logger();
        const srv = await startServer({
          config: cfg,
          auth,
          logger,
          stateStore: ctx.stateStore(cfg),
          env,
          host: opts.host,
          port,
          maxBodyBytes: maxBody,
          requestTimeoutMs: requestTimeout,
          safetyMarginMs: safetyMargin,
        });
        const signal = await new Promise<string>((resolve) => {
          const on = (s: string) => () => resolve(s);
          process.once('SIGTERM', on('SIGTERM'));
          process.once('SIGINT', on('SIGINT'));
        });
        logger.info({ signal }, 'stopping: running rotations pause at the next safe point');
        await srv.close();
      },
    );
};
