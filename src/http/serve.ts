// Running servers: listen, reload their certificate when the files change, and drain on
// SIGTERM/SIGINT (what Kubernetes sends before it kills a pod).
import type { Server } from 'node:https';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { watchTls, type TlsMaterial } from './tls.js';

async function waitForSignal(log: Logger): Promise<void> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'shutting down');
}

export interface Listener {
  app: FastifyInstance;
  listen: { host: string; port: number };
}

/**
 * Serves until a termination signal, then stops accepting and lets requests finish. The
 * first listener is the main one; the others (operations) close after it, so probes keep
 * answering while it drains.
 */
export async function serveUntilSignal(listeners: Listener[], tls: TlsMaterial, log: Logger): Promise<void> {
  const stops = listeners.map(({ app }) => watchTls(app.server as unknown as Server, tls, log));
  try {
    for (const { app, listen } of listeners) await app.listen({ host: listen.host, port: listen.port });
    await waitForSignal(log);
  } finally {
    for (const stop of stops) stop();
    for (const { app } of listeners) await app.close();
  }
}
