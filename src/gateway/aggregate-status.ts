// The Calico view of a capture, folded from its node reports (docs/status.md). Pure: the
// aggregator observes, this decides.
import { summarizeStates, type NodeCaptureStatus, type PacketCapture } from '../kube/packetcapture.js';
import { entryOf, type NodeReport } from '../kube/node-report.js';

/** Whether a node exists: known from the synced Node cache, or not known (the cache is not synced). */
export type NodePresence = (node: string) => 'present' | 'absent' | 'unknown';

export interface Fold {
  /** status.files: one entry per existing node that reports on this capture, by node name. */
  files: NodeCaptureStatus[];
  summary: string;
  /** Reports of nodes the Node cache says are gone: to be confirmed and deleted. */
  gone: NodeReport[];
}

export function foldReports(uid: string, reports: Iterable<NodeReport>, presence: NodePresence): Fold {
  const files: NodeCaptureStatus[] = [];
  const gone: NodeReport[] = [];
  for (const r of reports) {
    // A report of an earlier capture of the same name waits for garbage collection.
    if (r.spec?.captureUID !== uid || r.metadata.deletionTimestamp) continue;
    // Never pruned on a guess: "unknown" (Nodes not listed) keeps the entry.
    if (presence(r.spec.nodeName) === 'absent') {
      gone.push(r);
      continue;
    }
    files.push(entryOf(r));
  }
  files.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  return { files: fitFiles(files, STATUS_MAX_BYTES), summary: summarizeStates(files), gone };
}

/**
 * What status.files may weigh: the capture's whole object must stay under etcd's 1.5 MiB
 * request limit however many nodes report at their limits (docs/security.md, "A node").
 */
export const STATUS_MAX_BYTES = 1024 * 1024;

/**
 * status.files within `maxBytes`: every node keeps its entry, and when the lists of file
 * names are too long together, each is cut to its last `k` names, `k` halved until the
 * whole fits. The download lists the nodes' files itself; the names are a summary.
 */
export function fitFiles(files: NodeCaptureStatus[], maxBytes: number): NodeCaptureStatus[] {
  let size = Buffer.byteLength(JSON.stringify(files));
  let k = Math.max(0, ...files.map((f) => f.fileNames?.length ?? 0));
  let out = files;
  while (size > maxBytes && k > 0) {
    k = Math.floor(k / 2);
    const keep = k;
    out = files.map((f) => (f.fileNames && f.fileNames.length > keep ? { ...f, fileNames: keep > 0 ? f.fileNames.slice(-keep) : [] } : f));
    size = Buffer.byteLength(JSON.stringify(out));
  }
  return out;
}

/** The status as the API server would hold it, for comparison (key order and empty lists normalised). */
function canonical(files: readonly NodeCaptureStatus[], summary: string | undefined): string {
  const entry = (f: NodeCaptureStatus): unknown[] => [f.node, f.directory ?? '', f.fileNames ?? [], f.state ?? '', f.message ?? '', f.pods ?? 0, f.packets ?? 0, f.bytes ?? 0, f.kernelDrops ?? 0];
  return JSON.stringify([[...files].sort((a, b) => (a.node < b.node ? -1 : 1)).map(entry), summary ?? '']);
}

export function statusMatches(pc: PacketCapture, fold: Fold): boolean {
  return canonical(pc.status?.files ?? [], pc.status?.summary) === canonical(fold.files, fold.files.length > 0 ? fold.summary : '');
}

/**
 * How long to wait between two status writes of one capture: at least `minMs`, and long
 * enough that every watcher of PacketCaptures receives at most `bytesPerSecond` of this
 * capture's status. At 1 000 nodes a status of ~200 KiB is written every ~3 s instead of
 * every second; at 50 nodes, every second.
 */
export function writeIntervalMs(statusBytes: number, minMs: number, bytesPerSecond: number): number {
  return Math.max(minMs, Math.ceil((statusBytes / bytesPerSecond) * 1000));
}
