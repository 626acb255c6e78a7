// One node's files of a capture as one time-ordered pcapng (docs/pcapng.md, "One node's
// stream"): the first stage of the merged download, run where the files are. An interface
// per pod interface (from each file's source), a Name Resolution Block for the pods' IPs,
// then every packet of every file, merged by time.
//
// Memory is flat in the capture's size and in its number of files: a pod interface's files
// follow one another in time (rotation), so they are read one after the other as one stream,
// and only the pod interfaces are merged, each holding one record and one small read buffer.
import { createReadStream } from 'node:fs';
import { interfaceDescriptionBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock } from '../pcap/pcapng.js';
import type { PcapHeader } from '../pcap/format.js';
import { mergeByTime, PcapStreamReader, timestampHalves, type MergeSource, type PcapRecord, type RecordReader } from '../pcap/merge.js';
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

/** A file's pinned bytes, in small reads: one such buffer per pod interface being merged. */
function fileReader(f: NodeFile, signal?: AbortSignal): PcapStreamReader {
  return new PcapStreamReader(createReadStream(f.path, { start: 0, end: f.size - 1, highWaterMark: 16 * 1024, signal }), f.name);
}

export async function* nodePcapng(files: NodeFile[], o: NodePcapngOptions): AsyncGenerator<Buffer> {
  const groups = new Map<string, NodeFile[]>();
  for (const f of files) {
    const k = interfaceKey(f);
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  const blocks: Buffer[] = [sectionHeaderBlock({ application: o.application, comment: `kube-pcap capture ${o.namespace}/${o.capture}, node ${o.node}` })];
  const sources: MergeSource[] = [];
  const tsresols: (6 | 9)[] = [];
  const names = new Map<string, Set<string>>();
  for (const group of [...groups.values()].sort((a, b) => a[0]!.name.localeCompare(b[0]!.name))) {
    const ordered = inWrittenOrder(group);
    const reader = new FileSequenceReader(ordered, o.signal);
    const header = await reader.open();
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
    sources.push({ reader, tag: tsresols.length });
    tsresols.push(tsresol);
    for (const ip of s?.podIPs ?? []) {
      const set = names.get(ip) ?? new Set<string>();
      set.add(`${pod}.${o.namespace}`);
      names.set(ip, set);
    }
  }
  blocks.push(nameResolutionBlock([...names].map(([ip, n]) => ({ ip, names: [...n] }))));
  yield Buffer.concat(blocks);
  const enc = new PacketEncoder();
  for await (const r of mergeByTime(sources)) {
    const [hi, lo] = timestampHalves(r, tsresols[r.tag]!);
    const full = enc.packet(r.tag, hi, lo, r.data, r.originalLength);
    if (full) yield full;
  }
  const rest = enc.take();
  if (rest) yield rest;
}

/**
 * A pod interface's files read as one stream of records, one file after the other. Each
 * file's header is checked against the first: a different link type or snap length would be
 * another interface, and is refused rather than mislabelled.
 */
class FileSequenceReader implements RecordReader {
  header: PcapHeader | undefined;
  private readonly files: NodeFile[];
  private index = 0;
  private current: PcapStreamReader | undefined;

  constructor(files: NodeFile[], private readonly signal?: AbortSignal) {
    this.files = files.filter((f) => f.size > 0);
  }

  /** The first file's header; undefined when no file holds one. */
  async open(): Promise<PcapHeader | undefined> {
    for (; this.index < this.files.length; this.index++) {
      this.current = fileReader(this.files[this.index]!, this.signal);
      this.header = await this.current.open();
      if (this.header) return this.header;
    }
    return undefined;
  }

  async next(): Promise<PcapRecord | undefined> {
    for (;;) {
      const r = await this.current?.next();
      if (r) return r;
      if (++this.index >= this.files.length) return undefined;
      const f = this.files[this.index]!;
      this.current = fileReader(f, this.signal);
      const h = await this.current.open();
      if (h && (h.linktype !== this.header!.linktype || h.snaplen !== this.header!.snaplen || h.nanoseconds !== this.header!.nanoseconds)) {
        throw new Error(`${f.name}: its header (link type ${h.linktype}, snap length ${h.snaplen}) differs from its interface's earlier files`);
      }
    }
  }
}
