// Classic libpcap files (what tcpdump -w writes and every tool reads): a 24-byte global
// header, then records of a 16-byte header and incl_len bytes of packet. kube-pcap writes
// and serves classic pcap, never pcapng.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

export const GLOBAL_HEADER_LENGTH = 24;
export const RECORD_HEADER_LENGTH = 16;
/** Larger records than this are taken as corruption (tcpdump's maximum snaplen is 262144). */
export const MAX_RECORD_LENGTH = 262_144;

export interface PcapHeader {
  littleEndian: boolean;
  nanoseconds: boolean;
  snaplen: number;
  linktype: number;
}

/** LINKTYPE_ETHERNET: what a pod's veth, and a bridge port, capture as. */
export const LINKTYPE_ETHERNET = 1;

/** A little-endian, microsecond global header (what tcpdump writes on x86 and arm64). */
export function encodeGlobalHeader(snaplen = 262_144, linktype = LINKTYPE_ETHERNET): Buffer {
  const b = Buffer.alloc(GLOBAL_HEADER_LENGTH);
  b.writeUInt32LE(0xa1b2c3d4, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(4, 6);
  b.writeUInt32LE(snaplen, 16);
  b.writeUInt32LE(linktype, 20);
  return b;
}

/** The global header, or undefined when the bytes are not the start of a classic pcap file. */
export function parseGlobalHeader(buf: Buffer): PcapHeader | undefined {
  if (buf.length < GLOBAL_HEADER_LENGTH) return undefined;
  const le = buf.readUInt32LE(0);
  const be = buf.readUInt32BE(0);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  if (le === 0xa1b2c3d4 || le === 0xa1b23c4d) {
    littleEndian = true;
    nanoseconds = le === 0xa1b23c4d;
  } else if (be === 0xa1b2c3d4 || be === 0xa1b23c4d) {
    littleEndian = false;
    nanoseconds = be === 0xa1b23c4d;
  } else {
    return undefined;
  }
  const u32 = (o: number): number => (littleEndian ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  return { littleEndian, nanoseconds, snaplen: u32(16), linktype: u32(20) };
}

/** incl_len of the record header at `offset` of `buf`. */
export function recordLength(buf: Buffer, offset: number, header: PcapHeader): number {
  return header.littleEndian ? buf.readUInt32LE(offset + 8) : buf.readUInt32BE(offset + 8);
}

/**
 * Bytes of the whole records at the start of `block` that fit in `room`, walking record
 * headers (`lengthAt` reads incl_len). 0 when not even the first fits.
 */
export function wholeRecordsWithin(block: Buffer, room: number, lengthAt: (buf: Buffer, off: number) => number): number {
  let off = 0;
  while (off + RECORD_HEADER_LENGTH <= block.length) {
    const end = off + RECORD_HEADER_LENGTH + lengthAt(block, off);
    if (end > room || end > block.length) break;
    off = end;
  }
  return off;
}

/**
 * Length of the longest prefix of a pcap file that ends on a complete record: what a reader
 * may be given while a writer is still appending, and what a crashed writer's file is cut
 * back to. 0 when not even the global header is complete or the file is not pcap.
 */
export async function completePrefixLength(path: string): Promise<number> {
  // Non-blocking: a FIFO under a capture file's name must not hold a thread until written to.
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const size = (await fh.stat()).size;
    if (size < GLOBAL_HEADER_LENGTH) return 0;
    const first = Buffer.alloc(GLOBAL_HEADER_LENGTH);
    await fh.read(first, 0, GLOBAL_HEADER_LENGTH, 0);
    const header = parseGlobalHeader(first);
    if (!header) return 0;
    const chunkSize = 1 << 20;
    const buf = Buffer.alloc(chunkSize + RECORD_HEADER_LENGTH);
    let good = GLOBAL_HEADER_LENGTH;
    // Walk record headers; read a chunk at a time so a 10 MB file costs ten reads.
    let bufStart = -1;
    let bufLen = 0;
    while (good + RECORD_HEADER_LENGTH <= size) {
      if (bufStart < 0 || good + RECORD_HEADER_LENGTH > bufStart + bufLen) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, good);
        bufStart = good;
        bufLen = bytesRead;
        if (bytesRead < RECORD_HEADER_LENGTH) break;
      }
      const len = recordLength(buf, good - bufStart, header);
      if (len > MAX_RECORD_LENGTH) break;
      const end = good + RECORD_HEADER_LENGTH + len;
      if (end > size) break;
      good = end;
    }
    return good;
  } finally {
    await fh.close();
  }
}
