// Reading classic pcap streams record by record, and merging many of them in timestamp
// order (docs/pcapng.md): a k-way merge that holds one record per source, so memory is flat
// in the sources' sizes. A source whose kernel clock stepped back is not reordered against
// itself: its record simply comes next, out of order by as much as its clock stepped, and
// nothing is ever dropped for it.
import { TimeHeap, type TimeKeyed } from './time-heap.js';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from './format.js';

export interface PcapRecord {
  /** Seconds and the fraction in the stream's units (microseconds, or nanoseconds). */
  seconds: number;
  fraction: number;
  data: Buffer;
  originalLength: number;
}

/** One classic pcap stream: its header, then its records in the order written. */
export class PcapStreamReader {
  header: PcapHeader | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(body: AsyncIterable<Buffer>, private readonly what: string) {
    this.it = body[Symbol.asyncIterator]();
  }

  /** Reads the global header; undefined for an empty stream. Throws on bytes that are not classic pcap. */
  async open(): Promise<PcapHeader | undefined> {
    if (!(await this.fill(GLOBAL_HEADER_LENGTH))) {
      if (this.buf.length - this.off === 0) return undefined;
      throw new Error(`${this.what}: ends inside the pcap header`);
    }
    const header = parseGlobalHeader(this.buf.subarray(this.off, this.off + GLOBAL_HEADER_LENGTH));
    if (!header) throw new Error(`${this.what}: not a classic pcap stream`);
    this.off += GLOBAL_HEADER_LENGTH;
    this.header = header;
    return header;
  }

  /** The next record, or undefined at the end. A record cut short by the end is an error. */
  async next(): Promise<PcapRecord | undefined> {
    const h = this.header;
    if (!h) throw new Error(`${this.what}: read before open()`);
    if (!(await this.fill(RECORD_HEADER_LENGTH))) {
      if (this.buf.length - this.off === 0) return undefined;
      throw new Error(`${this.what}: ends inside a record header`);
    }
    const u32 = (o: number): number => (h.littleEndian ? this.buf.readUInt32LE(this.off + o) : this.buf.readUInt32BE(this.off + o));
    const incl = u32(8);
    if (incl > MAX_RECORD_LENGTH) throw new Error(`${this.what}: a record claims ${incl} bytes`);
    if (!(await this.fill(RECORD_HEADER_LENGTH + incl))) throw new Error(`${this.what}: ends inside a record`);
    const rec: PcapRecord = {
      seconds: u32(0),
      fraction: u32(4),
      originalLength: u32(12),
      data: this.buf.subarray(this.off + RECORD_HEADER_LENGTH, this.off + RECORD_HEADER_LENGTH + incl),
    };
    this.off += RECORD_HEADER_LENGTH + incl;
    return rec;
  }

  /** Makes `n` bytes available at `off`; false at the end of the stream. */
  private async fill(n: number): Promise<boolean> {
    while (this.buf.length - this.off < n) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      // The unread tail and the new chunk; record views handed out stay valid (never reused).
      const rest = this.buf.subarray(this.off);
      this.buf = rest.length === 0 ? r.value : Buffer.concat([rest, r.value]);
      this.off = 0;
    }
    return true;
  }
}

/** Nanoseconds since the epoch as [seconds, nanoseconds], comparable across resolutions. */
function nanosOf(r: PcapRecord, nanoseconds: boolean): number {
  return nanoseconds ? r.fraction : r.fraction * 1000;
}

/** What the merge reads: a header, then records (a PcapStreamReader, or several files read in turn). */
export interface RecordReader {
  readonly header: PcapHeader | undefined;
  next(): Promise<PcapRecord | undefined>;
}

export interface MergeSource {
  reader: RecordReader;
  /** The caller's tag, handed back with each record (e.g. its pcapng interface id). */
  tag: number;
}

export interface MergedRecord extends PcapRecord {
  tag: number;
  nanoseconds: boolean;
}

/** Records of every source in timestamp order (ties by tag), one held per source (time-heap.ts). */
export async function* mergeByTime(sources: MergeSource[]): AsyncGenerator<MergedRecord> {
  interface Head extends TimeKeyed { rec: MergedRecord; src: MergeSource }
  const heap = new TimeHeap<Head>();
  const advance = async (src: MergeSource): Promise<void> => {
    const r = await src.reader.next();
    if (!r) return;
    const nanoseconds = src.reader.header!.nanoseconds;
    heap.push({ rec: { ...r, tag: src.tag, nanoseconds }, src, s: r.seconds, ns: nanosOf(r, nanoseconds), tag: src.tag });
  };
  await Promise.all(sources.map(advance));
  for (let h = heap.pop(); h; h = heap.pop()) {
    yield h.rec;
    await advance(h.src);
  }
}

/** A record's timestamp in 10^-tsresol seconds, as the two 32-bit halves pcapng stores. */
export function timestampHalves(r: MergedRecord, tsresol: 6 | 9): [number, number] {
  if (tsresol === 6) {
    const us = r.seconds * 1_000_000 + (r.nanoseconds ? Math.floor(r.fraction / 1000) : r.fraction);
    const high = Math.floor(us / 4294967296);
    return [high, us - high * 4294967296];
  }
  const ns = BigInt(r.seconds) * 1_000_000_000n + BigInt(r.nanoseconds ? r.fraction : r.fraction * 1000);
  return [Number(ns >> 32n), Number(ns & 0xffffffffn)];
}
