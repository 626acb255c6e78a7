// How a node's capture files become pcapng interfaces, for the merged download
// (node-pcapng.ts) and the live stream (live-follow.ts) alike: which pod interface a file
// belongs to, the order its files were written in, and the interface block and name records
// that announce it (docs/pcapng.md).
import type { PcapHeader } from '../pcap/format.js';
import { interfaceLabel } from '../pcap/interface-label.js';
import type { InterfaceOptions } from '../pcap/pcapng.js';
import { parseFileName } from './capture-store.js';
import type { FileSource } from './file-source.js';

/** The pod interface a file belongs to: its source, else what its name says (`<pod>_<iface>[-<micros>].pcap`). */
export function podInterfaceKey(base: string, source: FileSource | undefined): string {
  return source ? `${source.podUID}/${source.iface}/${source.linkType}/${source.snapLen}/${source.tsresol}` : `name:${base}`;
}

/** Files of one pod interface in the order they were written: rotated ones by their time, the live one last. */
export function inWrittenOrder<T extends { name: string }>(files: T[]): T[] {
  const when = (f: T): bigint => parseFileName(f.name).rotatedAt ?? BigInt(Number.MAX_SAFE_INTEGER) * 1000n;
  return [...files].sort((a, b) => (when(a) < when(b) ? -1 : when(a) > when(b) ? 1 : 0));
}

export interface CaptureOnNode {
  node: string;
  namespace: string;
  capture: string;
}

/**
 * The interface block of a pod interface whose files have this header, named from its source
 * (else from its files' base name), and the name records of its pod's IPs.
 */
export function podInterfaceBlock(o: CaptureOnNode, base: string, source: FileSource | undefined, header: PcapHeader): { idb: InterfaceOptions; names: { ip: string; names: string[] }[] } {
  const pod = source?.pod ?? base.split('_')[0]!;
  const iface = source?.iface ?? base.split('_').slice(1).join('_');
  const label = interfaceLabel({ ...o, pod, iface, podUID: source?.podUID });
  return {
    idb: { linkType: header.linktype, snapLen: header.snaplen, tsresol: header.nanoseconds ? 9 : 6, ...label },
    names: (source?.podIPs ?? []).map((ip) => ({ ip, names: [`${pod}.${o.namespace}`] })),
  };
}
