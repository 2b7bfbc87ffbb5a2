/**
 * A loopback TCP proxy (e.g. in front of PostgreSQL) that injects connection faults at seeded random
 * points:
 *   - `refuse`: a new connection is accepted and closed at once with a TCP reset, before a byte is
 *     read (what a client sees when the server is down or its backlog is full: ECONNRESET at connect);
 *   - `reset`: a chunk the client sends (a query, a COMMIT, ...) is forwarded with probability
 *     `resetApplied` first, then both sides of that connection are reset — the server may or may not
 *     have run the statement, the client never gets the answer.
 * `chaos(rng, { refuse, reset })` sets the probabilities (per new connection / per client chunk);
 * `calm()` turns faults off (open connections stay). `stats` counts what was injected. Never logs a
 * byte of what passes. The server is unref'd; close it in afterAll.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpChaos {
  /** probability that a new connection is refused */
  refuse?: number;
  /** probability that a client chunk ends its connection with a reset */
  reset?: number;
  /** of the resets: probability that the chunk reaches the server first (default 0.5) */
  resetApplied?: number;
}

export interface TcpFaultProxy {
  readonly port: number;
  /** the target URL with host and port replaced by the proxy's */
  url(target: string): string;
  chaos(rng: { next(): number }, c: TcpChaos): void;
  calm(): void;
  readonly stats: { connections: number; refused: number; resets: number; resetsApplied: number };
  close(): Promise<void>;
}

export async function startTcpFaultProxy(targetHost: string, targetPort: number): Promise<TcpFaultProxy> {
  let rng: { next(): number } | null = null;
  let c: TcpChaos = {};
  const stats = { connections: 0, refused: 0, resets: 0, resetsApplied: 0 };
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };

  const server: Server = createServer((client) => {
    track(client);
    stats.connections++;
    if (rng && rng.next() < (c.refuse ?? 0)) {
      stats.refused++;
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host: targetHost, port: targetPort });
    track(upstream);
    const end = () => {
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    client.on('data', (d: Buffer) => {
      if (rng && rng.next() < (c.reset ?? 0)) {
        stats.resets++;
        if (rng.next() < (c.resetApplied ?? 0.5)) {
          stats.resetsApplied++;
          upstream.write(d, () => setTimeout(end, 5));
        } else end();
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!client.destroyed) client.write(d);
    });
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  server.unref();
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  return {
    port,
    url: (target) => {
      const u = new URL(target);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    chaos: (r, x) => {
      rng = r;
      c = x;
    },
    calm: () => {
      rng = null;
    },
    stats,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      })),
  };
}
