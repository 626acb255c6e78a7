// Reading pcapng as kube-pcap's agents write it (docs/pcapng.md, "Across nodes"): the gateway
// parses each node's stream block by block to merge it with the others. The agent is trusted
// only as far as the contract: one little-endian section, blocks whole and of sane sizes,
// interface blocks that say what this reader can compare (microsecond or nanosecond
// timestamps), packets on interfaces declared before them. Anything else is an error that
// cuts the download, never a file Wireshark would misread.
import { MAX_RECORD_LENGTH } from './format.js';
import { BYTE_ORDER_MAGIC, EPB, IDB, IF_DESCRIPTION, IF_NAME, IF_TSRESOL, ISB, ISB_ENDTIME, ISB_IFDROP, ISB_STARTTIME, NRB, NRB_IPV4, NRB_IPV6, OPT_COMMENT, SHB, type InterfaceOptions } from './pcapng.js';

/** Larger blocks than this are taken as corruption: a packet of tcpdump's largest snap length and room for options. */
export const MAX_BLOCK_LENGTH = MAX_RECORD_LENGTH + 64 * 1024;

/** A stream that is not pcapng as the contract has it. */
export class PcapngFormatError extends Error {
  constructor(what: string, message: string) {
    super(`${what}: ${message}`);
    this.name = 'PcapngFormatError';
  }
}

/**
 * Whole blocks of one pcapng stream, in whatever chunks its bytes arrive. After `tryNext()`
 * (or `next()`) returns true, the block is `buf[at, at + length)`, valid until the next call:
 * a merge asks once per packet, so a block is a position, not an allocation, and it is read
 * in place in the chunk it arrived in. Only a block cut by a chunk boundary is copied, into
 * one reused buffer. `tryNext()` takes no promise; `more()` reads on.
 */
export class PcapngBlockReader {
  buf: Buffer = Buffer.alloc(0);
  at = 0;
  length = 0;
  type = 0;
  private cur: Buffer = Buffer.alloc(0);
  private off = 0;
  /** A block cut by a chunk boundary, being put together: its bytes so far and how many are missing. */
  private carry: Buffer = Buffer.alloc(0);
  private carried = 0;
  private missing = 0;
  private whole = false;
  private blocks = 0;
  private ended = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(body: AsyncIterable<Buffer>, readonly what: string) {
    this.it = body[Symbol.asyncIterator]();
  }

  /** The next whole block if its bytes are here (no promise); false when more are needed, or at the end. */
  tryNext(): boolean {
    if (this.whole) {
      this.whole = false;
      return this.found(this.carry, 0, this.carried);
    }
    if (this.missing > 0) return false;
    const avail = this.cur.length - this.off;
    if (avail < 12) return false;
    const length = this.lengthAt(this.cur, this.off);
    if (avail < length) return false;
    const at = this.off;
    this.off += length;
    return this.found(this.cur, at, length);
  }

  /** Reads the next chunk; false at the end of the stream. The end inside a block is an error. */
  async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      if (this.missing > 0 || this.cur.length - this.off > 0) throw new PcapngFormatError(this.what, 'ends inside a block');
      return false;
    }
    const c = r.value;
    const rest = this.cur.length - this.off;
    if (this.missing === 0 && rest === 0) {
      this.cur = c;
      this.off = 0;
      return true;
    }
    if (this.missing === 0 && rest < 12) {
      // Not even the block's length is here: the few bytes go in front of the new chunk.
      this.cur = Buffer.concat([this.cur.subarray(this.off), c]);
      this.off = 0;
      return true;
    }
    if (this.missing === 0) {
      const length = this.lengthAt(this.cur, this.off);
      if (this.carry.length < length) this.carry = Buffer.allocUnsafe(Math.max(length, 2 * this.carry.length, 4096));
      this.cur.copy(this.carry, 0, this.off);
      this.carried = rest;
      this.missing = length - rest;
    }
    const n = Math.min(this.missing, c.length);
    c.copy(this.carry, this.carried, 0, n);
    this.carried += n;
    this.missing -= n;
    this.cur = c;
    this.off = n;
    if (this.missing === 0) this.whole = true;
    return true;
  }

  /** The next block, reading as needed; false at the end. */
  async next(): Promise<boolean> {
    for (;;) {
      if (this.tryNext()) return true;
      if (!(await this.more())) return false;
    }
  }

  /** The current block as a view of its own (for the few blocks that are not packets). */
  block(): Buffer {
    return this.buf.subarray(this.at, this.at + this.length);
  }

  /** The length of the block at `o`, checked: a sane size, and one section, begun by a little-endian SHB. */
  private lengthAt(b: Buffer, o: number): number {
    const type = b.readUInt32LE(o);
    if (this.blocks === 0) {
      if (type !== SHB || b.readUInt32LE(o + 8) !== BYTE_ORDER_MAGIC) throw new PcapngFormatError(this.what, 'does not start with a little-endian Section Header Block');
    } else if (type === SHB) {
      throw new PcapngFormatError(this.what, 'starts a second section');
    }
    const length = b.readUInt32LE(o + 4);
    if (length < 12 || length % 4 !== 0 || length > MAX_BLOCK_LENGTH) throw new PcapngFormatError(this.what, `a block of type ${type} claims ${length} bytes`);
    return length;
  }

  private found(b: Buffer, at: number, length: number): boolean {
    const type = b.readUInt32LE(at);
    if (b.readUInt32LE(at + length - 4) !== length) throw new PcapngFormatError(this.what, `a block of type ${type} ends with another length than it starts with`);
    this.buf = b;
    this.at = at;
    this.length = length;
    this.type = type;
    this.blocks++;
    return true;
  }
}

