/**
 * The HTTP plumbing of the loopback fault proxies in front of moto (aws-fault-proxy.ts for Secrets
 * Manager, dynamodb-fault-proxy.ts for DynamoDB): a server on a free 127.0.0.1 port that reads each
 * request whole and hands it to the proxy's handler, which either forwards it to the target
 * (`forward()`, keep-alive agent) and passes the answer on (`pass()`), or answers it itself. A handler
 * that throws gets a bare 502. Open sockets are tracked so `close()` ends at once; the server is
 * unref'd (close it in afterAll).
 */
import {
  Agent,
  createServer,
  request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Upstream {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface ProxiedRequest {
  req: IncomingMessage;
  res: ServerResponse;
  /** the AWS operation (`X-Amz-Target: <service>.<op>`), else the HTTP method */
  op: string;
  body: Buffer;
  /** send the request on to the target and read its answer whole */
  forward(): Promise<Upstream>;
  /** answer with what the target answered (re-framed with a content-length) */
  pass(up: Upstream): void;
}

export interface HttpProxy {
  endpoint: string;
  close(): Promise<void>;
}

export interface HttpProxyOptions {
  /** `target`: the forwarded request's Host header names the target; `client` (default): as the client sent it */
  hostHeader?: 'target' | 'client';
}

export function readAll(s: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

export async function startHttpProxy(
  target: string,
  handle: (r: ProxiedRequest) => Promise<void>,
  o: HttpProxyOptions = {},
): Promise<HttpProxy> {
  const t = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();

  const server: Server = createServer((req, res) => {
    void (async () => {
      const amz = req.headers['x-amz-target'];
      const op = typeof amz === 'string' ? amz.split('.').pop()! : (req.method ?? 'GET');
      try {
        const body = await readAll(req);
        const forward = () =>
          new Promise<Upstream>((resolve, reject) => {
            const headers = o.hostHeader === 'target' ? { ...req.headers, host: t.host } : { ...req.headers };
            const up = request(
              { host: t.hostname, port: t.port, method: req.method, path: req.url, headers, agent },
              (r) =>
                readAll(r).then((b) => resolve({ status: r.statusCode ?? 502, headers: r.headers, body: b }), reject),
            );
            up.on('error', reject);
            up.end(body);
          });
        const pass = (up: Upstream) => {
          const headers = { ...up.headers };
          delete headers['transfer-encoding'];
          headers['content-length'] = String(up.body.length);
          res.writeHead(up.status, headers);
          res.end(up.body);
        };
        await handle({ req, res, op, body, forward, pass });
      } catch {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      }
    })();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  server.unref();
  let closed: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      })),
  };
}
