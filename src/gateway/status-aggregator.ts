// The status aggregator (docs/status.md): while this gateway replica holds the Lease, it
// folds every capture's node reports into the capture's Calico-compatible status.files and
// status.summary, the only writer of both. Level-triggered like the agent's controller: a
// capture's key is queued by any change to the capture, to one of its reports or to a Node,
// and working on it compares what the reports say with what the status holds, writing at
// most once per interval (longer when the status is large). Reports of nodes that no longer
// exist are deleted, after the Node's absence is confirmed by a fresh read; nothing is
// pruned while Nodes cannot be listed.
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient } from '../kube/client.js';
import { deleteNodeReport, type NodeReport } from '../kube/node-report.js';
import { capturesPath, type PacketCapture } from '../kube/packetcapture.js';
import { Listeners } from '../kube/listeners.js';
import { objectKey, Reflector, type KubeObject } from '../kube/reflector.js';
import { WorkQueue, type WorkResult } from '../kube/work-queue.js';
import { foldReports, statusMatches, writeIntervalMs } from './aggregate-status.js';
import { captureKeyOf, type CaptureCache } from './capture-cache.js';

export interface AggregatorMetrics {
  statusWrite(): void;
  reportPruned(): void;
}

export interface AggregatorOptions {
  kube: KubeClient;
  /** The gateway's captures and reports (capture-cache.ts), started and stopped by its owner. */
  cache: CaptureCache;
  log: Logger;
  /** At least this long between two status writes of one capture. */
  minIntervalMs: number;
  /** Watch bytes per second one capture's status may cost each watcher (writeIntervalMs). */
  bytesPerSecond: number;
  resyncMs: number;
  apiTimeoutMs: number;
  metrics?: AggregatorMetrics;
}

export const AGGREGATOR_FIELD_MANAGER = 'kube-pcap-aggregator';

export class StatusAggregator {
  private readonly captures: Reflector<PacketCapture>;
  private readonly reports: Reflector<NodeReport>;
  private readonly nodes: Reflector<KubeObject>;
  private readonly lastWrite = new Map<string, number>();
  private readonly queue: WorkQueue;
  private timer: NodeJS.Timeout | undefined;
  /** What it listens to on the shared cache, taken off again when it stops leading. */
  private readonly listeners = new Listeners();

  constructor(private readonly o: AggregatorOptions) {
    this.captures = o.cache.captures;
    this.reports = o.cache.reports;
    // Nodes only matter for pruning: watched by the leader alone.
    this.nodes = new Reflector<KubeObject>(o.kube, { path: '/api/v1/nodes', metadataOnly: true, log: o.log.child({ watch: 'nodes' }), timeoutMs: o.apiTimeoutMs * 6 });
    this.queue = new WorkQueue((key) => this.work(key), {
      concurrency: 4,
      slotTimeoutMs: 30_000,
      baseDelayMs: 500,
      maxDelayMs: 30_000,
      onError: (key, err, retryInMs) => o.log.warn({ capture: key, err: (err as Error).message, retryInMs }, 'aggregating the status failed; will retry'),
    });
  }

