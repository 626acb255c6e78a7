// pcapng, as the merged download and the live stream write it (docs/pcapng.md): one section
// (Section Header Block naming kube-pcap), an Interface Description Block per pod interface
// with its name, metadata, link type, snap length and timestamp resolution, Enhanced Packet
// Blocks, a Name Resolution Block mapping pod IPs to names, and Interface Statistics Blocks.
// Little-endian, every block padded to 32 bits (the pcapng specification, draft-ietf-opsawg-
// pcapng). Packets are encoded into large chunks, not a buffer per packet: merging is
// per-record work, and a buffer per record would make the garbage collector its main cost.
import { isIPv4, isIPv6 } from 'node:net';

export const SHB = 0x0a0d0d0a;
export const IDB = 0x00000001;
export const NRB = 0x00000004;
export const ISB = 0x00000005;
export const EPB = 0x00000006;
export const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/**
 * kube-pcap's own block between an agent and the gateway (a local-use type: the top bit set,
 * as the pcapng specification reserves for applications): how far the agent's clock has been
 * delivered, in unix microseconds. The gateway consumes it; it never reaches a viewer.
 */
export const WATERMARK = 0x8b500001;

export const OPT_COMMENT = 1;
const SHB_HARDWARE = 2;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
export const IF_NAME = 2;
export const IF_DESCRIPTION = 3;
export const IF_TSRESOL = 9;
export const ISB_STARTTIME = 2;
export const ISB_ENDTIME = 3;
export const ISB_IFDROP = 5;
export const NRB_IPV4 = 1;
export const NRB_IPV6 = 2;
const NRB_END = 0;

/** An option's value: text (UTF-8), raw bytes, or a 64-bit count. */
type OptionValue = string | Buffer | bigint;

function pad4(n: number): number {
  return (n + 3) & ~3;
}

function optionBytes(options: [number, OptionValue][]): Buffer {
  if (options.length === 0) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  for (const [code, value] of options) {
    let v: Buffer;
    if (typeof value === 'bigint') {
      v = Buffer.alloc(8);
      v.writeBigUInt64LE(value);
    } else {
      v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    }
    if (v.length > 0xffff) throw new Error(`pcapng option ${code} is ${v.length} bytes, more than an option holds`);
    const o = Buffer.alloc(4 + pad4(v.length));
    o.writeUInt16LE(code, 0);
    o.writeUInt16LE(v.length, 2);
    v.copy(o, 4);
    parts.push(o);
  }
  parts.push(Buffer.alloc(4)); // opt_endofopt: code 0, length 0
  return Buffer.concat(parts);
}

function block(type: number, body: Buffer): Buffer {
  const total = 12 + pad4(body.length);
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

export interface SectionOptions {
  /** shb_userappl, e.g. "kube-pcap 0.4.0". */
  application: string;
  os?: string;
  hardware?: string;
  comment?: string;
}

export function sectionHeaderBlock(o: SectionOptions): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
  fixed.writeUInt16LE(1, 4);
  fixed.writeUInt16LE(0, 6);
  fixed.writeBigInt64LE(-1n, 8); // section length not given: the section is streamed
  const opts: [number, OptionValue][] = [];
  if (o.comment) opts.push([OPT_COMMENT, o.comment]);
  if (o.hardware) opts.push([SHB_HARDWARE, o.hardware]);
  if (o.os) opts.push([SHB_OS, o.os]);
  opts.push([SHB_USERAPPL, o.application]);
  return block(SHB, Buffer.concat([fixed, optionBytes(opts)]));
}

export interface InterfaceOptions {
  linkType: number;
  snapLen: number;
  /** if_name, e.g. "<node>/<namespace>/<pod>/<iface>". */
  name: string;
  /** if_description, e.g. "k8s.node=...;k8s.namespace=...;k8s.pod=...;k8s.capture=...". */
  description?: string;
  /** Timestamps in 10^-tsresol seconds: 6 (microseconds, tcpdump's) or 9. */
  tsresol: 6 | 9;
  comment?: string;
}

export function interfaceDescriptionBlock(o: InterfaceOptions): Buffer {
  const fixed = Buffer.alloc(8);
  fixed.writeUInt16LE(o.linkType, 0);
  fixed.writeUInt32LE(o.snapLen, 4);
  const opts: [number, OptionValue][] = [];
  if (o.comment) opts.push([OPT_COMMENT, o.comment]);
  opts.push([IF_NAME, o.name]);
  if (o.description) opts.push([IF_DESCRIPTION, o.description]);
  opts.push([IF_TSRESOL, Buffer.from([o.tsresol])]);
  return block(IDB, Buffer.concat([fixed, optionBytes(opts)]));
}

