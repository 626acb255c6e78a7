// files.pcapng across nodes (docs/pcapng.md, "Across nodes"): the second stage of the merged
// download. Each node's agent sends its files as one time-ordered pcapng (src/agent/
// node-pcapng.ts); here those streams are merged into one section: every interface block
// renumbered into the section's numbering, name records passed on, packets in timestamp
// order by a heap that holds one packet per node. The fan-in is the number of nodes holding
// files, never the number of files: memory is one read buffer and one packet per node,
// whatever the capture's size.
//
// Opening is its own step: every node's stream is opened and read up to its first packet
// before a byte goes to the client, so a node that cannot be read is a clean 502 naming it.
// After that, a failure cuts the connection: a short pcapng must never look whole.
import type { Readable } from 'node:stream';
import { ConcurrencyLimit } from '../flow/concurrency-limit.js';
import { interfaceDescriptionBlock, interfaceStatisticsBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock, type InterfaceOptions } from '../pcap/pcapng.js';
import { BlockType, packetBlockBare, packetBlockWhole, parseInterfaceBlock, parseNameBlock, parseStatisticsBlock, PcapngBlockReader, PcapngFormatError } from '../pcap/pcapng-reader.js';
import { interfaceLabel } from '../pcap/interface-label.js';
import { splitTimestamp, TimeHeap, type TimeKeyed } from '../pcap/time-heap.js';
import type { PacketTime } from '../pcap/pcap-tally.js';
import { AGENT_ANSWER_LIMITS } from '../contract/agent-api.js';
import { agentText, isInterfaceName, isNodeName, isUid } from './agent-listing.js';

export interface NodeStream {
  node: string;
  /** The node's pcapng (an agent's response body). */
  open(signal: AbortSignal): Promise<Readable>;
  /** Called once the node's stream has been read to its end (e.g. to release its pin). */
  done?: () => void;
}

export interface NodeMergeOptions {
  /** The capture's namespace and name: every interface must say the same. */
  namespace: string;
  capture: string;
  /** shb_userappl. */
  application: string;
  /** The section's comment (which capture, which nodes, what was left out). */
  comment: string;
  /** Node streams opened at once. */
  openConcurrency: number;
}

/** A node's stream could not be opened or read as the contract says. */
export class NodeStreamError extends Error {
  constructor(readonly node: string, override readonly cause: Error) {
    super(cause.message);
    this.name = 'NodeStreamError';
  }
}

/** Pod names as the agents write them into name records: `<pod>.<namespace>`, DNS characters only. */
const RESOLVED_NAME = /^[a-z0-9]([-a-z0-9.]{0,314}[a-z0-9])?$/;

/** One node's stream, and its entry in the heap: its next packet (reused, as the merge takes one packet per node at a time). */
class NodeInput implements TimeKeyed {
  /** The section's interface id of each of the node's interfaces, by the node's own id. */
  readonly ids: number[] = [];
  readonly tsresols: (6 | 9)[] = [];
  s = 0;
  ns = 0;
  /** The section's id of the interface of the packet held. */
  id = 0;

  constructor(readonly tag: number, readonly stream: NodeStream, readonly reader: PcapngBlockReader, readonly body: Readable) {}
}

export class NodeMerge {
  private readonly heap = new TimeHeap<NodeInput>();
  private readonly enc = new PacketEncoder();
  /** Chunks the encoder filled while a node's non-packet blocks went in. */
  private readonly ready: Buffer[] = [];
  private nextId = 0;
  /** Packets merged so far, and the first and last one's time (an export's manifest, docs/export.md). */
  packetCount = 0;
  first: PacketTime | undefined;
  last: PacketTime | undefined;

  private constructor(private readonly inputs: NodeInput[], private readonly abort: AbortController, private readonly o: NodeMergeOptions) {}