  start(): void {
    this.listeners.on(this.captures, 'change', (_t: unknown, pc?: PacketCapture) => (pc ? this.queue.add(objectKey(pc)) : this.enqueueAll()));
    this.listeners.on(this.o.cache, 'reports-changed', (key: string) => this.queue.add(key));
    this.listeners.on(this.o.cache, 'reports-relisted', () => this.enqueueAll());
    this.nodes.on('change', (_t, node) => (node ? this.enqueueNode(node.metadata?.name ?? '') : this.enqueueAll()));
    for (const r of [this.captures, this.reports, this.nodes]) this.listeners.on(r, 'synced', () => this.enqueueAll());
    this.nodes.start();
    // The shared caches may have synced before this replica started leading.
    this.enqueueAll();
    this.timer = setInterval(() => this.enqueueAll(), this.o.resyncMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.listeners.offAll();
    await this.queue.shutDown();
    await this.nodes.stop();
  }

  private enqueueAll(): void {
    for (const pc of this.captures.items.values()) this.queue.add(objectKey(pc));
  }

  private enqueueNode(node: string): void {
    for (const r of this.reports.items.values()) if (r.spec?.nodeName === node) this.queue.add(captureKeyOf(r));
  }

  private async work(key: string): Promise<WorkResult | void> {
    if (!this.captures.synced || !this.reports.synced) return; // "synced" queues everything
    const pc = this.captures.items.get(key);
    if (!pc) {
      this.lastWrite.delete(key);
      return;
    }
    const uid = pc.metadata.uid ?? '';
    const reports = this.o.cache.reportsOf(key);
    const gone = await this.goneNodes(uid, reports);
    const fold = foldReports(uid, reports, (node) => (gone.has(node) ? 'absent' : 'present'));
    await this.prune(fold.gone);
    if (statusMatches(pc, fold)) return;
    const body = { status: { files: fold.files, summary: fold.files.length > 0 ? fold.summary : null } };
    const text = JSON.stringify(body);
    const interval = writeIntervalMs(Buffer.byteLength(text), this.o.minIntervalMs, this.o.bytesPerSecond);
    const now = Date.now();
    const wait = (this.lastWrite.get(key) ?? 0) + interval - now;
    if (wait > 0) return { requeueAfterMs: wait };
    this.lastWrite.set(key, now);
    try {
      await this.o.kube.request({
        method: 'PATCH',
        path: `${capturesPath(pc.metadata.namespace)}/${encodeURIComponent(pc.metadata.name)}/status`,
        query: { fieldManager: AGGREGATOR_FIELD_MANAGER },
        contentType: 'application/merge-patch+json',
        // The uid makes the write a precondition: a capture deleted and re-created under
        // the same name since it was read is refused, not given the old one's status.
        body: { metadata: { uid: pc.metadata.uid }, ...body },
        timeoutMs: this.o.apiTimeoutMs,
      });
      this.o.metrics?.statusWrite();
      this.o.log.debug({ capture: key, nodes: fold.files.length, summary: fold.summary, bytes: text.length }, 'status written');
    } catch (err) {
      // Gone or re-created since it was read: the capture watch brings the news.
      if (err instanceof KubeApiError && (err.status === 404 || err.status === 409 || err.status === 422)) return;
      throw err;
    }
  }

  /**
   * The nodes of these reports that no longer exist: the Node cache says so (never while it
   * is not synced: nothing is pruned when Nodes cannot be listed), and a fresh read confirms it.
   */
  private async goneNodes(uid: string, reports: NodeReport[]): Promise<Set<string>> {
    const gone = new Set<string>();
    if (!this.nodes.synced) return gone;
    const candidates = new Set(reports.filter((r) => r.spec?.captureUID === uid && !this.nodes.items.has(`/${r.spec.nodeName}`)).map((r) => r.spec.nodeName));
    for (const node of candidates) if (await this.nodeIsGone(node)) gone.add(node);
    return gone;
  }

  /** Deletes the reports of nodes that are gone (their status entries leave with the next write). */
  private async prune(reports: NodeReport[]): Promise<void> {
    for (const r of reports) {
      await deleteNodeReport(this.o.kube, r.metadata.namespace, r.metadata.name, r.metadata.uid);
      this.o.metrics?.reportPruned();
      this.o.log.info({ capture: `${r.metadata.namespace}/${r.spec.captureName}`, node: r.spec.nodeName }, 'node no longer exists: its report and status entry removed');
    }
  }

  /** True only when the API server says 404 for the Node now; any error keeps it. */
  private async nodeIsGone(node: string): Promise<boolean> {
    try {
      await this.o.kube.request({ path: `/api/v1/nodes/${encodeURIComponent(node)}`, accept: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json', timeoutMs: this.o.apiTimeoutMs });
      return false;
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return true;
      this.o.log.warn({ node, err: (err as Error).message }, 'cannot confirm that a node is gone; its entries stay');
      return false;
    }
  }
}