/** Name Resolution Block: each address with its names (e.g. "<pod>.<namespace>"). Addresses that are not IPs are left out. */
export function nameResolutionBlock(entries: { ip: string; names: string[] }[]): Buffer {
  const records: Buffer[] = [];
  for (const e of entries) {
    const names = e.names.filter((n) => n.length > 0 && !n.includes('\0'));
    if (names.length === 0) continue;
    let addr: Buffer;
    let type: number;
    if (isIPv4(e.ip)) {
      addr = Buffer.from(e.ip.split('.').map(Number));
      type = NRB_IPV4;
    } else if (isIPv6(e.ip)) {
      addr = ipv6Bytes(e.ip);
      type = NRB_IPV6;
    } else {
      continue;
    }
    const value = Buffer.concat([addr, ...names.map((n) => Buffer.from(`${n}\0`, 'utf8'))]);
    const r = Buffer.alloc(4 + pad4(value.length));
    r.writeUInt16LE(type, 0);
    r.writeUInt16LE(value.length, 2);
    value.copy(r, 4);
    records.push(r);
  }
  records.push(Buffer.from([NRB_END, 0, 0, 0]));
  return block(NRB, Buffer.concat(records));
}

/** The agent's watermark (WATERMARK): its stream holds every packet before `micros`, as far as it can tell. */
export function watermarkBlock(micros: bigint): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32LE(Number(micros >> 32n), 0);
  body.writeUInt32LE(Number(micros & 0xffffffffn), 4);
  return block(WATERMARK, body);
}

/** Interface Statistics Block: the kernel's drop count for an interface, and a comment (e.g. "N packets skipped"). */
export function interfaceStatisticsBlock(o: { interfaceId: number; timestamp: bigint; startTime?: bigint; endTime?: bigint; kernelDrops?: number; comment?: string }): Buffer {
  const fixed = Buffer.alloc(12);
  fixed.writeUInt32LE(o.interfaceId, 0);
  fixed.writeUInt32LE(Number(o.timestamp >> 32n), 4);
  fixed.writeUInt32LE(Number(o.timestamp & 0xffffffffn), 8);
  const opts: [number, OptionValue][] = [];
  if (o.comment) opts.push([OPT_COMMENT, o.comment]);
  const ts64 = (t: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(Number(t >> 32n), 0);
    b.writeUInt32LE(Number(t & 0xffffffffn), 4);
    return b;
  };
  if (o.startTime !== undefined) opts.push([ISB_STARTTIME, ts64(o.startTime)]);
  if (o.endTime !== undefined) opts.push([ISB_ENDTIME, ts64(o.endTime)]);
  if (o.kernelDrops !== undefined) opts.push([ISB_IFDROP, BigInt(o.kernelDrops)]);
  return block(ISB, Buffer.concat([fixed, optionBytes(opts)]));
}

/**
 * Enhanced Packet Blocks written into large chunks: `packet()` copies the bytes in, and
 * `take()` hands out what is ready. One allocation per chunk, not per packet; none at all
 * when the sender gives each chunk back once written (`recycle`): at hundreds of MiB/s, a
 * new chunk per write made the garbage collector's threads the largest cost (bench:pcapng).
 */
export class PacketEncoder {
  private chunk: Buffer;
  private fill = 0;
  private readonly free: Buffer[] = [];

  constructor(private readonly chunkBytes = 64 * 1024) {
    this.chunk = Buffer.allocUnsafe(chunkBytes);
  }

  /** Bytes waiting in the current chunk. */
  get pending(): number {
    return this.fill;
  }

