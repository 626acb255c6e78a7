// One node's files of a capture as one time-ordered pcapng (docs/pcapng.md, "One node's
// stream"): the first stage of the merged download, run where the files are. An interface
// per pod interface (from each file's source), a Name Resolution Block for the pods' IPs,
// then every packet of every file, merged by time.
//
// Memory is flat in the capture's size and in its number of files: a pod interface's files
// follow one another in time (rotation), so they are read one after the other as one stream,
// and only the pod interfaces are merged, each holding one record and one small read buffer.
import { interfaceDescriptionBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock } from '../pcap/pcapng.js';
import { mergeToPcapng, PcapFileSequence, type MergeInput } from '../pcap/merge.js';
import { parseFileName } from './capture-store.js';
import type { FileSource } from './file-source.js';

export interface NodeFile {
  name: string;
  /** Where its bytes are (a pin's link). */
  path: string;
  /** Bytes to read: the pinned length. */
  size: number;
  source?: FileSource;
}

export interface NodePcapngOptions {
  node: string;
  namespace: string;
  capture: string;
  /** shb_userappl. */
  application: string;
  signal?: AbortSignal;
  /** The encoder whose chunks are yielded (its owner may recycle them once sent). */
  encoder?: PacketEncoder;
}

/** The pod interface a file belongs to: its source, else what its name says (`<pod>_<iface>[-<micros>].pcap`). */
function interfaceKey(f: NodeFile): string {
  const s = f.source;
  if (s) return `${s.podUID}/${s.iface}/${s.linkType}/${s.snapLen}/${s.tsresol}`;
  return `name:${parseFileName(f.name).base}`;
}

/** Files of one pod interface in the order they were written: rotated ones by their time, the live one last. */
function inWrittenOrder(files: NodeFile[]): NodeFile[] {
  const when = (f: NodeFile): bigint => parseFileName(f.name).rotatedAt ?? BigInt(Number.MAX_SAFE_INTEGER) * 1000n;
  return [...files].sort((a, b) => (when(a) < when(b) ? -1 : when(a) > when(b) ? 1 : 0));
}

export async function* nodePcapng(files: NodeFile[], o: NodePcapngOptions): AsyncGenerator<Buffer> {
  const groups = new Map<string, NodeFile[]>();
  for (const f of files) {
    const k = interfaceKey(f);
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  const blocks: Buffer[] = [sectionHeaderBlock({ application: o.application, comment: `kube-pcap capture ${o.namespace}/${o.capture}, node ${o.node}` })];
  const inputs: MergeInput[] = [];
  const names = new Map<string, Set<string>>();
  for (const group of [...groups.values()].sort((a, b) => a[0]!.name.localeCompare(b[0]!.name))) {
    const ordered = inWrittenOrder(group);
    const records = new PcapFileSequence(ordered, o.signal);
    let header;
    try {
      header = await records.open();
    } catch (err) {
      await Promise.all([records, ...inputs.map((i) => i.records)].map((r) => r.close()));
      throw err;
    }
    if (!header) continue; // nothing but empty files
    const s = ordered.find((f) => f.source)?.source;
    const base = parseFileName(ordered[0]!.name).base;
    const pod = s?.pod ?? base.split('_')[0]!;
    const iface = s?.iface ?? base.split('_').slice(1).join('_');
    const tsresol: 6 | 9 = header.nanoseconds ? 9 : 6;
    blocks.push(interfaceDescriptionBlock({
      linkType: header.linktype,
      snapLen: header.snaplen,
      tsresol,
      name: `${o.node}/${o.namespace}/${pod}/${iface}`,
      description: `k8s.node=${o.node};k8s.namespace=${o.namespace};k8s.pod=${pod};k8s.capture=${o.capture}${s ? `;k8s.pod.uid=${s.podUID}` : ''}`,
    }));
    inputs.push({ records, interfaceId: inputs.length });
    for (const ip of s?.podIPs ?? []) {
      const set = names.get(ip) ?? new Set<string>();
      set.add(`${pod}.${o.namespace}`);
      names.set(ip, set);
    }
  }
  blocks.push(nameResolutionBlock([...names].map(([ip, n]) => ({ ip, names: [...n] }))));
  // The merge closes every file however the stream ends; until it starts, this does.
  let merging = false;
  try {
    yield Buffer.concat(blocks);
    merging = true;
    yield* mergeToPcapng(inputs, o.encoder ?? new PacketEncoder());
  } finally {
    if (!merging) await Promise.all(inputs.map((i) => i.records.close()));
  }
}
