// Classic pcap files read record by record, and many of them merged in timestamp order into
// pcapng packets (docs/pcapng.md, "Merging"). This is per-record work on every byte of a
// capture, so it allocates nothing per record: a file is read with positioned reads into one
// reused buffer, a record is a position in it, the heap holds one reused entry per source,
// and packets are encoded into large chunks. A promise is taken only when a buffer runs dry.
//
// A source whose kernel clock stepped back is not reordered against itself: its record
// simply comes next, out of order by as much as its clock stepped, and nothing is dropped.
import { open, type FileHandle } from 'node:fs/promises';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from './format.js';
import { recordLength } from './records.js';
import type { PacketEncoder } from './pcapng.js';
import { TimeHeap, type TimeKeyed } from './time-heap.js';

/** A file to read: where it is, how many of its bytes (a pinned length: whole records), its name for errors. */
export interface PcapSegment {
  name: string;
  path: string;
  size: number;
}

/**
 * The records of a sequence of classic pcap files as one stream (a pod interface's files in
 * rotation order). After `next()` or `tryNext()` returns true, the current record is
 * `buf[dataAt, dataAt + caplen)` with its timestamp and original length; it stays valid
 * until the next call. A later file whose header differs from the first is an error: it
 * would be another interface, and is refused rather than mislabelled.
 */
export class PcapFileSequence {
  header: PcapHeader | undefined;
  seconds = 0;
  fraction = 0;
  caplen = 0;
  origlen = 0;
  buf: Buffer;
  dataAt = 0;
  private readonly files: PcapSegment[];
  private index = -1;
  private fh: FileHandle | undefined;
  private start = 0;
  private end = 0;
  private filePos = 0;

  constructor(files: PcapSegment[], private readonly signal?: AbortSignal, bufferBytes = 64 * 1024) {
    this.files = files.filter((f) => f.size > 0);
    this.buf = Buffer.allocUnsafe(Math.max(bufferBytes, GLOBAL_HEADER_LENGTH));
  }

  /** Opens the first file; its header, or undefined when there is no file with one. */
  async open(): Promise<PcapHeader | undefined> {
    return (await this.nextFile()) ? this.header : undefined;
  }

  /** The next record if it is already buffered (no promise); false when a read is needed or at the end. */
  tryNext(): boolean {
    const h = this.header;
    const avail = this.end - this.start;
    if (!h || avail < RECORD_HEADER_LENGTH) return false;
    const b = this.buf;
    const o = this.start;
    const le = h.littleEndian;
    const incl = recordLength(b, o, le);
    if (incl > MAX_RECORD_LENGTH) throw new Error(`${this.files[this.index]!.name}: a record claims ${incl} bytes`);
    if (avail < RECORD_HEADER_LENGTH + incl) return false;
    this.seconds = le ? b.readUInt32LE(o) : b.readUInt32BE(o);
    this.fraction = le ? b.readUInt32LE(o + 4) : b.readUInt32BE(o + 4);
    this.origlen = le ? b.readUInt32LE(o + 12) : b.readUInt32BE(o + 12);
    this.caplen = incl;
    this.dataAt = o + RECORD_HEADER_LENGTH;
    this.start = this.dataAt + incl;
    return true;
  }

  /** The next record, reading (and moving to the next file) as needed; false at the end. */
  async next(): Promise<boolean> {
    for (;;) {
      if (this.tryNext()) return true;
      const f = this.files[this.index];
      if (f && this.filePos < f.size) {
        await this.fill();
        continue;
      }
      if (f && this.end > this.start) throw new Error(`${f.name}: ends inside a record`);
      if (!(await this.nextFile())) return false;
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  /** Reads on in the current file, after what is still unread (moved to the front). */
  private async fill(): Promise<void> {
    this.signal?.throwIfAborted();
    const f = this.files[this.index]!;
    if (this.start > 0) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    if (this.end === this.buf.length) {
      // A record larger than the buffer (a jumbo frame): room for it, never more than one record.
      const bigger = Buffer.allocUnsafe(Math.min(this.buf.length * 2, MAX_RECORD_LENGTH + RECORD_HEADER_LENGTH));
      this.buf.copy(bigger, 0, 0, this.end);
      this.buf = bigger;
    }
    const want = Math.min(this.buf.length - this.end, f.size - this.filePos);
    const { bytesRead } = await this.fh!.read(this.buf, this.end, want, this.filePos);
    if (bytesRead === 0) throw new Error(`${f.name}: shorter than the ${f.size} bytes it was pinned with`);
    this.end += bytesRead;
    this.filePos += bytesRead;
  }

  /** Opens the next file and reads its header; false when there is none. */
  private async nextFile(): Promise<boolean> {
    await this.close();
    if (++this.index >= this.files.length) return false;
    const f = this.files[this.index]!;
    this.fh = await open(f.path, 'r');
    this.start = 0;
    this.end = 0;
    this.filePos = 0;
    while (this.end < GLOBAL_HEADER_LENGTH && this.filePos < f.size) await this.fill();
    const h = this.end >= GLOBAL_HEADER_LENGTH ? parseGlobalHeader(this.buf.subarray(0, GLOBAL_HEADER_LENGTH)) : undefined;
    if (!h) throw new Error(`${f.name}: not a classic pcap file`);
    const first = this.header;
    if (first && (h.linktype !== first.linktype || h.snaplen !== first.snaplen || h.nanoseconds !== first.nanoseconds)) {
      throw new Error(`${f.name}: its header (link type ${h.linktype}, snap length ${h.snaplen}) differs from its interface's earlier files`);
    }
    this.header = first ?? h;
    if (first && h.littleEndian !== first.littleEndian) this.header = { ...first, littleEndian: h.littleEndian };
    this.start = GLOBAL_HEADER_LENGTH;
    return true;
  }
}

export interface MergeInput {
  records: PcapFileSequence;
  /** The pcapng interface its packets go out on. */
  interfaceId: number;
}

/**
 * Every input's records as Enhanced Packet Blocks in timestamp order (ties by interface id),
 * in the encoder's chunks; timestamps keep each input's own resolution (its interface block
 * says which). Inputs must be open. Every input is closed at the end, or on any error.
 */
export async function* mergeToPcapng(inputs: MergeInput[], enc: PacketEncoder): AsyncGenerator<Buffer> {
  interface Head extends TimeKeyed { input: MergeInput; nanoseconds: boolean }
  const heap = new TimeHeap<Head>();
  const keyed = (h: Head): Head => {
    const r = h.input.records;
    h.s = r.seconds;
    h.ns = h.nanoseconds ? r.fraction : r.fraction * 1000;
    return h;
  };
  try {
    for (const input of inputs) {
      if (await input.records.next()) heap.push(keyed({ input, nanoseconds: input.records.header!.nanoseconds, s: 0, ns: 0, tag: input.interfaceId }));
    }
    for (let h = heap.pop(); h; h = heap.pop()) {
      const r = h.input.records;
      const full = enc.packetAt(h.input.interfaceId, r.seconds, r.fraction, h.nanoseconds, r.buf, r.dataAt, r.caplen, r.origlen);
      if (full) yield full;
      if (r.tryNext() || (await r.next())) heap.push(keyed(h));
    }
    const rest = enc.take();
    if (rest) yield rest;
  } finally {
    await Promise.all(inputs.map((i) => i.records.close()));
  }
}
