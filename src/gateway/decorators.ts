// What the gateway's routes can reach on the fastify instance.
import type { Counter } from 'prom-client';
import type { CaptureFiles } from './capture-files.js';

export interface GatewayMetrics {
  bytesStreamed: Counter;
  downloads: Counter<'result'>;
  agentErrors: Counter<'operation'>;
}

declare module 'fastify' {
  interface FastifyInstance {
    captureFiles: CaptureFiles;
    gatewayMetrics: GatewayMetrics;
  }
}
