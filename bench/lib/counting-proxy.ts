/**
 * A loopback HTTP proxy in front of moto that logs every request (method, path, `X-Amz-Target`
 * operation, status): moto keeps no request log of its own, and P2 counts requests per rotation.
 * Bodies pass through untouched and are never kept.
 */
import { Agent, createServer, request, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ProxyLogEntry {
  method: string;
  path: string;
  /** e.g. `PutSecretValue` (from `X-Amz-Target: secretsmanager.PutSecretValue`) */
  op: string;
  status: number;
}

export interface CountingProxy {
  endpoint: string;
  log: ProxyLogEntry[];
  close(): Promise<void>;
}

export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const t = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const log: ProxyLogEntry[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const amz = req.headers['x-amz-target'];
    const entry: ProxyLogEntry = {
      method: req.method ?? 'GET',
      path: (req.url ?? '/').split('?')[0]!,
      op: typeof amz === 'string' ? amz.split('.').pop()! : (req.method ?? 'GET'),
      status: 0,
    };
    log.push(entry);
    const up = request(
      {
        host: t.hostname,
        port: t.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: t.host },
        agent,
      },
      (r) => {
        entry.status = r.statusCode ?? 0;
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  server.unref();
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}
