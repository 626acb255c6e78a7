// Small, valid pcap files for tests of serving and streaming: Ethernet/IPv4/UDP DNS queries
// between RFC 5737 addresses, with correct IPv4 checksums, readable by tshark.
import { open, writeFile } from 'node:fs/promises';

import { encodeGlobalHeader as pcapGlobalHeader } from '../../src/pcap/format.js';

export { pcapGlobalHeader };

export function pcapRecord(packet: Buffer, tsMicros: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(Math.floor(tsMicros / 1e6), 0);
  h.writeUInt32LE(tsMicros % 1e6, 4);
  h.writeUInt32LE(packet.length, 8);
  h.writeUInt32LE(packet.length, 12);
  return Buffer.concat([h, packet]);
}

function ipv4Checksum(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += header.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An Ethernet frame with a DNS A query for `name` from src:sport to dst:53. */
export function dnsQueryFrame(src: string, dst: string, sport: number, id: number, name: string): Buffer {
  const labels = Buffer.concat([...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
  const dns = Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), labels, Buffer.from([0, 1, 0, 1])]);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(sport, 0);
  udp.writeUInt16BE(53, 2);
  udp.writeUInt16BE(8 + dns.length, 4);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + dns.length, 2);
  ip.writeUInt16BE(id, 4);
  ip[8] = 64;
  ip[9] = 17;
  src.split('.').forEach((o, i) => (ip[12 + i] = Number(o)));
  dst.split('.').forEach((o, i) => (ip[16 + i] = Number(o)));
  ip.writeUInt16BE(ipv4Checksum(ip), 10);
  const eth = Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
  return Buffer.concat([eth, ip, udp, dns]);
}

/** A pcap file of `count` DNS queries; returns its bytes. */
export async function writeDnsPcap(path: string, count: number, opts: { src?: string; startMicros?: number } = {}): Promise<Buffer> {
  const parts = [pcapGlobalHeader()];
  const start = opts.startMicros ?? 1_700_000_000_000_000;
  for (let i = 0; i < count; i++) {
    parts.push(pcapRecord(dnsQueryFrame(opts.src ?? '192.0.2.10', '192.0.2.53', 40000 + (i % 20000), i & 0xffff, `q${i}.storefront.example`), start + i * 1000));
  }
  const bytes = Buffer.concat(parts);
  await writeFile(path, bytes);
  return bytes;
}

/** A valid pcap file of at least `size` bytes made of full-size frames, written in 1 MiB blocks. */
export async function writeLargePcap(path: string, size: number): Promise<number> {
  const frame = Buffer.alloc(1514);
  dnsQueryFrame('192.0.2.10', '192.0.2.53', 40000, 1, 'bulk.storefront.example').copy(frame);
  const record = pcapRecord(frame, 1_700_000_000_000_000);
  const block = Buffer.concat(Array.from({ length: Math.floor((1 << 20) / record.length) }, () => record));
  const fh = await open(path, 'w');
  try {
    let written = (await fh.write(pcapGlobalHeader())).bytesWritten;
    while (written < size) written += (await fh.write(block)).bytesWritten;
    return written;
  } finally {
    await fh.close();
  }
}