  /**
   * Opens every node's stream and reads each up to its first packet (its interfaces and
   * names). A node that fails is a NodeStreamError; every stream opened is then closed.
   */
  static async open(nodes: NodeStream[], o: NodeMergeOptions): Promise<{ merge: NodeMerge; header: Buffer }> {
    const abort = new AbortController();
    const limit = new ConcurrencyLimit({ maxInFlight: o.openConcurrency, maxQueued: Infinity, what: 'node pcapng streams' });
    const opened = await Promise.allSettled(nodes.map((n, i) => limit.run(async () => {
      if (abort.signal.aborted) throw new NodeStreamError(n.node, new Error('not opened: another node failed'));
      try {
        const body = await n.open(abort.signal);
        return new NodeInput(i, n, new PcapngBlockReader(body as AsyncIterable<Buffer>, `the pcapng of node ${n.node}`), body);
      } catch (err) {
        abort.abort();
        throw new NodeStreamError(n.node, err as Error);
      }
    })));
    const inputs = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const merge = new NodeMerge(inputs, abort, o);
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !/not opened/.test(String((r.reason as Error).message)));
    if (failed) {
      merge.close();
      throw failed.reason;
    }
    const shb = sectionHeaderBlock({ application: o.application, comment: o.comment });
    merge.enc.copy(shb, 0, shb.length);
    try {
      for (const input of inputs) await merge.advance(input);
    } catch (err) {
      merge.close();
      throw err;
    }
    const header = Buffer.concat([...merge.ready.splice(0), merge.enc.take() ?? Buffer.alloc(0)]);
    return { merge, header };
  }

  /** The merged packets after the header, in chunks of about 64 KiB; any failure is thrown (and the streams closed). */
  async *packets(): AsyncGenerator<Buffer> {
    try {
      for (let h = this.heap.pop(); h; h = this.heap.pop()) {
        const r = h.reader;
        this.packetCount++;
        // Popped in time order: the first is the earliest, each later one the latest so far.
        this.first ??= { s: h.s, ns: h.ns };
        this.last = { s: h.s, ns: h.ns };
        const full = this.enc.copy(r.buf, r.at, r.length, h.id);
        if (full) yield full;
        await this.advance(h);
        while (this.ready.length > 0) yield this.ready.shift()!;
      }
      const rest = this.enc.take();
      if (rest) yield rest;
    } finally {
      this.close();
    }
  }

  /** Closes every node's stream (idempotent). */
  close(): void {
    this.abort.abort();
    for (const i of this.inputs) i.body.destroy();
  }

  /**
   * Reads the node's blocks up to its next packet, which goes on the heap; interface and name
   * blocks met on the way go out at once (before any packet of theirs), renumbered.
   */
  private async advance(input: NodeInput): Promise<void> {
    const r = input.reader;
    const what = r.what;
    try {
      for (;;) {
        if (!(r.tryNext() || (await r.next()))) {
          input.stream.done?.();
          return;
        }
        const type = r.type;
        if (type === BlockType.EPB) {
          input.id = checkedPacket(r, input.ids, input.tsresols, input);
          this.heap.push(input);
          return;
        }
        const block = r.block();
        if (type === BlockType.IDB) this.addInterface(input, block);
        else if (type === BlockType.NRB) this.emit(checkedNames(block, what));
        else if (type === BlockType.ISB) this.emit(checkedStatistics(block, checkedStatisticsInterface(r, input.ids), what));
        else if (type !== BlockType.SHB) {
          throw new PcapngFormatError(what, `a block of type ${type}, which the agents do not write`);
        }
      }
    } catch (err) {
      throw err instanceof NodeStreamError ? err : new NodeStreamError(input.stream.node, err as Error);
    }
  }

  /** An interface of the node (checkedInterface), under the section's next id. */
  private addInterface(input: NodeInput, block: Buffer): void {
    if (input.ids.length >= AGENT_ANSWER_LIMITS.interfacesPerStream) throw new PcapngFormatError(input.reader.what, `more than ${AGENT_ANSWER_LIMITS.interfacesPerStream} interfaces`);
    const i = checkedInterface(block, input.stream.node, this.o, input.reader.what);
    input.ids.push(this.nextId++);
    input.tsresols.push(i.tsresol);
    this.emit(interfaceDescriptionBlock(i));
  }

  private emit(block: Buffer, interfaceId?: number): void {
    const full = this.enc.copy(block, 0, block.length, interfaceId);
    if (full) this.ready.push(full);
  }
}

