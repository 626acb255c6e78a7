// What the gateway's routes can reach on the fastify instance.
import type { Counter } from 'prom-client';
import type { ConcurrencyLimit } from '../flow/concurrency-limit.js';
import type { CaptureFiles } from './capture-files.js';
import type { PerUserSlots } from '../http/per-user-slots.js';

export interface GatewayMetrics {
  bytesStreamed: Counter;
  /** Bytes sent after Content-Encoding, by coding (files.pcapng and the live stream). */
  encodedBytes: Counter<'coding'>;
  downloads: Counter<'result'>;
  pcapngDownloads: Counter<'result'>;
  agentErrors: Counter<'operation'>;
}

declare module 'fastify' {
  interface FastifyInstance {
    captureFiles: CaptureFiles;
    gatewayMetrics: GatewayMetrics;
    /** Places for files.zip streams (--max-concurrent-downloads, --download-queue). */
    downloadSlots: ConcurrencyLimit;
    /** Places for live streams (--max-live-streams), no queue: a viewer waits for nothing. */
    liveSlots: ConcurrencyLimit;
    /** What one identity may hold of the places above (per-user-slots.ts). */
    userDownloadSlots: PerUserSlots;
    userLiveSlots: PerUserSlots;
    /** How often long responses authorize their caller again (src/http/access-watch.ts). */
    accessRecheckMs: number;
  }
}
