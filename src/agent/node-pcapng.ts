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
import { inWrittenOrder, podInterfaceBlock, podInterfaceKey } from './pcapng-interfaces.js';
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

export async function* nodePcapng(files: NodeFile[], o: NodePcapngOptions): AsyncGenerator<Buffer> {
  const groups = new Map<string, NodeFile[]>();
  for (const f of files) {
    const k = podInterfaceKey(parseFileName(f.name).base, f.source);
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
    const source = ordered.find((f) => f.source)?.source;
    const { idb, names: podNames } = podInterfaceBlock(o, parseFileName(ordered[0]!.name).base, source, header);
    blocks.push(interfaceDescriptionBlock(idb));
    inputs.push({ records, interfaceId: inputs.length });
    for (const { ip, names: n } of podNames) {
      const set = names.get(ip) ?? new Set<string>();
      for (const x of n) set.add(x);
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
