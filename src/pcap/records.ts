// The one walker of classic pcap records (docs/architecture.md, "One of each"): every place
// that needs to know where whole records end — the file server's and pins' length of a file
// tcpdump is writing, a crashed file's repair, the capture limits' count and cut, the live
// follower, an export's packet count (pcap-tally.ts) — asks here, so the rule for a record
// (16-byte header, incl_len bytes, never more than MAX_RECORD_LENGTH) is written once.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from './format.js';

/** incl_len of the record header at `off` (not checked: `wholeRecords` checks it). */
export function recordLength(buf: Buffer, off: number, littleEndian: boolean): number {
  return littleEndian ? buf.readUInt32LE(off + 8) : buf.readUInt32BE(off + 8);
}

/** Whole records found by a walk. */
export interface RecordRun {
  /** Bytes of the whole records walked over. */
  bytes: number;
  records: number;
  /**
   * The walk stopped at a record that claims more than MAX_RECORD_LENGTH bytes: the bytes
   * after `bytes` are not pcap. Each caller says what that means to it (a stream to stop, a
   * file to cut back).
   */
  corrupt: boolean;
}

/**
 * The whole records of `buf` from `from` on that end by `to`, at most `maxRecords` of them.
 * A record that does not end by `to` ends the walk (it is not whole yet, or not within room).
 */
export function wholeRecords(buf: Buffer, from: number, to: number, littleEndian: boolean, maxRecords = Infinity): RecordRun {
  let off = from;
  let records = 0;
  while (records < maxRecords && off + RECORD_HEADER_LENGTH <= to) {
    const incl = littleEndian ? buf.readUInt32LE(off + 8) : buf.readUInt32BE(off + 8);
    if (incl > MAX_RECORD_LENGTH) return { bytes: off - from, records, corrupt: true };
    const end = off + RECORD_HEADER_LENGTH + incl;
    if (end > to) break;
    off = end;
    records++;
  }
  return { bytes: off - from, records, corrupt: false };
}

/** The error a stream of records reports when `wholeRecords` found one that is not pcap. */
export function corruptRecordError(buf: Buffer, off: number, littleEndian: boolean): Error {
  return new Error(`corrupt pcap stream: a record claims ${recordLength(buf, off, littleEndian)} bytes`);
}

/**
 * The whole records of an open file between two offsets, walked a chunk at a time (a 10 MB
 * file costs ten reads); a corrupt record or the end of the file ends the walk.
 */
export async function wholeRecordsOfFile(fh: FileHandle, from: number, to: number, littleEndian: boolean): Promise<RecordRun> {
  const buf = Buffer.allocUnsafe(1024 * 1024 + RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH);
  let pos = from;
  let records = 0;
  while (pos < to) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
    const run = wholeRecords(buf, 0, bytesRead, littleEndian);
    pos += run.bytes;
    records += run.records;
    if (run.corrupt) return { bytes: pos - from, records, corrupt: true };
    if (run.bytes === 0) break;
  }
  return { bytes: pos - from, records, corrupt: false };
}

/**
 * Visits the whole records of an open file between two offsets, each with where it ends and
 * its timestamp (Unix microseconds), walked a chunk at a time as `wholeRecordsOfFile`.
 */
export async function visitRecordsOfFile(fh: FileHandle, from: number, to: number, header: PcapHeader, visit: (end: number, micros: number, bytes: number) => void): Promise<RecordRun> {
  const buf = Buffer.allocUnsafe(1024 * 1024 + RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH);
  const le = header.littleEndian;
  let pos = from;
  let records = 0;
  while (pos < to) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
    const run = wholeRecords(buf, 0, bytesRead, le);
    for (let off = 0; off < run.bytes;) {
      const seconds = le ? buf.readUInt32LE(off) : buf.readUInt32BE(off);
      const fraction = le ? buf.readUInt32LE(off + 4) : buf.readUInt32BE(off + 4);
      const bytes = RECORD_HEADER_LENGTH + recordLength(buf, off, le);
      off += bytes;
      visit(pos + off, seconds * 1_000_000 + (header.nanoseconds ? Math.floor(fraction / 1000) : fraction), bytes);
    }
    pos += run.bytes;
    records += run.records;
    if (run.corrupt) return { bytes: pos - from, records, corrupt: true };
    if (run.bytes === 0) break;
  }
  return { bytes: pos - from, records, corrupt: false };
}

/** The first `n` whole records of a file from `from` (a record's start) to `to`, or as many as there are. */
export async function skipRecordsOfFile(fh: FileHandle, from: number, to: number, littleEndian: boolean, n: number): Promise<RecordRun> {
  const buf = Buffer.allocUnsafe(256 * 1024 + RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH);
  let pos = from;
  let records = 0;
  while (pos < to && records < n) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
    const run = wholeRecords(buf, 0, bytesRead, littleEndian, n - records);
    pos += run.bytes;
    records += run.records;
    if (run.corrupt) return { bytes: pos - from, records, corrupt: true };
    if (run.bytes === 0) break;
  }
  return { bytes: pos - from, records, corrupt: false };
}

/** Whole records in a pcap file and their bytes (record headers included); 0 of each when it is not pcap. */
export async function recordsInFile(path: string): Promise<{ packets: number; bytes: number }> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const first = Buffer.alloc(GLOBAL_HEADER_LENGTH);
    const { bytesRead } = await fh.read(first, 0, GLOBAL_HEADER_LENGTH, 0);
    const header = bytesRead === GLOBAL_HEADER_LENGTH ? parseGlobalHeader(first) : undefined;
    if (!header) return { packets: 0, bytes: 0 };
    const run = await wholeRecordsOfFile(fh, GLOBAL_HEADER_LENGTH, (await fh.stat()).size, header.littleEndian);
    return { packets: run.records, bytes: run.bytes };
  } finally {
    await fh.close();
  }
}

/**
 * Length of the longest prefix of a pcap file that ends on a complete record: what a reader
 * may be given while a writer is still appending, and what a crashed writer's file is cut
 * back to. 0 when not even the global header is complete or the file is not pcap.
 */
export async function completePrefixLength(path: string, from = GLOBAL_HEADER_LENGTH): Promise<number> {
  // Non-blocking: a FIFO under a capture file's name must not hold a thread until written to.
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const size = (await fh.stat()).size;
    if (size < GLOBAL_HEADER_LENGTH) return 0;
    const first = Buffer.alloc(GLOBAL_HEADER_LENGTH);
    await fh.read(first, 0, GLOBAL_HEADER_LENGTH, 0);
    const header = parseGlobalHeader(first);
    if (!header) return 0;
    // `from` must be where a record starts (a length this returned before, for a file that only grows).
    const start = Math.max(GLOBAL_HEADER_LENGTH, Math.min(from, size));
    return start + (await wholeRecordsOfFile(fh, start, size, header.littleEndian)).bytes;
  } finally {
    await fh.close();
  }
}
