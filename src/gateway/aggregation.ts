// Runs the status aggregator on the one gateway replica that holds the Lease
// (docs/status.md, "One writer"): it starts when this replica starts leading and stops, its
// Node watch with it, when it stops; the captures and reports it folds are the gateway's
// cache (capture-cache.ts), which every replica keeps for its requests anyway.
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { GatewayConfig } from '../config/gateway.js';
import type { KubeClient } from '../kube/client.js';
import { LeaderElector } from '../kube/leader-election.js';
import type { CaptureCache } from './capture-cache.js';
import { StatusAggregator } from './status-aggregator.js';
import type { CaptureFiles } from './capture-files.js';
import { ByteRate } from '../flow/byte-rate.js';
import { ExportController } from '../export/export-controller.js';

/** One capture's status may cost each PacketCapture watcher this many bytes per second. */
const STATUS_BYTES_PER_SECOND = 64 * 1024;

export interface Aggregation {
  elector: LeaderElector;
  stop(): Promise<void>;
}

export function startAggregation(kube: KubeClient, cache: CaptureCache, files: CaptureFiles, config: GatewayConfig, log: Logger, registry: Registry): Aggregation {
  const leader = new Gauge({ name: 'kube_pcap_gateway_status_aggregator_leader', help: '1 while this replica holds the Lease and writes PacketCapture status.', registers: [registry] });
  const writes = new Counter({ name: 'kube_pcap_gateway_status_writes_total', help: 'PacketCapture status writes by this replica\'s aggregator.', registers: [registry] });
  const pruned = new Counter({ name: 'kube_pcap_gateway_reports_pruned_total', help: 'Node reports deleted because their Node no longer exists.', registers: [registry] });
  const elector = new LeaderElector(kube, { ...config.leaderElection, log: log.child({ component: 'leader-election' }), timeoutMs: config.apiTimeoutMs });
  const exportBytes = new Counter({ name: 'kube_pcap_gateway_export_bytes_total', help: 'Bytes uploaded by PacketCaptureExports (after compression, as stored).', registers: [registry] });
  const exportsEnded = new Counter({ name: 'kube_pcap_gateway_export_attempts_total', help: 'PacketCaptureExport attempts by how they ended: succeeded, failed (the export failed), retried.', labelNames: ['result'], registers: [registry] });
  const exportsRunning = new Gauge({ name: 'kube_pcap_gateway_exports_running', help: 'PacketCaptureExports uploading on this replica.', registers: [registry] });
  const rate = config.exports.maxBytesPerSecond > 0 ? new ByteRate(config.exports.maxBytesPerSecond) : undefined;
  let aggregator: StatusAggregator | undefined;
  let exporter: ExportController | undefined;
  // Leadership can flip faster than an aggregator stops: each change waits for the last.
  let transition: Promise<void> = Promise.resolve();
  elector.on('started-leading', () => {
    leader.set(1);
    transition = transition.then(() => {
      if (!elector.isLeader) return;
      aggregator = new StatusAggregator({
        kube,
        cache,
        log: log.child({ component: 'status-aggregator' }),
        minIntervalMs: config.statusMinIntervalMs,
        bytesPerSecond: STATUS_BYTES_PER_SECOND,
        resyncMs: 5 * 60_000,
        apiTimeoutMs: config.apiTimeoutMs,
        metrics: { statusWrite: () => writes.inc(), reportPruned: () => pruned.inc() },
      });
      aggregator.start();
      if (!config.exports.enabled) return;
      exporter = new ExportController({
        kube,
        cache,
        files,
        log: log.child({ component: 'exporter' }),
        apiTimeoutMs: config.apiTimeoutMs,
        maxConcurrent: config.exports.maxConcurrent,
        partSizeBytes: config.exports.partSizeBytes,
        rate,
        resyncMs: 5 * 60_000,
        metrics: { bytes: (n) => exportBytes.inc(n), ended: (result) => exportsEnded.inc({ result }), running: (n) => exportsRunning.set(n) },
      });
      exporter.start();
    });
  });
  elector.on('stopped-leading', () => {
    leader.set(0);
    transition = transition.then(async () => {
      const a = aggregator;
      const x = exporter;
      aggregator = undefined;
      exporter = undefined;
      await Promise.all([a?.stop(), x?.stop()]);
    });
  });
  elector.start();
  return {
    elector,
    async stop() {
      // The aggregator stops writing before the Lease is released to the next replica.
      const a = aggregator;
      const x = exporter;
      aggregator = undefined;
      exporter = undefined;
      await Promise.all([a?.stop(), x?.stop()]);
      await elector.stop();
      await transition;
    },
  };
}
