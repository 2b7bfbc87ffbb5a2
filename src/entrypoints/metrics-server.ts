/**
 * A small HTTP listener for a long-running process that has no server of its own (`keyrotor daemon
 * --metrics-port`): Prometheus scrapes `GET /metrics`, an orchestrator probes `GET /healthz`.
 *
 *   GET /metrics   Prometheus text of processMetrics() (rotations, stages, key ages, process metrics)
 *   GET /healthz   200 {"status":"ok"} while running, 503 {"status":"stopping"} once it stops
 *
 * No authentication: it binds 127.0.0.1 unless told otherwise. The metrics carry key names, key ids
 * and timings, never a secret value; still, expose it beyond the host only on a network you trust.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { processMetrics, type Metrics } from '../app/metrics.ts';
import { KeyrotorError } from '../core/errors.ts';

export interface MetricsServerOptions {
  port: number;
  /** default 127.0.0.1 */
  host?: string;
  /** default processMetrics() */
  metrics?: Metrics;
  /** false once the process is stopping (healthz answers 503) */
  healthy?: () => boolean;
}

export interface MetricsServer {
  /** e.g. http://127.0.0.1:9464 */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const DEFAULT_METRICS_HOST = '127.0.0.1';

export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const metrics = o.metrics ?? processMetrics();
  const host = o.host ?? DEFAULT_METRICS_HOST;
  const json = (status: number, body: unknown) => ({ status, body: JSON.stringify(body) + '\n' });
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const reply = (r: { status: number; body: string }, type = 'application/json') => {
      res.writeHead(r.status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : r.body);
    };
    if (path !== '/metrics' && path !== '/healthz')
      return reply(json(404, { error: { code: 'NOT_FOUND', message: `no route ${path}` } }));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return reply(json(405, { error: { code: 'METHOD_NOT_ALLOWED', message: 'use GET' } }));
    }
    if (path === '/healthz') {
      const ok = o.healthy?.() ?? true;
      return reply(json(ok ? 200 : 503, { status: ok ? 'ok' : 'stopping' }));
    }
    metrics.text().then(
      (text) => reply({ status: 200, body: text }, metrics.contentType),
      () => reply(json(500, { error: { code: 'INTERNAL', message: 'metrics unavailable' } })),
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new KeyrotorError('USAGE', `cannot listen on ${host}:${o.port} for metrics (${e.code ?? e.message})`, {
          cause: e,
        }),
      ),
    );
    server.listen(o.port, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
