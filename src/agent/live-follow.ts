// The live stream of one node (docs/pcapng.md, "Live"): the capture's files followed as they
// are written, as one pcapng. Served from the files the capture writes anyway, never from
// the capture's pipe: a viewer that reads slowly only lags behind the files, and the capture
// neither waits for it nor drops for it.
//
// Each tick lists the capture directory, opens every new file of every pod interface, and
// reads its whole records (live-pod-interface.ts: tcpdump may be mid-record in the file it
// writes; the rest is read next tick). Files are followed by descriptor, so a pruned file can
// still be read to its end; a viewer that falls so far behind that more than a few pruned
// files would have to be held for it lets the oldest go. Every file says which writer
// numbered its records and the number of its first (file-source.ts): a rotation copies the
// file being written and starts a new generation of it (tcpdump-files.ts), and the numbers
// say which records of the copy and of the new generation were already read (never given
// twice), and what was skipped, in files let go or pruned before they were ever seen (counted
// exactly and said, an ISB comment "N packets skipped (viewer too slow)"), never a silent gap. What each tick read is
// merged in time order across pod interfaces; a watermark block says how far this node's
// clock has been delivered, also when nothing happens (the gateway's heartbeat).
import { setTimeout as sleep } from 'node:timers/promises';
import { open, type FileHandle } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { GLOBAL_HEADER_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from '../pcap/format.js';
import { wholeRecordsOfFile } from '../pcap/records.js';
import { interfaceDescriptionBlock, interfaceStatisticsBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock, watermarkBlock } from '../pcap/pcapng.js';
import { TimeHeap } from '../pcap/time-heap.js';
import { captureFilesIn, parseFileName, type CaptureFileEntry } from './capture-store.js';
import { inWrittenOrder, podInterfaceBlock, podInterfaceKey } from './pcapng-interfaces.js';
import { LivePodInterface, sameHeader } from './live-pod-interface.js';
import { readSource, type FileSource } from './file-source.js';

export interface LiveFollowOptions {
  node: string;
  namespace: string;
  capture: string;
  /** shb_userappl. */
  application: string;
  /** The capture's directory now, if it exists (checked on every tick: it may come and go). */
  directory(): Promise<string | undefined>;
  /** Whether a tcpdump is writing the file with this inode (more of it will come). */
  isWriting(dir: string, ino: bigint): boolean;
  /** Its complete-record prefix, if a tcpdump is writing it (where a stream joining it starts). */
  committedLength(dir: string, ino: bigint): Promise<number | undefined>;
  /** Its generation (the first record number of what it holds now), if a tcpdump is writing it. */
  generationOf(dir: string, ino: bigint): number | undefined;
  /**
   * Every packet that reached the kernel before this time (ms, this node's clock) is in the
   * files, if the capture's tcpdumps have proven it (tcpdump-process.ts): the watermark's
   * floor, so a quiet node does not hold the others back by the whole lag.
   */
  flushedThrough?(): number | undefined;
  /** Kernel drops so far by pod interface (file base `<pod>_<iface>`). */
  kernelDrops(): Map<string, number>;
  /** Unix microseconds: include what is on disk from then on; undefined: from now. */
  sinceMicros?: number;
  signal: AbortSignal;
  encoder: PacketEncoder;
  /** Pause between ticks when there is nothing more to read. */
  tickMs?: number;
  /** How far behind its own clock a packet can reach the files when nothing proves better (libpcap's timeout, tcpdump's flush). */
  watermarkLagMs?: number;
  /** Interface statistics (kernel drops) this often per interface. */
  statsIntervalMs?: number;
  /** Pruned files held open for a slow viewer, per pod interface, before the oldest is let go. */
  maxHeldPruned?: number;
  /** Bytes read per pod interface per tick, at most (what one tick holds in memory). */
  readBudget?: number;
  now?: () => number;
}

const SKIP_NOTE = (n: number): string => `${n} packets skipped (viewer too slow)`;

export async function* liveNodePcapng(o: LiveFollowOptions): AsyncGenerator<Buffer> {
  const now = o.now ?? Date.now;
  const tickMs = o.tickMs ?? 100;
  const lagMs = o.watermarkLagMs ?? 1500;
  const statsMs = o.statsIntervalMs ?? 10_000;
  const maxHeld = o.maxHeldPruned ?? 2;
  const budget = o.readBudget ?? 1024 * 1024;
  const enc = o.encoder;
  const groups = new Map<string, LivePodInterface>();
  /**
   * Files decided on (followed or passed over), by inode and birth time (an inode number
   * alone may be reused), with how many listings in a row have missed each.
   */
  const seen = new Map<string, number>();
  /** The last generation seen of each file being written: it stays the file's once tcpdump is done with it. */
  const generations = new Map<bigint, number>();
  const generation = (dir: string, ino: bigint): number | undefined => {
    const g = o.generationOf(dir, ino);
    if (g !== undefined) generations.set(ino, g);
    return g ?? generations.get(ino);
  };
  /** A file, and for a file being written, which generation of it. */
  let identity = (st: BigIntStats): string => `${st.ino}/${st.birthtimeNs}`;
  const sources = new Map<string, FileSource>();
  const sinceMicros = o.sinceMicros ?? 0;
  let nextId = 0;
  let lastWatermark = 0;
  let lastSent = 0;
  let first = true;
  const out: Buffer[] = [];
  const emit = (full: Buffer | undefined): void => {
    if (full) out.push(full);
  };
  const block = (b: Buffer): void => emit(enc.copy(b, 0, b.length));

  block(sectionHeaderBlock({ application: o.application, comment: `kube-pcap live capture ${o.namespace}/${o.capture}, node ${o.node}` }));
  try {
    for (;;) {
      o.signal.throwIfAborted();
      // Proven before this tick reads: what it proves is then read in this tick.
      const proven = o.flushedThrough?.();
      const dir = await o.directory();
      if (dir) identity = (st) => `${st.ino}/${st.birthtimeNs}/${generation(dir, st.ino) ?? ''}`;
      const entries = dir ? await captureFilesIn(dir).catch(() => [] as CaptureFileEntry[]) : [];
      if (dir) await discover(dir, entries);
      // Files no longer listed are pruned (or deleted): held open, but only a few per interface.
      // A listing races with rotation's rename (the file is under neither name when looked
      // for), so only two listings in a row without a file say it is gone.
      const listed = new Set(entries.map((e) => e.st.ino));
      const present = new Set(entries.map((e) => identity(e.st)));
      for (const [id, n] of seen) {
        if (present.has(id)) seen.set(id, 0);
        else if (n >= 1) seen.delete(id);
        else seen.set(id, n + 1);
      }
      for (const g of groups.values()) {
        for (const f of g.files) f.absent = listed.has(f.ino) ? 0 : f.absent + 1;
        await g.letGoOfOldPruned(maxHeld);
      }
      let behind = false;
      const heap = new TimeHeap<LivePodInterface>();
      for (const g of groups.values()) {
        if (dir) await g.readTick((ino) => o.isWriting(dir, ino), (ino) => generation(dir, ino), budget, (h) => adoptHeader(g, h));
        behind ||= g.behind;
        if (g.nextRecord(sinceMicros)) heap.push(g);
      }
      for (let g = heap.pop(); g; g = heap.pop()) {
        packet(g);
        if (g.nextRecord(sinceMicros)) heap.push(g);
      }
      heartbeat(behind, proven);
      const chunk = enc.take();
      if (chunk) out.push(chunk);
      for (const b of out.splice(0)) yield b;
      first = false;
      if (!behind) await sleep(tickMs, undefined, { signal: o.signal });
    }
  } finally {
    await Promise.all([...groups.values()].map((g) => g.closeAll()));
  }

  /** Opens the files not seen before, each into its pod interface, in written order. */
  async function discover(dir: string, entries: CaptureFileEntry[]): Promise<void> {
    for (const e of inWrittenOrder(entries.filter((x) => !seen.has(identity(x.st))))) {
      // A file with no record yet may not have its source yet either (the writer records it
      // between the header and the first record), and where the filesystem keeps no birth
      // times a reused inode's old source would pass for it: it is taken up once it has one.
      if (Number(e.st.size) <= GLOBAL_HEADER_LENGTH) continue;
      seen.set(identity(e.st), 0);
      const { base, rotatedAt } = parseFileName(e.name);
      let start = 0;
      if (first) {
        // What was there when the stream began: from ?since on, or only what comes next.
        if (o.sinceMicros === undefined) {
          if (rotatedAt !== undefined) continue;
          start = (await o.committedLength(dir, e.st.ino)) ?? -1;
          if (start < 0) continue; // not being written: nothing more will come
        } else {
          if (rotatedAt !== undefined && Number(rotatedAt) < o.sinceMicros) continue;
        }
      }
      const { key, source } = await groupKey(dir, e.st, base);
      let g = groups.get(key);
      if (!g) {
        g = new LivePodInterface(key, base);
        groups.set(key, g);
      }
      let fh: FileHandle;
      try {
        fh = await open(e.path, 'r');
      } catch {
        continue; // gone while we looked
      }
      let index = 0;
      if (start > 0) {
        // Joining a file in the middle: its header first, for the interface block, and how
        // many records come before (so that a skip later can be counted exactly).
        const h = Buffer.alloc(GLOBAL_HEADER_LENGTH);
        await fh.read(h, 0, GLOBAL_HEADER_LENGTH, 0);
        const header = parseGlobalHeader(h);
        if (!header) {
          await fh.close();
          continue;
        }
        adoptHeader(g, header);
        index = (await wholeRecordsOfFile(fh, GLOBAL_HEADER_LENGTH, start, header.littleEndian)).records;
      }
      const gen = generation(dir, e.st.ino);
      g.files.push({ fh, ino: e.st.ino, name: e.name, pos: start, absent: 0, source, first: gen ?? source?.firstRecord, generation: gen, index, skip: 0, checked: false });
    }
  }

  /** The file's pod interface (by its source, else by its name), and its source. */
  async function groupKey(dir: string, st: BigIntStats, base: string): Promise<{ key: string; source: FileSource | undefined }> {
    const s = await readSource(dir, st);
    const key = podInterfaceKey(base, s);
    if (s && !sources.has(key)) sources.set(key, s);
    return { key, source: s };
  }

  /** A pod interface's first header (or a different one): its interface block, and its pod's names. */
  function adoptHeader(g: LivePodInterface, h: PcapHeader): void {
    if (g.header && sameHeader(g.header, h)) return;
    g.header = h;
    g.interfaceId = nextId++;
    g.tag = g.interfaceId;
    g.source ??= sources.get(g.key);
    const { idb, names } = podInterfaceBlock({ node: o.node, namespace: o.namespace, capture: o.capture }, g.base, g.source, h);
    block(interfaceDescriptionBlock(idb));
    if (names.length > 0) block(nameResolutionBlock(names));
  }

  /** The record at the pod interface's cursor as a packet (after a note of what was skipped, if anything was). */
  function packet(g: LivePodInterface): void {
    const h = g.header!;
    const b = g.buf;
    const c = g.cursor;
    const u32 = (x: number): number => (h.littleEndian ? b.readUInt32LE(x) : b.readUInt32BE(x));
    if (g.skipped > 0) {
      block(interfaceStatisticsBlock({ interfaceId: g.interfaceId!, timestamp: stamp(g, now()), comment: SKIP_NOTE(g.skipped) }));
      g.skipped = 0;
    }
    const incl = u32(c + 8);
    emit(enc.packetAt(g.interfaceId!, u32(c), u32(c + 4), h.nanoseconds, b, c + RECORD_HEADER_LENGTH, incl, u32(c + 12)));
    g.lastMicros = u32(c) * 1_000_000 + (h.nanoseconds ? Math.floor(u32(c + 4) / 1000) : u32(c + 4));
    g.cursor = c + RECORD_HEADER_LENGTH + incl;
  }

  /**
   * How far this node's clock has been delivered: what reaches the files reaches them within
   * the lag, or by the time the tcpdumps proved (whichever is later), except where a pod
   * interface is behind (then up to its last packet sent). Sent
   * every tick while it moves, and at least once a second (the heartbeat). Kernel drop counts
   * go out per interface every statsIntervalMs; a skip nobody has seen yet is said at once.
   */
  function heartbeat(behind: boolean, proven: number | undefined): void {
    const t = now();
    let w = Math.max(t - lagMs, proven ?? 0) * 1000;
    if (behind) for (const g of groups.values()) if (g.behind && g.lastMicros > 0) w = Math.min(w, g.lastMicros);
    if (w > lastWatermark || t - lastSent >= 1000) {
      lastWatermark = Math.max(lastWatermark, w);
      lastSent = t;
      block(watermarkBlock(BigInt(Math.floor(lastWatermark))));
    }
    const drops = o.kernelDrops();
    for (const g of groups.values()) {
      if (g.interfaceId === undefined) continue;
      if (g.skipped > 0 && g.filled <= g.cursor) {
        block(interfaceStatisticsBlock({ interfaceId: g.interfaceId, timestamp: stamp(g, t), comment: SKIP_NOTE(g.skipped) }));
        g.skipped = 0;
      }
      if (t - g.lastStats >= statsMs) {
        g.lastStats = t;
        block(interfaceStatisticsBlock({ interfaceId: g.interfaceId, timestamp: stamp(g, t), kernelDrops: drops.get(g.base) ?? 0 }));
      }
    }
  }
}

/** A wall-clock time (ms) in the interface's timestamp units. */
function stamp(g: LivePodInterface, ms: number): bigint {
  return BigInt(Math.floor(ms)) * (g.header?.nanoseconds ? 1_000_000n : 1000n);
}
