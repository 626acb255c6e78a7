// PacketCaptures and their node reports as the gateway sees them: one list+watch of each
// (the project's reflector), shared by the request path and the status aggregator
// (docs/status.md, "The gateway's caches").
//
// A request reads the capture and its reports from memory: the GETs it made before were
// most of what an authorized request added over /healthz. The answers stay those of the
// API server: a capture the cache does not hold (created a moment ago, or the cache not
// synced yet) is read with a GET, and then its reports are listed fresh too, so a capture
// is never "not found" or "without files" only because the watch is a few milliseconds
// behind. A capture the cache holds is answered with the reports the cache holds, which
// lag the API server as the aggregated status does, by the watch's delay.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { KubeClient } from '../kube/client.js';
import { listCaptureReports, reportsPath, type NodeReport } from '../kube/node-report.js';
import { capturesPath, getPacketCapture, type PacketCapture } from '../kube/packetcapture.js';
import { objectKey, Reflector } from '../kube/reflector.js';

export interface CaptureCacheMetrics {
  /** One read of a capture (and its reports) for a request, from the cache or from the API server. */
  read(source: 'cache' | 'api'): void;
}

export interface CaptureCacheOptions {
  log: Logger;
  /** Per-request timeout of the lists and of the fallback reads. */
  apiTimeoutMs: number;
  metrics?: CaptureCacheMetrics;
}

/** The capture as read for a request, and its reports. */
export interface CaptureRead {
  capture: PacketCapture | undefined;
  /** Reports of this capture (by uid), when the capture exists. */
  reports: NodeReport[];
}

export declare interface CaptureCache {
  /** A capture's key ("<namespace>/<name>") whose reports changed; the index is up to date. */
  on(event: 'reports-changed', listener: (captureKey: string) => void): this;
  /** Reports were listed again: any capture's may have changed. */
  on(event: 'reports-relisted', listener: () => void): this;
}

export class CaptureCache extends EventEmitter {
  readonly captures: Reflector<PacketCapture>;
  readonly reports: Reflector<NodeReport>;
  /** Reports by capture key, then by report key. */
  private readonly byCapture = new Map<string, Map<string, NodeReport>>();

  constructor(private readonly kube: KubeClient, private readonly o: CaptureCacheOptions) {
    super();
    const timeoutMs = o.apiTimeoutMs * 6;
    this.captures = new Reflector<PacketCapture>(kube, { path: capturesPath(), log: o.log.child({ watch: 'packetcaptures' }), timeoutMs });
    this.reports = new Reflector<NodeReport>(kube, { path: reportsPath(), log: o.log.child({ watch: 'packetcapturenodereports' }), timeoutMs });
    this.reports.on('change', (type, r) => {
      if (!r) {
        this.reindex();
        this.emit('reports-relisted');
        return;
      }
      const key = captureKeyOf(r);
      if (type === 'DELETED') {
        const m = this.byCapture.get(key);
        m?.delete(objectKey(r));
        if (m?.size === 0) this.byCapture.delete(key);
      } else {
        this.index(objectKey(r), r);
      }
      this.emit('reports-changed', key);
    });
  }

  start(): void {
    this.captures.start();
    this.reports.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.captures.stop(), this.reports.stop()]);
  }

  get synced(): boolean {
    return this.captures.synced && this.reports.synced;
  }

  /** The reports the cache holds for a capture key, whatever their uid (the caller checks). */
  reportsOf(captureKey: string): NodeReport[] {
    return [...(this.byCapture.get(captureKey)?.values() ?? [])];
  }

  /**
   * The capture and its reports for a request: from memory when the cache holds the capture,
   * else read from the API server (a GET, and a list of its reports). Throws what the
   * client throws (the caller turns it into 503).
   */
  async read(namespace: string, name: string): Promise<CaptureRead> {
    const key = `${namespace}/${name}`;
    const cached = this.synced ? this.captures.items.get(key) : undefined;
    if (cached) {
      this.o.metrics?.read('cache');
      const uid = cached.metadata.uid ?? '';
      return { capture: cached, reports: this.reportsOf(key).filter((r) => r.spec?.captureUID === uid) };
    }
    this.o.metrics?.read('api');
    const capture = await getPacketCapture(this.kube, namespace, name, this.o.apiTimeoutMs);
    if (!capture) return { capture: undefined, reports: [] };
    const reports = await listCaptureReports(this.kube, { namespace, name, uid: capture.metadata.uid ?? '' }, this.o.apiTimeoutMs);
    return { capture, reports };
  }

  private reindex(): void {
    this.byCapture.clear();
    for (const [k, r] of this.reports.items) this.index(k, r);
  }

  private index(reportKey: string, r: NodeReport): void {
    const key = captureKeyOf(r);
    let m = this.byCapture.get(key);
    if (!m) this.byCapture.set(key, (m = new Map()));
    m.set(reportKey, r);
  }
}

export function captureKeyOf(r: NodeReport): string {
  return `${r.metadata.namespace}/${r.spec?.captureName ?? ''}`;
}
