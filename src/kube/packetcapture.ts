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
  // kube-pcap's extensions to Calico's resource (docs/agent.md, "Capture limits").
  /** Bytes kept of each packet; tcpdump's whole packet (262 144) when absent. */
  snapLen?: number;
  /** Packets written per node, after which the capture is Finished on that node. */
  maxPackets?: number;
  /** Record bytes (16-byte header + captured bytes) written per node, likewise. */
  maxBytes?: number;
}

/** tcpdump's largest snap length, and what it keeps when none is given. */
export const MAX_SNAPLEN = 262_144;

export interface CaptureLimitSpec {
  snapLen: number | undefined;
  maxPackets: number | undefined;
  maxBytes: number | undefined;
}

export class CaptureSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaptureSpecError';
  }
}

/**
 * The spec's limits, checked as the CRD checks them (deploy/crd): the agent does not rely on
 * the API server, which may be Calico's own and not know these fields.
 */
export function captureLimitSpec(spec: PacketCaptureSpec | undefined): CaptureLimitSpec {
  const field = (name: 'snapLen' | 'maxPackets' | 'maxBytes', max: number, why: string): number | undefined => {
    const v: unknown = spec?.[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > max) throw new CaptureSpecError(`spec.${name} must be a whole number from 1 to ${max}${why}`);
    return v;
  };
  return {
    snapLen: field('snapLen', MAX_SNAPLEN, ` (tcpdump's largest); leave it out to keep whole packets`),
    maxPackets: field('maxPackets', Number.MAX_SAFE_INTEGER, ''),
    maxBytes: field('maxBytes', Number.MAX_SAFE_INTEGER, ''),
  };
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
