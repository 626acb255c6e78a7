// The manifest object written beside an export's data (docs/export.md, "The manifest"): what
// a recipient needs to check what they got without access to the cluster — which capture,
// which nodes and files, how many packets over which time, and each object's size and
// SHA-256. Written last: its presence says the data objects before it are complete.
import { earlier, later, packetTimeIso, type PacketTime } from '../pcap/pcap-tally.js';
import { KUBE_PCAP_VERSION } from '../version.js';
import type { FileRecord } from './export-objects.js';
import type { ExportedObject, ExportSettings, PacketCaptureExport } from './packetcapture-export.js';

export const MANIFEST_KIND = 'kube-pcap.io/PacketCaptureExportManifest';
export const MANIFEST_VERSION = 1;

export interface ManifestInput {
  exp: PacketCaptureExport;
  settings: ExportSettings;
  captureUID: string;
  objects: (ExportedObject & { contentType: string })[];
  files: FileRecord[];
  missing: { node: string; problem: string; why: string }[];
  startTime: Date;
  completionTime: Date;
}

export interface Manifest {
  kind: typeof MANIFEST_KIND;
  version: number;
  kubePcapVersion: string;
  export: { namespace: string; name: string; uid: string; format: string; compression: string; when: string; partial: boolean };
  capture: { namespace: string; name: string; uid: string };
  startTime: string;
  completionTime: string;
  packets: number | null;
  bytes: number;
  firstPacketTime: string | null;
  lastPacketTime: string | null;
  objects: { key: string; size: number; sha256: string; contentType: string; packets: number | null }[];
  nodes: { node: string; files: { name: string; size: number; modified: string; object: string; packets: number | null; firstPacketTime: string | null; lastPacketTime: string | null }[] }[];
  /** With partial: nodes that held files but were left out, and why. */
  missing: { node: string; problem: string; why: string }[];
}

export function buildManifest(m: ManifestInput): Manifest {
  const byNode = new Map<string, FileRecord[]>();
  for (const f of m.files) byNode.set(f.node, [...(byNode.get(f.node) ?? []), f]);
  let first: PacketTime | undefined;
  let last: PacketTime | undefined;
  for (const f of m.files) {
    first = earlier(first, f.first);
    last = later(last, f.last);
  }
  const counted = m.objects.every((o) => o.packets !== undefined);
  return {
    kind: MANIFEST_KIND,
    version: MANIFEST_VERSION,
    kubePcapVersion: KUBE_PCAP_VERSION,
    export: {
      namespace: m.exp.metadata.namespace, name: m.exp.metadata.name, uid: m.exp.metadata.uid ?? '',
      format: m.settings.format, compression: m.settings.compression, when: m.settings.when, partial: m.settings.partial,
    },
    capture: { namespace: m.exp.metadata.namespace, name: m.settings.captureName, uid: m.captureUID },
    startTime: m.startTime.toISOString(),
    completionTime: m.completionTime.toISOString(),
    packets: counted ? m.objects.reduce((sum, o) => sum + (o.packets ?? 0), 0) : null,
    bytes: m.objects.reduce((sum, o) => sum + o.size, 0),
    firstPacketTime: first ? packetTimeIso(first) : null,
    lastPacketTime: last ? packetTimeIso(last) : null,
    objects: m.objects.map((o) => ({ key: o.key, size: o.size, sha256: o.sha256, contentType: o.contentType, packets: o.packets ?? null })),
    nodes: [...byNode.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([node, files]) => ({
      node,
      files: files.map((f) => ({
        name: f.name, size: f.size, modified: f.modified, object: f.key, packets: f.packets ?? null,
        firstPacketTime: f.first ? packetTimeIso(f.first) : null, lastPacketTime: f.last ? packetTimeIso(f.last) : null,
      })),
    })),
    missing: m.missing.map((x) => ({ node: x.node, problem: x.problem, why: x.why })),
  };
}
