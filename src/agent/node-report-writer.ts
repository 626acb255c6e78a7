// Writing this node's report of a capture (a PacketCaptureNodeReport, docs/status.md) when
// it differs from the one the API server holds, at a bounded cadence: the controller
// computes the entry (capture-plan.ts), this decides whether and when it goes out.
import type { KubeClient } from '../kube/client.js';
import { applyNodeReport, deleteNodeReport, type NodeReport } from '../kube/node-report.js';
import type { NodeCaptureStatus, PacketCapture } from '../kube/packetcapture.js';

/** Per capture: when its report was last written, and the counters it carried. */
export interface ReportCadence {
  lastWrite: number;
  /** The counters last put in the report, and when: they move at most once per counter interval. */
  counters: { packets: number; bytes: number; kernelDrops: number; at: number } | undefined;
}

export interface NodeReportWriterOptions {
  kube: KubeClient;
  nodeName: string;
  /** At most one write per capture per this interval. */
  statusIntervalMs: number;
  /** Counters move at most this often (and with a state change). */
  counterIntervalMs: number;
}

export class NodeReportWriter {
  private readonly fieldManager: string;

  constructor(private readonly o: NodeReportWriterOptions) {
    this.fieldManager = `kube-pcap-agent/${o.nodeName}`;
  }

  /**
   * Writes this node's report when it differs from what the API server holds; returns the
   * debounce wait. State, files and messages go out within the status interval; counters
   * move with a state change and otherwise once per counter interval (Prometheus has them
   * live), so a busy capture does not turn into a stream of writes.
   */
  async write(pc: PacketCapture, rt: ReportCadence, entry: NodeCaptureStatus | undefined, report: NodeReport | undefined, observed: NodeCaptureStatus | undefined): Promise<number | undefined> {
    const { namespace, name } = pc.metadata;
    const uid = pc.metadata.uid ?? '';
    const now = Date.now();
    if (report && report.spec?.captureUID !== uid) {
      // An earlier capture's report under this name, not yet garbage-collected: its spec is
      // immutable, so it goes before this capture's is written.
      await deleteNodeReport(this.o.kube, namespace, report.metadata.name, report.metadata.uid);
    }
    if (!entry) {
      if (observed && report) await deleteNodeReport(this.o.kube, namespace, report.metadata.name, report.metadata.uid);
      return undefined;
    }
    // A state change carries the counters of its moment (never "Capturing, 0 packets");
    // otherwise they move once per counter interval.
    const due = rt.counters === undefined || now - rt.counters.at >= this.o.counterIntervalMs || entry.state !== observed?.state;
    const counters = due ? { packets: entry.packets ?? 0, bytes: entry.bytes ?? 0, kernelDrops: entry.kernelDrops ?? 0, at: now } : rt.counters!;
    const essential = (e: NodeCaptureStatus | undefined): string => (e ? JSON.stringify([e.state, e.directory, e.fileNames ?? [], e.message ?? '', e.pods ?? 0]) : 'none');
    const countersOf = (e: NodeCaptureStatus | undefined): string => (e ? JSON.stringify([e.packets ?? 0, e.bytes ?? 0, e.kernelDrops ?? 0]) : '');
    const essentialChange = essential(entry) !== essential(observed);
    const countersChange = countersOf(entry) !== countersOf(observed);
    if (!essentialChange && !(countersChange && due)) {
      // Nothing to write now; unwritten counters are due at the next counter interval.
      return countersChange && rt.counters ? rt.counters.at + this.o.counterIntervalMs - now : undefined;
    }
    const wait = rt.lastWrite + this.o.statusIntervalMs - now;
    if (wait > 0) return wait;
    rt.lastWrite = now;
    rt.counters = counters;
    const { node: _node, ...status } = entry;
    await applyNodeReport(this.o.kube, { namespace, name, uid }, this.o.nodeName, {
      ...status,
      packets: counters.packets,
      bytes: counters.bytes,
      kernelDrops: counters.kernelDrops,
      countersTime: new Date(counters.at).toISOString(),
    }, this.fieldManager);
    return undefined;
  }
}
