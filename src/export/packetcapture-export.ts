// The PacketCaptureExport resource (kube-pcap.io/v1alpha1), as
// deploy/export/packetcaptureexports.kube-pcap.io.yaml defines it (docs/export.md), and the
// one way its status is written: a merge patch of the status subresource, with the export's
// uid as a precondition, so an export deleted and re-created under the same name is never
// given the old one's status.
import { KubeApiError, type KubeClient } from '../kube/client.js';
import type { NamespacedObjectMeta } from '../kube/reflector.js';

export const PACKETCAPTUREEXPORT = {
  group: 'kube-pcap.io',
  version: 'v1alpha1',
  plural: 'packetcaptureexports',
  kind: 'PacketCaptureExport',
} as const;

export type ExportFormat = 'zip' | 'pcapng' | 'files';
export type ExportCompression = 'none' | 'zstd' | 'gzip';
export type ExportWhen = 'Now' | 'OnFinish' | 'Continuous';
export type ExportPhase = 'Pending' | 'Uploading' | 'Succeeded' | 'Failed';

export interface S3DestinationSpec {
  endpoint?: string;
  insecureEndpoint?: boolean;
  region?: string;
  bucket: string;
  keyPrefix?: string;
  forcePathStyle?: boolean;
  serverSideEncryption?: { type: 'AES256' | 'aws:kms'; kmsKeyId?: string };
  credentials?: { secretRef?: { name: string } };
}

export interface ExportSpec {
  captureName: string;
  format?: ExportFormat;
  compression?: ExportCompression;
  when?: ExportWhen;
  continuousDelaySeconds?: number;
  partial?: boolean;
  destination: { s3: S3DestinationSpec };
}

export interface ExportedObject {
  key: string;
  size: number;
  sha256: string;
  /** Packets in it (a files export's file, a merged pcapng; absent for a zip). */
  packets?: number;
}

export interface ExportCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
  observedGeneration?: number;
}

export interface ExportStatus {
  phase?: ExportPhase;
  message?: string;
  destination?: string;
  captureUID?: string;
  attempts?: number;
  lastAttemptTime?: string;
  startTime?: string;
  completionTime?: string;
  bytes?: number;
  packets?: number;
  objectCount?: number;
  manifestKey?: string;
  objects?: ExportedObject[];
  observedGeneration?: number;
  conditions?: ExportCondition[];
}

export interface PacketCaptureExport {
  apiVersion: string;
  kind: string;
  metadata: NamespacedObjectMeta;
  spec: ExportSpec;
  status?: ExportStatus;
}

/** The spec with the CRD's defaults filled in (an API server older than the CRD's defaults, or a test's object). */
export interface ExportSettings {
  captureName: string;
  format: ExportFormat;
  compression: ExportCompression;
  when: ExportWhen;
  continuousDelayMs: number;
  partial: boolean;
  s3: S3DestinationSpec;
  /** Every key starts with this; ends in / unless the user chose otherwise. */
  keyPrefix: string;
}

export function exportSettings(e: PacketCaptureExport): ExportSettings {
  const s = e.spec;
  const { namespace, name } = e.metadata;
  return {
    captureName: s.captureName,
    format: s.format ?? 'zip',
    compression: s.compression ?? 'none',
    when: s.when ?? 'OnFinish',
    continuousDelayMs: (s.continuousDelaySeconds ?? 60) * 1000,
    partial: s.partial ?? false,
    s3: s.destination.s3,
    keyPrefix: s.destination.s3.keyPrefix ?? `${namespace}/${s.captureName}/${name}/`,
  };
}

export function exportsPath(namespace?: string): string {
  const base = `/apis/${PACKETCAPTUREEXPORT.group}/${PACKETCAPTUREEXPORT.version}`;
  return namespace ? `${base}/namespaces/${encodeURIComponent(namespace)}/${PACKETCAPTUREEXPORT.plural}` : `${base}/${PACKETCAPTUREEXPORT.plural}`;
}

export const EXPORT_FIELD_MANAGER = 'kube-pcap-exporter';

/**
 * Writes these status fields (a merge patch: fields left out keep their value, null removes
 * one). False when the export is gone or was re-created since it was read, or, with
 * `unchangedSince`, when it changed since that read: a decision made on a stale read (the
 * watch a moment behind this replica's own last write) is not acted on.
 */
export async function patchExportStatus(kube: KubeClient, e: PacketCaptureExport, status: Partial<Record<keyof ExportStatus, unknown>>, timeoutMs: number, unchangedSince?: string): Promise<boolean> {
  try {
    await kube.request({
      method: 'PATCH',
      path: `${exportsPath(e.metadata.namespace)}/${encodeURIComponent(e.metadata.name)}/status`,
      query: { fieldManager: EXPORT_FIELD_MANAGER },
      contentType: 'application/merge-patch+json',
      body: { metadata: { uid: e.metadata.uid, ...(unchangedSince ? { resourceVersion: unchangedSince } : {}) }, status },
      timeoutMs,
    });
    return true;
  } catch (err) {
    if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return false;
    throw err;
  }
}

/** `conditions` with one condition set: its transition time kept while its status holds. */
export function withCondition(conditions: ExportCondition[] | undefined, c: Omit<ExportCondition, 'lastTransitionTime'>, now: Date): ExportCondition[] {
  const list = (conditions ?? []).filter((x) => x.type !== c.type);
  const old = conditions?.find((x) => x.type === c.type);
  list.push({ ...c, lastTransitionTime: old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString() });
  return list.sort((a, b) => a.type.localeCompare(b.type));
}
