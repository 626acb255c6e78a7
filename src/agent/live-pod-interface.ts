// One pod interface of a live stream (docs/pcapng.md, "Live"): its files in written order,
// followed by descriptor, and what one tick read of them. The stream (live-follow.ts) lists
// the directory, merges interfaces in time order and writes the pcapng; this part reads a
// pod interface's files and counts, exactly, what a slow viewer did not get to see.
import type { FileHandle } from 'node:fs/promises';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from '../pcap/format.js';
import { corruptRecordError, recordLength, wholeRecords } from '../pcap/records.js';
import type { TimeKeyed } from '../pcap/time-heap.js';
import type { FileSource } from './file-source.js';

/** A file being followed: by descriptor, whatever its name becomes. */
export interface Followed {
  fh: FileHandle;
  ino: bigint;
  name: string;
  /** Next byte to read. */
  pos: number;
  /** Directory listings in a row that did not have it: two mean pruned or deleted (one may be a rename under way). */
  absent: number;
  source: FileSource | undefined;
  /** Records of the file before `pos` (read, or passed over when joining it midway). */
  index: number;
  /** Whether its first record number has been checked against where the last file stopped. */
  checked: boolean;
}

/** Same interface block: same link type, snap length and timestamp resolution. */
export function sameHeader(a: PcapHeader, b: PcapHeader): boolean {
  return a.linktype === b.linktype && a.snaplen === b.snaplen && a.nanoseconds === b.nanoseconds;
}

export class LivePodInterface implements TimeKeyed {
  files: Followed[] = [];
  header: PcapHeader | undefined;
  interfaceId: number | undefined;
  source: FileSource | undefined;
  /** Records not delivered (files let go, or pruned unseen), not said yet. */
  skipped = 0;
  /** Where the last file read stopped, in its writer's record numbers: the next file should start there. */
  private expectWriter: string | undefined;
  private expectNext: number | undefined;
  lastStats = 0;
  /** The last packet delivered, Unix microseconds. */
  lastMicros = 0;
  /** Bytes read this tick, whole records; `cursor` is the next record's offset. */
  buf = Buffer.allocUnsafe(64 * 1024);
  filled = 0;
  cursor = 0;
  /** More is committed than this tick read. */
  behind = false;
  /** The heap's key: the record at the cursor's time, and the interface's order. */
  s = 0;
  ns = 0;
  tag = 0;

  constructor(readonly key: string, readonly base: string) {}

  /**
   * Reads what is committed of the files, whole records, up to `budget` bytes: the files in
   * turn, closing each that is finished (no longer written, read to its end). `liveLength`
   * is the writer's committed length of a file it still writes; `adopt` is told each file's
   * header before its records are read.
   */
  async readTick(liveLength: (ino: bigint) => number | undefined, budget: number, adopt: (h: PcapHeader) => void): Promise<void> {
    this.filled = 0;
    this.cursor = 0;
    this.behind = false;
    while (this.files.length > 0) {
      const f = this.files[0]!;
      if (!f.checked) {
        f.checked = true;
        this.countGap(f);
      }
      const live = liveLength(f.ino);
      const size = live ?? Number((await f.fh.stat({ bigint: true })).size);
      if (f.pos === 0) {
        if (size < GLOBAL_HEADER_LENGTH) {
          if (live !== undefined) return; // its header is still coming
          await this.finish();
          continue;
        }
        const h = Buffer.alloc(GLOBAL_HEADER_LENGTH);
        await f.fh.read(h, 0, GLOBAL_HEADER_LENGTH, 0);
        const header = parseGlobalHeader(h);
        if (!header) {
          await this.finish();
          continue;
        }
        // Records of the previous file that are still buffered keep its interface: read them first.
        if (this.filled > 0 && this.header && !sameHeader(this.header, header)) return;
        adopt(header);
        f.pos = GLOBAL_HEADER_LENGTH;
      }
      const room = Math.min(budget - this.filled, size - f.pos);
      if (room > 0) {
        if (this.buf.length < this.filled + room) {
          const bigger = Buffer.allocUnsafe(Math.max(this.filled + room, Math.min(budget, 2 * this.buf.length), RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH));
          this.buf.copy(bigger, 0, 0, this.filled);
          this.buf = bigger;
        }
        const { bytesRead } = await f.fh.read(this.buf, this.filled, room, f.pos);
        // Only whole records count; a cut one is read again next tick.
        const whole = wholeRecords(this.buf, this.filled, this.filled + bytesRead, this.header!.littleEndian);
        if (whole.corrupt) throw corruptRecordError(this.buf, this.filled + whole.bytes, this.header!.littleEndian);
        f.pos += whole.bytes;
        f.index += whole.records;
        this.filled += whole.bytes;
      }
      if (f.pos < size) {
        this.behind = true; // more is committed than this tick may hold
        return;
      }
      if (live !== undefined) return; // read to what is committed; more will come
      await this.finish(); // a rotated (or pruned) file read to its end
    }
  }

  /** More than `maxHeld` pruned files open: the oldest go (counted when the next is read). */
  async letGoOfOldPruned(maxHeld: number): Promise<void> {
    const gone = (f: Followed): boolean => f.absent >= 2;
    while (this.files.filter(gone).length > maxHeld) {
      const f = this.files.find(gone)!;
      this.files.splice(this.files.indexOf(f), 1);
      if (!f.checked) {
        f.checked = true;
        this.countGap(f);
      }
      await this.letGo(f);
    }
  }

  /** The next record of this tick at or after `sinceMicros` into the heap key; false when the tick has no more. */
  nextRecord(sinceMicros: number): boolean {
    const h = this.header;
    while (h && this.cursor + RECORD_HEADER_LENGTH <= this.filled) {
      const b = this.buf;
      const c = this.cursor;
      const seconds = h.littleEndian ? b.readUInt32LE(c) : b.readUInt32BE(c);
      const fraction = h.littleEndian ? b.readUInt32LE(c + 4) : b.readUInt32BE(c + 4);
      const micros = seconds * 1_000_000 + (h.nanoseconds ? Math.floor(fraction / 1000) : fraction);
      if (micros < sinceMicros) {
        this.cursor += RECORD_HEADER_LENGTH + recordLength(b, c, h.littleEndian);
        continue;
      }
      this.s = seconds;
      this.ns = h.nanoseconds ? fraction : fraction * 1000;
      return true;
    }
    return false;
  }

  /** Closes every file (the stream ended). */
  async closeAll(): Promise<void> {
    await Promise.all(this.files.map((f) => f.fh.close().catch(() => undefined)));
  }

  private async finish(): Promise<void> {
    const f = this.files.shift();
    if (f) await this.letGo(f);
  }

  /**
   * Done with a file (read to its end, or let go unread): where it stopped is where the next
   * file of its writer should start; the difference, if any, is what was skipped.
   */
  private async letGo(f: Followed): Promise<void> {
    const s = f.source;
    this.expectWriter = s?.writer;
    this.expectNext = s?.writer !== undefined && s.firstRecord !== undefined ? s.firstRecord + f.index : undefined;
    await f.fh.close().catch(() => undefined);
  }

  /** Records between where the last file stopped and where this one starts: skipped (too slow, or pruned unseen). */
  private countGap(f: Followed): void {
    const s = f.source;
    if (this.expectNext === undefined || s?.writer !== this.expectWriter || s?.firstRecord === undefined) return;
    if (s.firstRecord + f.index > this.expectNext) this.skipped += s.firstRecord + f.index - this.expectNext;
  }
}
