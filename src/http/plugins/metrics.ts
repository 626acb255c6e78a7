// Prometheus metrics: one registry per server (several servers can share a process in
// tests). Two units: the request counters (a hook on the app whose requests they count)
// and the /metrics endpoint (on whichever listener serves it: the agent's own, the
// gateway's operations listener).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { collectDefaultMetrics, Counter, Histogram, type Registry } from 'prom-client';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Registry;
  }
}

export interface RequestMetricsOptions {
  registry: Registry;
  prefix: string;
}

/** Request counts and latency by route and code, and the default process metrics. */
export const requestMetricsPlugin = fp(async (app: FastifyInstance, opts: RequestMetricsOptions) => {
  const { registry, prefix } = opts;
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: `${prefix}_http_requests_total`, help: 'HTTP requests by route, method and status code.', labelNames: ['route', 'method', 'code'], registers: [registry] });
  const duration = new Histogram({ name: `${prefix}_http_request_duration_seconds`, help: 'Time to the end of the response, by route.', labelNames: ['route'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [registry] });
  app.decorate('metrics', registry);
  app.addHook('onResponse', async (request, reply) => {
    // The route template, never the concrete URL: bounded label values.
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ route, method: request.method, code: String(reply.statusCode) });
    duration.observe({ route }, reply.elapsedTime / 1000);
  });
}, { name: 'kube-pcap-request-metrics' });

export interface MetricsEndpointOptions {
  registry: Registry;
  /**
   * Who may read /metrics (throws a verdict of src/auth/verdict.ts, answered 401/403/503).
   * Metrics name namespaces, captures and users' activity, so every server asks
   * (auth/metrics-reader.ts).
   */
  authorize: (request: FastifyRequest) => Promise<void>;
}

export const metricsEndpointPlugin = fp(async (app: FastifyInstance, opts: MetricsEndpointOptions) => {
  const { registry, authorize } = opts;
  app.get('/metrics', { logLevel: 'warn', preHandler: async (request: FastifyRequest) => await authorize(request) }, async (_request, reply) => {
    void reply.type(registry.contentType);
    return await registry.metrics();
  });
}, { name: 'kube-pcap-metrics-endpoint' });