/** Each option of a block whose options start at `from`: [code, value view]. */
function* options(block: Buffer, from: number): Generator<[number, Buffer]> {
  const end = block.length - 4;
  for (let o = from; o + 4 <= end;) {
    const code = block.readUInt16LE(o);
    const len = block.readUInt16LE(o + 2);
    if (code === 0) return;
    if (o + 4 + len > end) throw new Error(`option ${code} runs past its block`);
    yield [code, block.subarray(o + 4, o + 4 + len)];
    o += 4 + ((len + 3) & ~3);
  }
}

/** An Interface Description Block's fields, as pcapng.ts writes them; refuses resolutions other than 10^-6 and 10^-9 s. */
export function parseInterfaceBlock(block: Buffer, what: string): InterfaceOptions {
  if (block.length < 20) throw new PcapngFormatError(what, 'an interface block is too short');
  const out: InterfaceOptions = { linkType: block.readUInt16LE(8), snapLen: block.readUInt32LE(12), name: '', tsresol: 6 };
  try {
    for (const [code, value] of options(block, 16)) {
      if (code === IF_NAME) out.name = value.toString('utf8');
      else if (code === IF_DESCRIPTION) out.description = value.toString('utf8');
      else if (code === IF_TSRESOL) {
        if (value.length !== 1 || (value[0] !== 6 && value[0] !== 9)) throw new Error(`if_tsresol ${value.toString('hex')} is neither microseconds nor nanoseconds`);
        out.tsresol = value[0];
      }
    }
  } catch (err) {
    throw new PcapngFormatError(what, `an interface block: ${(err as Error).message}`);
  }
  return out;
}

/** An Interface Statistics Block's fields, as pcapng.ts writes them (other options left out). */
export interface StatisticsFields {
  interfaceId: number;
  timestamp: bigint;
  startTime?: bigint;
  endTime?: bigint;
  kernelDrops?: number;
  comment?: string;
}

export function parseStatisticsBlock(block: Buffer, what: string): StatisticsFields {
  if (block.length < 24) throw new PcapngFormatError(what, 'a statistics block is too short');
  const ts = (b: Buffer, at: number): bigint => (BigInt(b.readUInt32LE(at)) << 32n) | BigInt(b.readUInt32LE(at + 4));
  const out: StatisticsFields = { interfaceId: block.readUInt32LE(8), timestamp: ts(block, 12) };
  try {
    for (const [code, value] of options(block, 20)) {
      if (code === OPT_COMMENT) out.comment = value.toString('utf8');
      else if (code === ISB_STARTTIME && value.length === 8) out.startTime = ts(value, 0);
      else if (code === ISB_ENDTIME && value.length === 8) out.endTime = ts(value, 0);
      else if (code === ISB_IFDROP && value.length === 8) out.kernelDrops = Number(value.readBigUInt64LE(0));
    }
  } catch (err) {
    throw new PcapngFormatError(what, `a statistics block: ${(err as Error).message}`);
  }
  return out;
}

/** A Name Resolution Block's IPv4 and IPv6 entries with their names. */
export function parseNameBlock(block: Buffer, what: string): { ip: string; names: string[] }[] {
  const entries: { ip: string; names: string[] }[] = [];
  const end = block.length - 4;
  for (let o = 8; o + 4 <= end;) {
    const type = block.readUInt16LE(o);
    const len = block.readUInt16LE(o + 2);
    if (type === 0) break;
    if (o + 4 + len > end) throw new PcapngFormatError(what, 'a name record runs past its block');
    const value = block.subarray(o + 4, o + 4 + len);
    const addrLen = type === NRB_IPV4 ? 4 : type === NRB_IPV6 ? 16 : 0;
    if (addrLen > 0 && value.length > addrLen) {
      const ip = addrLen === 4 ? [...value.subarray(0, 4)].join('.') : Array.from({ length: 8 }, (_, i) => value.readUInt16BE(i * 2).toString(16)).join(':');
      const names = value.subarray(addrLen).toString('utf8').split('\0').filter((n) => n.length > 0);
      entries.push({ ip, names });
    }
    o += 4 + ((len + 3) & ~3);
  }
  return entries;
}

/** Whether the Enhanced Packet Block at `at` holds its captured length (a cut packet is off-contract). */
export function packetBlockWhole(b: Buffer, at: number, length: number): boolean {
  return length >= 32 && 28 + b.readUInt32LE(at + 20) <= length - 4;
}

/** Whether the Enhanced Packet Block at `at` is exactly its packet, with no option (what the agents write). */
export function packetBlockBare(b: Buffer, at: number, length: number): boolean {
  return length === 32 + ((b.readUInt32LE(at + 20) + 3) & ~3);
}

export const BlockType = { SHB, IDB, NRB, ISB, EPB } as const;
