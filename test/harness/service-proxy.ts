// What `kubectl port-forward service/kube-pcap-gateway 9443:9443` gives a user: one local
// address in front of the gateway's replicas. Connections are spread round-robin over the
// replicas (TLS passes through untouched); a replica that refuses is skipped.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Teardown } from './cluster.js';

export interface ServiceProxy {
  port: number;
  /** Connections each backend received. */
  counts: number[];
}

export async function serviceProxy(t: Teardown, backends: { host: string; port: number }[], listen: { host: string; port: number }): Promise<ServiceProxy> {
  const counts = backends.map(() => 0);
  let next = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const tryBackend = (attempt: number): void => {
      const i = next++ % backends.length;
      const upstream = createConnection(backends[i]!);
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      upstream.once('connect', () => {
        counts[i]!++;
        client.pipe(upstream).pipe(client);
      });
      upstream.once('error', () => {
        if (!upstream.readyState.startsWith('open') && attempt + 1 < backends.length) tryBackend(attempt + 1);
        else client.destroy();
      });
      client.once('error', () => upstream.destroy());
    };
    tryBackend(0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port, ipv6Only: false }, () => resolve());
  });
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : listen.port, counts };
}
