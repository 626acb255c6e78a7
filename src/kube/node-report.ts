// PacketCaptureNodeReport (kube-pcap.io/v1alpha1): one node's view of one capture, written
// by that node's agent alone (docs/status.md). Small, namespaced beside its capture, owned
// by it (garbage collection removes the reports with the capture), and selectable by
// spec.nodeName so an agent watches its own reports and nobody else's.
import { createHash } from 'node:crypto';
import { KubeApiError, type KubeClient } from './client.js';
import { PACKETCAPTURE, type NodeCaptureStatus } from './packetcapture.js';
import type { NamespacedObjectMeta } from './reflector.js';

export const NODE_REPORT = {
  group: 'kube-pcap.io',
  version: 'v1alpha1',
  plural: 'packetcapturenodereports',
  kind: 'PacketCaptureNodeReport',
  apiVersion: 'kube-pcap.io/v1alpha1',
} as const;

/**
 * A report's bounds, the CRD's schema (deploy/crd/) and the aggregator's alike: a report at
 * every limit is about 1 MiB, under etcd's 1.5 MiB request limit, and one node's agent
 * cannot make the gateway hold more than that per report (docs/security.md, "A node").
 */
export const REPORT_LIMITS = {
  fileNames: 4096,
  fileNameLength: 255,
  directoryLength: 4096,
  messageLength: 1024,
} as const;

/** Selects the reports of one capture (by uid: a capture re-created under its name is another). */
export const CAPTURE_UID_LABEL = 'kube-pcap.io/capture-uid';

/** What the node says; the Calico view's entry for the node is made of it. */
export type NodeReportStatus = Omit<NodeCaptureStatus, 'node'> & {
  /** When the counters (packets, bytes, kernelDrops) were last brought up to date. */
  countersTime?: string;
};

export interface NodeReport {
  apiVersion: string;
  kind: string;
  metadata: NamespacedObjectMeta & {
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec: { nodeName: string; captureName: string; captureUID: string };
  status?: NodeReportStatus;
}

export interface CaptureRef {
  namespace: string;
  name: string;
  uid: string;
}

export function reportsPath(namespace?: string): string {
  const base = `/apis/${NODE_REPORT.group}/${NODE_REPORT.version}`;
  return namespace ? `${base}/namespaces/${encodeURIComponent(namespace)}/${NODE_REPORT.plural}` : `${base}/${NODE_REPORT.plural}`;
}

/**
 * `<capture>.<node>`: both are DNS subdomains, so the join is one when it fits in 253
 * characters. When it does not, the capture's part is shortened and a hash of both keeps
 * the name unique; readers go by spec, never by parsing the name.
 */
export function reportName(capture: string, node: string): string {
  const joined = `${capture}.${node}`;
  if (joined.length <= 253) return joined;
  const hash = createHash('sha256').update(`${capture}/${node}`).digest('hex').slice(0, 16);
  const room = 253 - hash.length - 1;
  const head = joined.slice(0, room).replace(/[^a-z0-9]+$/, '');
  return `${head}.${hash}`;
}

/**
 * The Calico view's entry of status.files for this report, within REPORT_LIMITS whatever
 * the report holds (a CRD installed without them, or an older schema).
 */
export function entryOf(report: NodeReport): NodeCaptureStatus {
  const { countersTime: _time, ...status } = report.status ?? {};
  const entry: NodeCaptureStatus = { node: report.spec.nodeName, ...status };
  if (entry.fileNames && (entry.fileNames.length > REPORT_LIMITS.fileNames || entry.fileNames.some((f) => typeof f !== 'string' || f.length > REPORT_LIMITS.fileNameLength))) {
    entry.fileNames = entry.fileNames.filter((f) => typeof f === 'string' && f.length <= REPORT_LIMITS.fileNameLength).slice(-REPORT_LIMITS.fileNames);
  }
  if (typeof entry.directory === 'string' && entry.directory.length > REPORT_LIMITS.directoryLength) entry.directory = entry.directory.slice(0, REPORT_LIMITS.directoryLength);
  if (typeof entry.message === 'string' && entry.message.length > REPORT_LIMITS.messageLength) entry.message = entry.message.slice(0, REPORT_LIMITS.messageLength);
  return entry;
}

/** This node's report of the capture as an object: named, labelled and owned as every report is. */
export function nodeReportOf(capture: CaptureRef, node: string, status: NodeReportStatus): NodeReport {
  return {
    apiVersion: NODE_REPORT.apiVersion,
    kind: NODE_REPORT.kind,
    metadata: {
      name: reportName(capture.name, node),
      namespace: capture.namespace,
      labels: { [CAPTURE_UID_LABEL]: capture.uid },
      ownerReferences: [{ apiVersion: PACKETCAPTURE.apiVersion, kind: PACKETCAPTURE.kind, name: capture.name, uid: capture.uid, controller: true }],
    },
    spec: { nodeName: node, captureName: capture.name, captureUID: capture.uid },
    status,
  };
}

/**
 * Server-side applies this node's report of the capture: the agent's field manager owns
 * the whole object, and the ownerReference ties it to the capture's uid.
 */
export async function applyNodeReport(client: KubeClient, capture: CaptureRef, node: string, status: NodeReportStatus, fieldManager: string): Promise<NodeReport> {
  const body = nodeReportOf(capture, node, status);
  return await client.request<NodeReport>({
    method: 'PATCH',
    path: `${reportsPath(capture.namespace)}/${encodeURIComponent(body.metadata.name)}`,
    query: { fieldManager, force: true },
    contentType: 'application/apply-patch+yaml',
    body,
  });
}

/** Deletes a report, only if it is still the object `uid` names; false when it was already gone. */
export async function deleteNodeReport(client: KubeClient, namespace: string, name: string, uid?: string): Promise<boolean> {
  try {
    await client.request({
      method: 'DELETE',
      path: `${reportsPath(namespace)}/${encodeURIComponent(name)}`,
      body: { apiVersion: 'v1', kind: 'DeleteOptions', ...(uid ? { preconditions: { uid } } : {}) },
    });
    return true;
  } catch (err) {
    if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return false;
    throw err;
  }
}

/** The reports of one capture (every node's), read fresh. */
export async function listCaptureReports(client: KubeClient, capture: CaptureRef, timeoutMs?: number): Promise<NodeReport[]> {
  const out: NodeReport[] = [];
  let cont: string | undefined;
  do {
    const page = await client.request<{ items?: NodeReport[]; metadata?: { continue?: string } }>({
      path: reportsPath(capture.namespace),
      query: { labelSelector: `${CAPTURE_UID_LABEL}=${capture.uid}`, limit: 500, continue: cont },
      timeoutMs,
    });
    out.push(...(page.items ?? []).filter((r) => r.spec?.captureUID === capture.uid && r.spec.captureName === capture.name));
    cont = page.metadata?.continue || undefined;
  } while (cont);
  return out;
}
