// Running a server: listen, reload its certificate when the files change, and drain on
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

/** Serves until a termination signal, then stops accepting and lets requests finish. */
export async function serveUntilSignal(app: FastifyInstance, listen: { host: string; port: number }, tls: TlsMaterial, log: Logger): Promise<void> {
  const stopTlsWatch = watchTls(app.server as unknown as Server, tls, log);
  try {
    await app.listen({ host: listen.host, port: listen.port });
    await waitForSignal(log);
  } finally {
    stopTlsWatch();
    await app.close();
  }
}
