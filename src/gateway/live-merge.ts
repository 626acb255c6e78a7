// The live stream across nodes (docs/pcapng.md, "Live"): every node's live pcapng
// (src/agent/live-follow.ts), merged into one section in timestamp order as it comes.
//
// Nodes do not all have packets at every moment, so a packet is sent once no node can still
// send an earlier one: each agent says how far its clock has been delivered (a watermark
// block, also when idle), and a node whose queue is empty holds the others back only up to
// its watermark, and not at all once it has not been heard from for `staleMs`. A packet that
// arrives after the merge has passed its time is still sent, out of order; nothing is
// dropped for it. Each node is read into a bounded queue: a slow viewer pauses the reading,
// which pauses the agents' sockets, which makes the agents lag behind their files; the
// capture never waits for anyone.
//
// Nodes come and go: the capture's nodes are asked for again every `refreshMs`, and a node
// that starts capturing later is read from the time the stream began. A node whose stream
// breaks is said so (a comment on its interfaces) and asked again from its last packet. The
// stream ends when the capture is deleted, when every node has finished and delivered all it
// had, or when the viewer leaves.
import type { Readable } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import { interfaceDescriptionBlock, interfaceStatisticsBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock, WATERMARK } from '../pcap/pcapng.js';
import { BlockType, PcapngBlockReader, PcapngFormatError } from '../pcap/pcapng-reader.js';
import { checkedInterface, checkedNames, checkedPacket, checkedStatistics, checkedStatisticsInterface } from './pcapng-merge.js';
import { AGENT_ANSWER_LIMITS } from '../contract/agent-api.js';
import { TimeHeap, type TimeKeyed } from '../pcap/time-heap.js';
import { Fifo } from '../flow/fifo.js';

export interface LiveNode {
  node: string;
  /** The node's live pcapng from `sinceMicros` on (an agent's response body). */
  open(sinceMicros: number, signal: AbortSignal): Promise<Readable>;
}

export interface LiveMergeOptions {
  namespace: string;
  capture: string;
  application: string;
  comment: string;
  /** The capture's nodes now, and whether every one has finished; undefined once the capture is gone. */
  nodes(): Promise<{ nodes: LiveNode[]; finished: boolean } | undefined>;
  /** Where the stream starts (unix µs): ?since, or the moment the viewer asked. */
  sinceMicros: number;
  signal: AbortSignal;
  log: FastifyBaseLogger;
  refreshMs?: number;
  /** A node not heard from for this long no longer holds the others back. */
  staleMs?: number;
  /** Something goes to the viewer at least this often (an empty name block when nothing else does). */
  keepAliveMs?: number;
  /** Bytes queued per node before its reading pauses. */
  maxQueuedBytes?: number;
  /** How long after every node finished the stream still waits for what they have not delivered. */
  drainMs?: number;
  now?: () => number;
}

interface Queued {
  /** A packet (with its time), or another block to pass on in order. */
  micros: number | undefined;
  s: number;
  ns: number;
  block: Buffer;
  /** For a packet: its interface in the section. */
  id: number;
}

/** One node's stream, read into a bounded queue by its own loop. */
class LiveInput {
  readonly queue = new Fifo<Queued>();
  queuedBytes = 0;
  /** The node's interfaces by their own id, and by what they are (a reconnection reuses the section's id). */
  ids: number[] = [];
  tsresols: (6 | 9)[] = [];
  readonly known = new Map<string, number>();
  watermark = 0;
  heardAt: number;
  lastPacketMicros = 0;
  connected = false;
  abort = new AbortController();
  resume: (() => void) | undefined;

  constructor(readonly node: LiveNode, now: number, readonly tag: number) {
    this.heardAt = now;
  }
}

/** A node whose queue starts with a packet, in the heap by that packet's time (ties: the older node first). */
interface Head extends TimeKeyed {
  input: LiveInput;
}