  /**
   * One packet on interface `interfaceId`: `caplen` bytes of `src` from `at`, captured at
   * `seconds` and `fraction` (microseconds, or nanoseconds when `nanoseconds`; the interface's
   * if_tsresol must say the same). Returns a chunk when the current one is full (the caller
   * sends it), else undefined. Nothing is allocated per packet.
   */
  packetAt(interfaceId: number, seconds: number, fraction: number, nanoseconds: boolean, src: Buffer, at: number, caplen: number, originalLength: number): Buffer | undefined {
    let high: number;
    let low: number;
    if (!nanoseconds) {
      // Microseconds since the epoch fit a double exactly (until the year 2255).
      const us = seconds * 1_000_000 + fraction;
      high = Math.floor(us / 4294967296);
      low = us - high * 4294967296;
    } else {
      // Nanoseconds do not: seconds × 10^9 is split so that every product stays exact.
      const sh = Math.floor(seconds / 65536);
      const a = sh * 1_000_000_000;
      const ah = Math.floor(a / 65536);
      const l = (a - ah * 65536) * 65536 + (seconds - sh * 65536) * 1_000_000_000 + fraction;
      const carry = Math.floor(l / 4294967296);
      high = ah + carry;
      low = l - carry * 4294967296;
    }
    return this.epb(interfaceId, high, low, src, at, caplen, originalLength);
  }

  /** One packet of `data`, at a timestamp given as its two 32-bit halves in the interface's units. */
  packet(interfaceId: number, tsHigh: number, tsLow: number, data: Buffer, originalLength: number): Buffer | undefined {
    return this.epb(interfaceId, tsHigh, tsLow, data, 0, data.length, originalLength);
  }

  private epb(interfaceId: number, high: number, low: number, src: Buffer, at: number, caplen: number, originalLength: number): Buffer | undefined {
    const total = 32 + pad4(caplen);
    let full: Buffer | undefined;
    if (this.fill + total > this.chunk.length) {
      full = this.take();
      if (total > this.chunk.length) this.chunk = Buffer.allocUnsafe(total);
    }
    const b = this.chunk;
    const o = this.fill;
    b.writeUInt32LE(EPB, o);
    b.writeUInt32LE(total, o + 4);
    b.writeUInt32LE(interfaceId, o + 8);
    b.writeUInt32LE(high, o + 12);
    b.writeUInt32LE(low, o + 16);
    b.writeUInt32LE(caplen, o + 20);
    b.writeUInt32LE(originalLength, o + 24);
    src.copy(b, o + 28, at, at + caplen);
    b.fill(0, o + 28 + caplen, o + total - 4);
    b.writeUInt32LE(total, o + total - 4);
    this.fill += total;
    return full;
  }

  /**
   * A whole block copied in as it is (`src[at, at + length)`), with the interface id at
   * offset 8 rewritten when given (an EPB or ISB from another section, under this one's
   * numbering); returns a full chunk as packet() does.
   */
  copy(src: Buffer, at: number, length: number, interfaceId?: number): Buffer | undefined {
    let full: Buffer | undefined;
    if (this.fill + length > this.chunk.length) {
      full = this.take();
      if (length > this.chunk.length) this.chunk = Buffer.allocUnsafe(length);
    }
    src.copy(this.chunk, this.fill, at, at + length);
    if (interfaceId !== undefined) this.chunk.writeUInt32LE(interfaceId, this.fill + 8);
    this.fill += length;
    return full;
  }

  /** What is encoded so far, as its own buffer; the encoder starts a new chunk. */
  take(): Buffer | undefined {
    if (this.fill === 0) return undefined;
    const out = this.chunk.subarray(0, this.fill);
    this.chunk = this.free.pop() ?? Buffer.allocUnsafe(this.chunkBytes);
    this.fill = 0;
    return out;
  }

  /** A chunk from take() that has been written and may be reused. */
  recycle(chunk: Buffer): void {
    // Only the encoder's own chunks (a whole buffer of the chunk size), and only a few.
    if (chunk.byteOffset === 0 && chunk.buffer.byteLength === this.chunkBytes && this.free.length < 4) {
      this.free.push(Buffer.from(chunk.buffer, 0, this.chunkBytes));
    }
  }
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const parse = (s: string | undefined): string[] => (s ? s.split(':') : []);
  let groups = parse(head);
  let rest = parse(tail);
  // An IPv4 tail ("::ffff:192.0.2.1") is two groups.
  const fix = (g: string[]): string[] => g.flatMap((x) => (x.includes('.') ? (() => {
    const [a, b, c, d] = x.split('.').map(Number) as [number, number, number, number];
    return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
  })() : [x]));
  groups = fix(groups);
  rest = fix(rest);
  const all = tail === undefined ? groups : [...groups, ...Array(8 - groups.length - rest.length).fill('0'), ...rest];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}
