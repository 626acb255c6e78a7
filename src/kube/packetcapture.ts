// The PacketCapture resource (projectcalico.org/v3), as deploy/crd defines it.
import { KubeApiError, type KubeClient } from './client.js';
import type { NamespacedObjectMeta } from './reflector.js';

export const PACKETCAPTURE = {
  group: 'projectcalico.org',
  version: 'v3',
  plural: 'packetcaptures',
  kind: 'PacketCapture',
  apiVersion: 'projectcalico.org/v3',
} as const;

export const CAPTURE_STATES = ['Scheduled', 'WaitingForTraffic', 'Capturing', 'Finished', 'Error'] as const;
export type CaptureState = (typeof CAPTURE_STATES)[number];

export interface PacketCaptureRule {
  protocol?: string | number;
  ports?: (string | number)[];
}

export interface PacketCaptureSpec {
  selector?: string;
  filters?: PacketCaptureRule[];
  startTime?: string;
  endTime?: string;
}

/** One node's entry in status.files (the aggregator folds it from the node's report). */
export interface NodeCaptureStatus {
  node: string;
  directory?: string;
  fileNames?: string[];
  state?: CaptureState;
  message?: string;
  pods?: number;
  packets?: number;
  bytes?: number;
  kernelDrops?: number;
}

export interface PacketCapture {
  apiVersion: string;
  kind: string;
  metadata: NamespacedObjectMeta;
  spec?: PacketCaptureSpec;
  status?: { files?: NodeCaptureStatus[]; summary?: string };
}

/**
 * status.summary, e.g. "2 Capturing, 1 WaitingForTraffic": what `kubectl get` shows, as
 * printer columns can show only one value. A pure function of status.files.
 */
export function summarizeStates(files: readonly NodeCaptureStatus[]): string {
  const counts = new Map<string, number>();
  for (const f of files) counts.set(f.state ?? 'Unknown', (counts.get(f.state ?? 'Unknown') ?? 0) + 1);
  return [...CAPTURE_STATES, 'Unknown']
    .filter((s) => counts.has(s))
    .map((s) => `${counts.get(s)} ${s}`)
    .join(', ');
}

export function capturesPath(namespace?: string): string {
  const base = `/apis/${PACKETCAPTURE.group}/${PACKETCAPTURE.version}`;
  return namespace ? `${base}/namespaces/${encodeURIComponent(namespace)}/${PACKETCAPTURE.plural}` : `${base}/${PACKETCAPTURE.plural}`;
}

/** The capture, or undefined when it does not exist. */
export async function getPacketCapture(client: KubeClient, namespace: string, name: string, timeoutMs?: number): Promise<PacketCapture | undefined> {
  try {
    return await client.request<PacketCapture>({ path: `${capturesPath(namespace)}/${encodeURIComponent(name)}`, timeoutMs });
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return undefined;
    throw err;
  }
}