export async function* liveMerge(o: LiveMergeOptions): AsyncGenerator<Buffer> {
  const now = o.now ?? Date.now;
  const refreshMs = o.refreshMs ?? 2000;
  const staleMs = o.staleMs ?? 5000;
  const keepAliveMs = o.keepAliveMs ?? 10_000;
  const maxQueued = o.maxQueuedBytes ?? 4 * 1024 * 1024;
  const drainMs = o.drainMs ?? 30_000;
  const inputs = new Map<string, LiveInput>();
  // Which node's packet goes next: a heap of the nodes whose queue starts with a packet, and
  // the nodes whose queue starts with another block (passed on at once, in node order). A
  // packet costs O(log nodes), not a scan of every node.
  const heads = new TimeHeap<Head>();
  const leading = new Set<LiveInput>();
  const enc = new PacketEncoder(16 * 1024);
  let nextId = 0;
  let wake: (() => void) | undefined;
  const poke = (): void => {
    wake?.();
    wake = undefined;
  };
  let finishedAt: number | undefined;
  let gone = false;
  let lastOut = now();
  let lastRefresh = 0;

  o.signal.addEventListener('abort', poke, { once: true });
  /** The timestamp resolution of each interface of the section. */
  const resolutions = new Map<number, 6 | 9>();
  const head = sectionHeaderBlock({ application: o.application, comment: o.comment });
  enc.copy(head, 0, head.length);
  try {
    for (;;) {
      if (o.signal.aborted) return;
      if (now() - lastRefresh >= refreshMs) {
        lastRefresh = now();
        await refresh();
      }
      const out: Buffer[] = [];
      const put = (full: Buffer | undefined): void => {
        if (full) out.push(full);
      };
      // At the end, everything queued goes, watermarks or not: nothing is dropped.
      const done = gone || (finishedAt !== undefined && (allDelivered() || now() - finishedAt > drainMs));
      // Everything that can go now: leading blocks in order, then packets by time, each up to
      // the time no node whose queue is empty can still send an earlier packet before.
      // Once every node has delivered what it had when it finished, none holds the others back.
      const delivered = finishedAt !== undefined && allDelivered();
      let floor = delivered ? Infinity : holdBack();
      const emptied = (i: LiveInput): void => {
        if (!delivered) floor = Math.min(floor, holdsAt(i));
      };
      for (;;) {
        if (leading.size > 0) {
          for (const i of [...leading].sort((a, b) => a.tag - b.tag)) {
            leading.delete(i);
            while (i.queue.length > 0 && i.queue.peek()!.micros === undefined) {
              const q = take(i);
              put(enc.copy(q.block, 0, q.block.length));
            }
            if (i.queue.length > 0) place(i);
            else emptied(i);
          }
        }
        const top = heads.peek();
        if (!top || (!done && !(top.input.queue.peek()!.micros! <= floor))) break;
        heads.pop();
        const i = top.input;
        const q = take(i);
        put(enc.copy(q.block, 0, q.block.length, q.id));
        if (i.queue.length > 0) place(i);
        else emptied(i);
        // A backlog (a ?since with much on disk) goes out in pieces, with back-pressure between them.
        if (out.length >= 16) break;
      }
      const more = out.length >= 16;
      if (!done && enc.pending === 0 && out.length === 0 && now() - lastOut >= keepAliveMs) {
        // Idle: something small keeps the connection (and an Ingress's read timeout) alive.
        const keep = nameResolutionBlock([]);
        put(enc.copy(keep, 0, keep.length));
      }
      put(enc.take());
      if (out.length > 0) lastOut = now();
      for (const b of out) yield b;
      if (more) continue;
      if (done) return;
      // Until a node has something (or a watermark moves), at most a quarter of a second.
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, Math.min(refreshMs, 250));
      });
      clearTimeout(timer);
    }
  } finally {
    for (const i of inputs.values()) i.abort.abort();
  }

  /**
   * Up to when a packet may go: no node with an empty queue can still send an earlier one
   * (as far as its watermark says). A node with a queue sends its next packet in the heap's
   * order, so only the empty ones hold the others back.
   */
  function holdBack(): number {
    let floor = Infinity;
    for (const i of inputs.values()) if (i.queue.length === 0) floor = Math.min(floor, holdsAt(i));
    return floor;
  }

  /** How far a node with an empty queue holds the others back: its watermark, unless it has gone quiet. */
  function holdsAt(i: LiveInput): number {
    if (!i.connected || now() - i.heardAt > staleMs) return Infinity;
    return i.watermark;
  }

  /** Puts a node whose queue is not empty where its head says: the heap for a packet, else the leading set. */
  function place(i: LiveInput): void {
    const q = i.queue.peek()!;
    if (q.micros === undefined) leading.add(i);
    else heads.push({ s: q.s, ns: q.ns, tag: i.tag, input: i });
  }

  /** Every node has delivered what it had when it finished (its watermark passed that moment). */
  function allDelivered(): boolean {
    if (finishedAt === undefined) return false;
    // A node not connected yet (or reconnecting) counts until it goes stale: a capture that
    // had already finished when the stream began (?since) would otherwise end before any
    // node had been heard.
    for (const i of inputs.values()) if (now() - i.heardAt <= staleMs && i.watermark < finishedAt * 1000) return false;
    return true;
  }

  function take(i: LiveInput): Queued {
    const q = i.queue.shift()!;
    i.queuedBytes -= q.block.length;
    if (i.resume && i.queuedBytes < maxQueued / 2) {
      i.resume();
      i.resume = undefined;
    }
    return q;
  }

  /** The capture's nodes: new ones are read from the stream's start; the end is noticed. */
  async function refresh(): Promise<void> {
    let r: Awaited<ReturnType<LiveMergeOptions['nodes']>>;
    try {
      r = await o.nodes();
    } catch (err) {
      o.log.warn({ err: (err as Error).message }, 'live stream: cannot read the capture\'s nodes; trying again');
      return;
    }
    if (!r) {
      gone = true;
      return;
    }
    if (r.finished && finishedAt === undefined) finishedAt = now();
    if (!r.finished) finishedAt = undefined;
    for (const n of r.nodes) {
      if (inputs.has(n.node)) continue;
      const input = new LiveInput(n, now(), inputs.size);
      inputs.set(n.node, input);
      void pump(input, o.sinceMicros);
    }
  }

  /** Reads a node's stream into its queue; a broken stream is said so and asked again from its last packet. */
  async function pump(i: LiveInput, since: number): Promise<void> {
    const signal = AbortSignal.any([o.signal, i.abort.signal]);
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        const body = await i.node.open(since, signal);
        i.connected = true;
        i.heardAt = now();
        i.ids = [];
        i.tsresols = [];
        await read(i, new PcapngBlockReader(body as AsyncIterable<Buffer>, `the live pcapng of node ${i.node.node}`), signal);
        if (signal.aborted) return;
        throw new Error('the agent ended its stream');
      } catch (err) {
        if (signal.aborted) return;
        const why = (err as Error).message.slice(0, 200);
        o.log.warn({ node: i.node.node, err: why, offContract: err instanceof PcapngFormatError }, 'live stream of a node broke; asking again');
        if (i.connected) note(i, `node ${i.node.node}: its live stream broke (${why}); asking again from its last packet`);
        i.connected = false;
        poke();
        since = i.lastPacketMicros > 0 ? i.lastPacketMicros + 1 : since;
        await sleep(Math.min(5000, 500 * 2 ** Math.min(attempt, 4)), undefined, { signal }).catch(() => undefined);
      }
    }
  }

  async function read(i: LiveInput, r: PcapngBlockReader, signal: AbortSignal): Promise<void> {
    const what = r.what;
    while (!signal.aborted && (await r.next())) {
      const { buf, at, length, type } = r;
      if (type === BlockType.EPB) {
        const q: Queued = { micros: 0, s: 0, ns: 0, block: Buffer.from(buf.subarray(at, at + length)), id: 0 };
        q.id = checkedPacket(r, i.ids, i.tsresols, q);
        q.micros = q.s * 1_000_000 + Math.floor(q.ns / 1000);
        i.lastPacketMicros = Math.max(i.lastPacketMicros, q.micros);
        await enqueue(i, q);
      } else if (type === WATERMARK) {
        if (length !== 20) throw new PcapngFormatError(what, 'a watermark block of another size');
        i.watermark = Math.max(i.watermark, buf.readUInt32LE(at + 8) * 4294967296 + buf.readUInt32LE(at + 12));
        i.heardAt = now();
        poke();
      } else if (type === BlockType.IDB) {
        if (i.ids.length >= AGENT_ANSWER_LIMITS.interfacesPerStream) throw new PcapngFormatError(what, `more than ${AGENT_ANSWER_LIMITS.interfacesPerStream} interfaces`);
        const block = r.block();
        const iface = checkedInterface(block, i.node.node, o, what);
        const key = `${iface.name}|${iface.linkType}|${iface.snapLen}|${iface.tsresol}|${iface.description ?? ''}`;
        let id = i.known.get(key);
        i.tsresols.push(iface.tsresol);
        if (id === undefined) {
          id = nextId++;
          i.known.set(key, id);
          resolutions.set(id, iface.tsresol);
          i.ids.push(id);
          await enqueue(i, { micros: undefined, s: 0, ns: 0, block: interfaceDescriptionBlock(iface), id });
        } else {
          i.ids.push(id); // the same interface again, after a reconnection
        }
      } else if (type === BlockType.NRB) {
        await enqueue(i, { micros: undefined, s: 0, ns: 0, block: checkedNames(r.block(), what), id: 0 });
      } else if (type === BlockType.ISB) {
        const id = checkedStatisticsInterface(r, i.ids);
        await enqueue(i, { micros: undefined, s: 0, ns: 0, block: checkedStatistics(r.block(), id, what), id });
      } else if (type !== BlockType.SHB) {
        throw new PcapngFormatError(what, `a block of type ${type}, which the agents do not write`);
      }
    }
  }

  async function enqueue(i: LiveInput, q: Queued): Promise<void> {
    i.queue.push(q);
    if (i.queue.length === 1) place(i);
    i.queuedBytes += q.block.length;
    i.heardAt = now();
    poke();
    if (i.queuedBytes >= maxQueued) await new Promise<void>((resolve) => (i.resume = resolve));
  }

  /** A comment on each of the node's interfaces (a node with none has nothing to attach it to). */
  function note(i: LiveInput, comment: string): void {
    for (const id of new Set(i.known.values())) {
      const block = interfaceStatisticsBlock({ interfaceId: id, timestamp: BigInt(now()) * (resolutions.get(id) === 9 ? 1_000_000n : 1000n), comment });
      i.queue.push({ micros: undefined, s: 0, ns: 0, block, id });
      if (i.queue.length === 1) place(i);
      i.queuedBytes += block.length;
    }
  }
}
