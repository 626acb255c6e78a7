// Reading what agents report (their PacketCaptureNodeReports, docs/status.md), making the
// Node objects a real cluster would have for the harness's nodes, and writing a status
// entry by hand as agents older than the reports did.
import type { KubeClient } from '../../src/kube/client.js';
import { KubeApiError } from '../../src/kube/client.js';
import { entryOf, reportsPath, type NodeReport } from '../../src/kube/node-report.js';
import { capturesPath, getPacketCapture, type NodeCaptureStatus } from '../../src/kube/packetcapture.js';

/** Every node's report of the capture as it exists now (reports of an earlier capture of the name left out). */
export async function captureReports(kube: KubeClient, namespace: string, capture: string): Promise<Map<string, NodeReport>> {
  const pc = await getPacketCapture(kube, namespace, capture);
  const out = new Map<string, NodeReport>();
  if (!pc) return out;
  const list = await kube.request<{ items?: NodeReport[] }>({ path: reportsPath(namespace), query: { fieldSelector: `spec.captureName=${capture}` } });
  for (const r of list.items ?? []) if (r.spec.captureUID === pc.metadata.uid) out.set(r.spec.nodeName, r);
  return out;
}

/** One node's entry, in the shape of status.files, from its report. */
export async function reportedEntry(kube: KubeClient, namespace: string, capture: string, node: string): Promise<NodeCaptureStatus | undefined> {
  const r = (await captureReports(kube, namespace, capture)).get(node);
  return r ? entryOf(r) : undefined;
}

/** The Node object of a harness node (idempotent), as the kubelet would register it. */
export async function ensureNode(kube: KubeClient, name: string): Promise<void> {
  try {
    await kube.request({ method: 'POST', path: '/api/v1/nodes', body: { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kube-pcap-test/harness': 'true' } } } });
  } catch (err) {
    if (!(err instanceof KubeApiError && err.status === 409)) throw err;
  }
}

export async function deleteNode(kube: KubeClient, name: string): Promise<void> {
  try {
    await kube.request({ method: 'DELETE', path: `/api/v1/nodes/${encodeURIComponent(name)}` });
  } catch (err) {
    if (!(err instanceof KubeApiError && err.status === 404)) throw err;
  }
}

/**
 * Writes one node's entry of status.files by server-side apply, as agents did before node
 * reports: the gateway reads it when a capture has no reports at all.
 */
export async function applyNodeStatus(kube: KubeClient, ref: { namespace: string; name: string }, fieldManager: string, entry: NodeCaptureStatus | undefined, summary?: string): Promise<boolean> {
  try {
    await kube.request({
      method: 'PATCH',
      path: `${capturesPath(ref.namespace)}/${encodeURIComponent(ref.name)}/status`,
      query: { fieldManager, force: true },
      contentType: 'application/apply-patch+yaml',
      body: { apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: ref.name, namespace: ref.namespace }, status: { files: entry ? [entry] : [], ...(summary !== undefined ? { summary } : {}) } },
    });
    return true;
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return false;
    throw err;
  }
}
