// Reading pcapng as kube-pcap's agents write it (docs/pcapng.md, "Across nodes"): the gateway
// parses each node's stream block by block to merge it with the others. The agent is trusted
// only as far as the contract: one little-endian section, blocks whole and of sane sizes,
// interface blocks that say what this reader can compare (microsecond or nanosecond
// timestamps), packets on interfaces declared before them. Anything else is an error that
// cuts the download, never a file Wireshark would misread.
import { MAX_RECORD_LENGTH } from './format.js';
import { BYTE_ORDER_MAGIC, EPB, IDB, IF_DESCRIPTION, IF_NAME, IF_TSRESOL, ISB, NRB, NRB_IPV4, NRB_IPV6, SHB, type InterfaceOptions } from './pcapng.js';

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
 * Whole blocks of one pcapng stream, in whatever chunks its bytes arrive. `tryNext()` hands
 * out a block already buffered without a promise (a merge asks once per packet), `more()`
 * reads on. Blocks are views into buffers never reused, so a caller may hold one while it
 * reads the next.
 */
export class PcapngBlockReader {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  private ended = false;
  private sawSection = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(body: AsyncIterable<Buffer>, readonly what: string) {
    this.it = body[Symbol.asyncIterator]();
  }

  /** The next whole block if it is buffered; undefined when more bytes are needed (or at the end). */
  tryNext(): Buffer | undefined {
    const avail = this.buf.length - this.off;
    if (avail < 12) return undefined;
    const type = this.buf.readUInt32LE(this.off);
    if (!this.sawSection) {
      if (type !== SHB || this.buf.readUInt32LE(this.off + 8) !== BYTE_ORDER_MAGIC) throw new PcapngFormatError(this.what, 'does not start with a little-endian Section Header Block');
      this.sawSection = true;
    } else if (type === SHB) {
      throw new PcapngFormatError(this.what, 'starts a second section');
    }
    const length = this.buf.readUInt32LE(this.off + 4);
    if (length < 12 || length % 4 !== 0 || length > MAX_BLOCK_LENGTH) throw new PcapngFormatError(this.what, `a block of type ${type} claims ${length} bytes`);
    if (avail < length) return undefined;
    const block = this.buf.subarray(this.off, this.off + length);
    if (block.readUInt32LE(length - 4) !== length) throw new PcapngFormatError(this.what, `a block of type ${type} ends with another length than it starts with`);
    this.off += length;
    return block;
  }

  /** Reads the next chunk; false at the end of the stream. The end inside a block is an error. */
  async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      if (this.buf.length - this.off > 0) throw new PcapngFormatError(this.what, 'ends inside a block');
      return false;
    }
    const rest = this.buf.length - this.off;
    this.buf = rest === 0 ? r.value : Buffer.concat([this.buf.subarray(this.off), r.value]);
    this.off = 0;
    return true;
  }

  /** The next block, reading as needed; undefined at the end. */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const b = this.tryNext();
      if (b) return b;
      if (!(await this.more())) return undefined;
    }
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

export interface PacketFields {
  interfaceId: number;
  tsHigh: number;
  tsLow: number;
}

/** An Enhanced Packet Block's interface and timestamp; its captured length is checked against the block. */
export function parsePacketBlock(block: Buffer, what: string): PacketFields {
  if (block.length < 32 || 28 + block.readUInt32LE(20) > block.length - 4) throw new PcapngFormatError(what, 'a packet block is shorter than its captured length');
  return { interfaceId: block.readUInt32LE(8), tsHigh: block.readUInt32LE(12), tsLow: block.readUInt32LE(16) };
}

export const BlockType = { SHB, IDB, NRB, ISB, EPB } as const;
