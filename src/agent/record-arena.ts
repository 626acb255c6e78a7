// Where a capture worker keeps what tcpdump wrote until it is on disk (docs/agent.md,
// "Capture at tcpdump's cost"): two fixed buffers, filled in turn. Reads are copied in, record
// headers are walked to find where the whole records end, and a batch is handed to the disk
// as a view of the buffer; the next batch fills the other buffer meanwhile, starting with the
// record the last one cut. Nothing is allocated per read or per packet: at 100 000 packets/s,
// a fresh buffer per pipe read made the garbage collector the agent's largest cost.
import { GLOBAL_HEADER_LENGTH, parseGlobalHeader, type PcapHeader } from '../pcap/format.js';
import { corruptRecordError, wholeRecords } from '../pcap/records.js';

/** Each buffer holds at least one record of the largest size libpcap writes, and a read. */
export const ARENA_BYTES = 512 * 1024;

export interface RecordBatch {
  /** Whole records, back to back: a view of the arena, valid until the next take(). */
  bytes: Buffer;
  records: number;
}

export class RecordArena {
  header: PcapHeader | undefined;
  headerBytes: Buffer | undefined;
  private readonly bufs: [Buffer, Buffer];
  private cur = 0;
  /** Bytes in the current buffer; records start at `start` and are whole up to `whole`. */
  private fill = 0;
  private start = 0;
  private whole = 0;
  private records = 0;

  constructor(size = ARENA_BYTES) {
    this.bufs = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)];
  }

  /** Free bytes in the buffer being filled: the reader pauses below one read's worth. */
  get room(): number {
    return this.bufs[this.cur]!.length - this.fill;
  }

  /** Bytes of whole records waiting to be taken. */
  get wholeBytes(): number {
    return this.whole - this.start;
  }

  get wholeRecords(): number {
    return this.records;
  }

  /** Copies `data` in (it must fit: `room`); throws on bytes that are not pcap. */
  push(data: Buffer): void {
    const buf = this.bufs[this.cur]!;
    if (data.length > buf.length - this.fill) throw new Error(`record arena overrun: ${data.length} bytes into ${buf.length - this.fill}`);
    data.copy(buf, this.fill);
    this.fill += data.length;
    if (!this.header) {
      if (this.fill < GLOBAL_HEADER_LENGTH) return;
      const header = parseGlobalHeader(buf.subarray(0, GLOBAL_HEADER_LENGTH));
      if (!header) throw new Error('the capture stream is not a classic pcap stream');
      this.header = header;
      this.headerBytes = Buffer.from(buf.subarray(0, GLOBAL_HEADER_LENGTH));
      this.start = this.whole = GLOBAL_HEADER_LENGTH;
    }
    const run = wholeRecords(buf, this.whole, this.fill, this.header.littleEndian);
    this.whole += run.bytes;
    this.records += run.records;
    if (run.corrupt) throw corruptRecordError(buf, this.whole, this.header.littleEndian);
  }

  /**
   * The whole records so far, as a view of the current buffer; filling goes on in the other
   * one, which must no longer be in use (the last batch is written), starting with the cut
   * record. Undefined when there is none.
   */
  take(): RecordBatch | undefined {
    if (this.records === 0) return undefined;
    const from = this.bufs[this.cur]!;
    const batch = { bytes: from.subarray(this.start, this.whole), records: this.records };
    const next = 1 - this.cur;
    const tail = this.fill - this.whole;
    from.copy(this.bufs[next]!, 0, this.whole, this.fill);
    this.cur = next;
    this.fill = tail;
    this.start = this.whole = 0;
    this.records = 0;
    return batch;
  }

  /** Bytes received but not yet part of a complete record. */
  get partialBytes(): number {
    return this.fill - this.whole;
  }
}
