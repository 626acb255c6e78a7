// The exporter as work of the Lease holder (docs/export.md, "How an export runs"): its
// metrics registered once, an ExportController for each term of leadership, sharing one byte
// rate (--export-max-bytes-per-second) across terms.
import { Counter, Gauge } from 'prom-client';
import { ByteRate } from '../flow/byte-rate.js';
import type { LeaderWorkFactory } from '../gateway/aggregation.js';
import { ExportController } from './export-controller.js';

export const exporterWork: LeaderWorkFactory = ({ kube, cache, files, config, log, registry }) => {
  const bytes = new Counter({ name: 'kube_pcap_gateway_export_bytes_total', help: 'Bytes uploaded by PacketCaptureExports (after compression, as stored).', registers: [registry] });
  const ended = new Counter({ name: 'kube_pcap_gateway_export_attempts_total', help: 'PacketCaptureExport attempts by how they ended: succeeded, failed (the export failed), retried.', labelNames: ['result'], registers: [registry] });
  const running = new Gauge({ name: 'kube_pcap_gateway_exports_running', help: 'PacketCaptureExports uploading on this replica.', registers: [registry] });
  const rate = config.exports.maxBytesPerSecond > 0 ? new ByteRate(config.exports.maxBytesPerSecond) : undefined;
  return () => new ExportController({
    kube,
    cache,
    files,
    log: log.child({ component: 'exporter' }),
    apiTimeoutMs: config.apiTimeoutMs,
    maxConcurrent: config.exports.maxConcurrent,
    partSizeBytes: config.exports.partSizeBytes,
    rate,
    resyncMs: 5 * 60_000,
    metrics: { bytes: (n) => bytes.inc(n), ended: (result) => ended.inc({ result }), running: (n) => running.set(n) },
  });
};
