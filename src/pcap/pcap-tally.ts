// Counting a classic pcap file's packets as its bytes pass, in whatever chunks they come
// (an export's manifest says how many packets each object holds and which time they span,
// docs/export.md): the record headers are read, the packets skipped, nothing is kept. The rule
// for a record is records.ts's; this walks it across chunk boundaries, which a download's
// bytes cross anywhere.
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from './format.js';
import { recordLength } from './records.js';

/** A packet's time, as a pcap record holds it. */
export interface PacketTime {
  s: number;
  ns: number;
}

export function packetTimeIso(t: PacketTime): string {
  const base = new Date(t.s * 1000).toISOString().slice(0, 19);
  return `${base}.${String(t.ns).padStart(9, '0')}Z`;
}

export function earlier(a: PacketTime | undefined, b: PacketTime | undefined): PacketTime | undefined {
  if (!a) return b;
  if (!b) return a;
  return a.s < b.s || (a.s === b.s && a.ns <= b.ns) ? a : b;
}

export function later(a: PacketTime | undefined, b: PacketTime | undefined): PacketTime | undefined {
  if (!a) return b;
  if (!b) return a;
  return earlier(a, b) === a ? b : a;
}

export class PcapTally {
  packets = 0;
  first: PacketTime | undefined;
  last: PacketTime | undefined;
  /** Set when the bytes stop being pcap: counting stops there, the bytes still pass. */
  invalid: string | undefined;
  private header: PcapHeader | undefined;
  /** The global header or a record header cut by a chunk boundary. */
  private partial = Buffer.alloc(0);
  /** Packet bytes still to skip before the next record header. */
  private skip = 0;

  feed(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && this.invalid === undefined) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      const want = (this.header ? RECORD_HEADER_LENGTH : GLOBAL_HEADER_LENGTH) - this.partial.length;
      if (this.partial.length === 0 && chunk.length - off >= want) {
        this.take(chunk, off);
        off += want;
        continue;
      }
      const n = Math.min(want, chunk.length - off);
      this.partial = Buffer.concat([this.partial, chunk.subarray(off, off + n)]);
      off += n;
      if (n === want) {
        const whole = this.partial;
        this.partial = Buffer.alloc(0);
        this.take(whole, 0);
      }
    }
  }

  /** The bytes ended: true when they ended on a record's boundary. */
  get whole(): boolean {
    return this.invalid === undefined && this.header !== undefined && this.partial.length === 0 && this.skip === 0;
  }

  private take(buf: Buffer, at: number): void {
    if (!this.header) {
      this.header = parseGlobalHeader(buf.subarray(at, at + GLOBAL_HEADER_LENGTH));
      if (!this.header) this.invalid = 'not a pcap file';
      return;
    }
    const le = this.header.littleEndian;
    const s = le ? buf.readUInt32LE(at) : buf.readUInt32BE(at);
    const frac = le ? buf.readUInt32LE(at + 4) : buf.readUInt32BE(at + 4);
    const incl = recordLength(buf, at, le);
    if (incl > MAX_RECORD_LENGTH) {
      this.invalid = `a record claims ${incl} bytes`;
      return;
    }
    const t = { s, ns: this.header.nanoseconds ? frac : frac * 1000 };
    this.packets++;
    this.first = earlier(this.first, t);
    this.last = later(this.last, t);
    this.skip = incl;
  }
}
