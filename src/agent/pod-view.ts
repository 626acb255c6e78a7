// A pod as the agent sees it: the API server's object reduced to what planning needs, its
// addresses filled in from the runtime while the kubelet has not reported them yet.
import type { PodView } from './capture-plan.js';

export interface Pod {
  metadata?: { name?: string; namespace?: string; uid?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

/**
 * The agent's view of a pod. Its addresses are the kubelet's (status.podIPs); until the
 * kubelet has reported any, those the runtime's CNI result cache holds for the pod's uid
 * (cni-addresses.ts), so that a new pod is captured from its first packet.
 */
export function podView(p: Pod, runtimeIps?: (uid: string) => string[] | undefined): PodView {
  const uid = p.metadata?.uid ?? '';
  let ips = [...new Set([p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)].filter((x): x is string => typeof x === 'string' && x !== ''))];
  if (ips.length === 0 && p.spec?.hostNetwork !== true && uid !== '') ips = runtimeIps?.(uid) ?? [];
  return {
    namespace: p.metadata?.namespace ?? '',
    name: p.metadata?.name ?? '',
    uid,
    ip: ips[0],
    ips,
    labels: p.metadata?.labels ?? {},
    nodeName: p.spec?.nodeName,
    hostNetwork: p.spec?.hostNetwork === true,
    deleting: p.metadata?.deletionTimestamp !== undefined,
    phase: p.status?.phase,
  };
}
