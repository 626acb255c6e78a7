// /healthz: the process serves requests. /readyz: it can do its job now (the API server
// answers, caches are synced); load balancers and probes send traffic only then.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { statusObject } from '../status.js';

export interface HealthOptions {
  /** Resolves to undefined when ready, or to the reason it is not. */
  notReadyReason: () => Promise<string | undefined>;
}

export const healthPlugin = fp(async (app: FastifyInstance, opts: HealthOptions) => {
  app.get('/healthz', { logLevel: 'warn' }, async (_request, reply) => reply.type('text/plain').send('ok'));
  app.get('/readyz', { logLevel: 'warn' }, async (_request, reply) => {
    const reason = await opts.notReadyReason();
    if (reason === undefined) return reply.type('text/plain').send('ok');
    return reply.code(503).header('retry-after', '5').type('application/json').send(statusObject(503, 'ServiceUnavailable', `not ready: ${reason}`));
  });
}, { name: 'kube-pcap-health' });
