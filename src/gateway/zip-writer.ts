// The one zip writer: the bytes of files.zip around the entries' data (docs/downloads.md,
// "One zip writer"), stored or deflated: per entry a local header before its bytes and a
// data descriptor after them (entries are streamed, so their CRC and sizes follow them), then
// the central directory and the end records. A stored zip's layout is archiver's
// (compress-commons) field for field, so zip-length.ts's sizes are those of this writer;
// test/unit/zip-length.test.ts holds the three together. Written here rather than through
// archiver: four stream stages fewer on every 16 KiB a download moves (bench:download).
import { MAX16, MAX32 } from './zip-length.js';

const SIG_LFH = 0x04034b50;
const SIG_DD = 0x08074b50;
const SIG_CFH = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_EOCD_LOC = 0x07064b50;
/** Version 2.0: data descriptors; 4.5: zip64. "Made by" 4.5 on Unix (3). */
const VERSION_DATA_DESCRIPTOR = 20;
const VERSION_ZIP64 = 45;
const MADE_BY = (3 << 8) | 45;
/** General purpose bit 3: sizes and CRC follow the data. */
const FLAG_DATA_DESCRIPTOR = 0x0008;
/** Bit 11: the name is UTF-8 (set for names with multi-byte characters, as archiver does). */
const FLAG_UTF8 = 0x0800;
/** A regular file, mode 0644, with DOS's archive bit. */
const EXTERNAL_ATTRIBUTES = ((0o100644 << 16) | 0x20) >>> 0;
const ZIP64_EXTRA_ID = 0x0001;

/** How an entry's bytes are kept: as they are, or deflated (RFC 1951, zip method 8). */
export type ZipMethod = 'store' | 'deflate';
const METHOD_CODE: Record<ZipMethod, number> = { store: 0, deflate: 8 };

interface Written {
  name: Buffer;
  flags: number;
  method: number;
  time: number;
  crc: number;
  /** Bytes in the archive (deflated, or the same as size). */
  compressed: number;
  /** Bytes of the file. */
  size: number;
  offset: number;
}

/** MS-DOS date and time (UTC, two-second resolution), clamped to what the format holds. */
export function dosTime(d: Date): number {
  const year = d.getUTCFullYear();
  if (year < 1980) return 0x00210000; // 1980-01-01 00:00:00
  if (year >= 2044) return 0x7f9fbf7d; // 2043-12-31 23:59:58
  return (((year - 1980) << 25) | ((d.getUTCMonth() + 1) << 21) | (d.getUTCDate() << 16) | (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1)) >>> 0;
}

export class ZipWriter {
  private offset = 0;
  private readonly entries: Written[] = [];
  private current: Omit<Written, 'crc' | 'size' | 'compressed'> | undefined;

  /** `zip64`: zip64 end records whatever the entries need (zip-length.ts, forceZip64). */
  constructor(private readonly zip64: boolean) {}

  /** The local header of the next entry; its bytes follow (deflated or not), then descriptor(). */
  localHeader(name: string, modified: Date, how: ZipMethod = 'store'): Buffer {
    const nameBytes = Buffer.from(name);
    const flags = FLAG_DATA_DESCRIPTOR | (nameBytes.length !== name.length ? FLAG_UTF8 : 0);
    const method = METHOD_CODE[how];
    const time = dosTime(modified);
    const b = Buffer.alloc(30 + nameBytes.length);
    b.writeUInt32LE(SIG_LFH, 0);
    b.writeUInt16LE(VERSION_DATA_DESCRIPTOR, 4);
    b.writeUInt16LE(flags, 6);
    b.writeUInt16LE(method, 8);
    b.writeUInt32LE(time, 10);
    // CRC and sizes (14..25) are zero: the data descriptor carries them.
    b.writeUInt16LE(nameBytes.length, 26);
    b.writeUInt16LE(0, 28);
    nameBytes.copy(b, 30);
    this.current = { name: nameBytes, flags, method, time, offset: this.offset };
    this.offset += b.length;
    return b;
  }

