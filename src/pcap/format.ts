// Classic libpcap files (what tcpdump -w writes and every tool reads): a 24-byte global
// header, then records of a 16-byte header and incl_len bytes of packet. kube-pcap writes
// and serves classic pcap, never pcapng.
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