/**
 * A node's interface block, checked. Its name and description are what Wireshark shows, so
 * they must be exactly as the agent writes them, for this node and capture:
 * `<node>/<namespace>/<pod>/<iface>` and `k8s.node=…;k8s.namespace=…;k8s.pod=…;k8s.capture=…
 * [;k8s.pod.uid=…]`, with a pod name, an interface name and a uid.
 */
export function checkedInterface(block: Buffer, node: string, o: { namespace: string; capture: string }, what: string): InterfaceOptions {
  const i = parseInterfaceBlock(block, what);
  const prefix = `${node}/${o.namespace}/`;
  const [pod = '', iface = '', ...extra] = i.name.startsWith(prefix) ? i.name.slice(prefix.length).split('/') : [];
  if (!isNodeName(pod) || !isInterfaceName(iface) || extra.length > 0) {
    throw new PcapngFormatError(what, `an interface named ${JSON.stringify(i.name.slice(0, 100))}, not <node>/<namespace>/<pod>/<iface> of this node and capture`);
  }
  const described = interfaceLabel({ node, ...o, pod, iface }).description;
  const uidMark = ';k8s.pod.uid=';
  const uid = (i.description ?? '').startsWith(`${described}${uidMark}`) ? (i.description ?? '').slice(described.length + uidMark.length) : undefined;
  if (i.description !== described && (uid === undefined || !isUid(uid))) {
    throw new PcapngFormatError(what, `an interface described ${JSON.stringify((i.description ?? '').slice(0, 160))}, not as this node's pod ${pod} in this capture`);
  }
  return i;
}

/**
 * The node's packet block at the reader's position, checked (whole, on an interface declared
 * before it): its interface in the section, and its time into `into`.
 */
export function checkedPacket(r: PcapngBlockReader, ids: number[], tsresols: (6 | 9)[], into: { s: number; ns: number }): number {
  const { buf, at, length, what } = r;
  if (!packetBlockWhole(buf, at, length)) throw new PcapngFormatError(what, 'a packet block is shorter than its captured length');
  // Options would be the agent's words in the viewer's file (a comment per packet): agents write none.
  if (!packetBlockBare(buf, at, length)) throw new PcapngFormatError(what, 'a packet block with options, which the agents do not write');
  const local = buf.readUInt32LE(at + 8);
  const id = ids[local];
  if (id === undefined) throw new PcapngFormatError(what, `a packet on interface ${local}, which no interface block declared`);
  splitTimestamp(buf.readUInt32LE(at + 12), buf.readUInt32LE(at + 16), tsresols[local]!, into);
  return id;
}

/** The section's interface of the node's statistics block at the reader's position: one declared before it. */
export function checkedStatisticsInterface(r: PcapngBlockReader, ids: number[]): number {
  const id = ids[r.length >= 16 ? r.buf.readUInt32LE(r.at + 8) : -1];
  if (id === undefined) throw new PcapngFormatError(r.what, 'statistics for an interface no interface block declared');
  return id;
}

/** A comment from an agent, as a viewer will show it: one line of printable text, bounded. */
export function cleanComment(text: string): string {
  return agentText(text, MAX_COMMENT_CHARS);
}

const MAX_COMMENT_CHARS = 256;

/**
 * A node's statistics block, re-encoded for the section's interface `id`: its times, its drop
 * count, and its comment cleaned (cleanComment); any other option is left out.
 */
export function checkedStatistics(block: Buffer, id: number, what: string): Buffer {
  const s = parseStatisticsBlock(block, what);
  return interfaceStatisticsBlock({ ...s, interfaceId: id, ...(s.comment !== undefined ? { comment: cleanComment(s.comment) } : {}) });
}

/** A node's name records, re-encoded: IPs as IPs, names as pod names, nothing else. */
export function checkedNames(block: Buffer, what: string): Buffer {
  const entries = parseNameBlock(block, what);
  for (const e of entries) {
    const bad = e.names.find((n) => !RESOLVED_NAME.test(n));
    if (bad !== undefined) throw new PcapngFormatError(what, `a name record ${JSON.stringify(bad.slice(0, 100))} that is not a pod name`);
  }
  return nameResolutionBlock(entries);
}