  /**
   * The data descriptor after an entry: the CRC-32 of its `size` bytes, and the `compressed`
   * bytes the archive holds of them (the same for a stored entry); 8-byte sizes past 4 GiB.
   */
  descriptor(crc: number, size: number, compressed = size): Buffer {
    const cur = this.current;
    if (!cur) throw new Error('a data descriptor without a local header');
    if (cur.method === METHOD_CODE.store && compressed !== size) throw new Error('a stored entry is as long in the archive as on disk');
    this.current = undefined;
    const big = size > MAX32 || compressed > MAX32;
    const b = Buffer.alloc(big ? 24 : 16);
    b.writeUInt32LE(SIG_DD, 0);
    b.writeUInt32LE(crc >>> 0, 4);
    if (big) {
      b.writeBigUInt64LE(BigInt(compressed), 8);
      b.writeBigUInt64LE(BigInt(size), 16);
    } else {
      b.writeUInt32LE(compressed, 8);
      b.writeUInt32LE(size, 12);
    }
    this.offset += compressed + b.length;
    this.entries.push({ ...cur, crc: crc >>> 0, size, compressed });
    return b;
  }

  /** The central directory and end records: the archive's last bytes. */
  end(): Buffer {
    const parts: Buffer[] = [];
    const centralOffset = this.offset;
    let centralLength = 0;
    for (const e of this.entries) {
      const zip64 = e.size > MAX32 || e.compressed > MAX32 || e.offset > MAX32;
      const b = Buffer.alloc(46 + e.name.length + (zip64 ? 28 : 0));
      b.writeUInt32LE(SIG_CFH, 0);
      b.writeUInt16LE(MADE_BY, 4);
      b.writeUInt16LE(zip64 ? VERSION_ZIP64 : VERSION_DATA_DESCRIPTOR, 6);
      b.writeUInt16LE(e.flags, 8);
      b.writeUInt16LE(e.method, 10);
      b.writeUInt32LE(e.time, 12);
      b.writeUInt32LE(e.crc, 16);
      b.writeUInt32LE(zip64 ? MAX32 : e.compressed, 20);
      b.writeUInt32LE(zip64 ? MAX32 : e.size, 24);
      b.writeUInt16LE(e.name.length, 28);
      b.writeUInt16LE(zip64 ? 28 : 0, 30);
      // comment length, disk number, internal attributes: zero
      b.writeUInt32LE(EXTERNAL_ATTRIBUTES, 38);
      b.writeUInt32LE(zip64 ? MAX32 : e.offset, 42);
      e.name.copy(b, 46);
      if (zip64) {
        const x = 46 + e.name.length;
        b.writeUInt16LE(ZIP64_EXTRA_ID, x);
        b.writeUInt16LE(24, x + 2);
        // The zip64 extra: original size first, then compressed (APPNOTE 4.5.3).
        b.writeBigUInt64LE(BigInt(e.size), x + 4);
        b.writeBigUInt64LE(BigInt(e.compressed), x + 12);
        b.writeBigUInt64LE(BigInt(e.offset), x + 20);
      }
      parts.push(b);
      centralLength += b.length;
    }
    const zip64 = this.zip64 || this.entries.length > MAX16 || centralLength > MAX32 || centralOffset > MAX32;
    if (zip64) {
      const z = Buffer.alloc(76);
      z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
      z.writeBigUInt64LE(44n, 4);
      z.writeUInt16LE(VERSION_ZIP64, 12);
      z.writeUInt16LE(VERSION_ZIP64, 14);
      // disk numbers (16..23): zero
      z.writeBigUInt64LE(BigInt(this.entries.length), 24);
      z.writeBigUInt64LE(BigInt(this.entries.length), 32);
      z.writeBigUInt64LE(BigInt(centralLength), 40);
      z.writeBigUInt64LE(BigInt(centralOffset), 48);
      z.writeUInt32LE(SIG_ZIP64_EOCD_LOC, 56);
      z.writeUInt32LE(0, 60);
      z.writeBigUInt64LE(BigInt(centralOffset + centralLength), 64);
      z.writeUInt32LE(1, 72);
      parts.push(z);
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(SIG_EOCD, 0);
    const count = zip64 ? MAX16 : this.entries.length;
    e.writeUInt16LE(count, 8);
    e.writeUInt16LE(count, 10);
    e.writeUInt32LE(zip64 ? MAX32 : centralLength, 12);
    e.writeUInt32LE(zip64 ? MAX32 : centralOffset, 16);
    parts.push(e);
    return Buffer.concat(parts);
  }
}
