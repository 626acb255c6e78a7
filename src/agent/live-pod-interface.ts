// One pod interface of a live stream (docs/pcapng.md, "Live"): its files in written order,
// followed by descriptor, and what one tick read of them. The stream (live-follow.ts) lists
// the directory, merges interfaces in time order and writes the pcapng; this part reads a
// pod interface's files and counts, exactly, what a slow viewer did not get to see.
import type { FileHandle } from 'node:fs/promises';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from '../pcap/format.js';
import { corruptRecordError, recordLength, skipRecordsOfFile, wholeRecords, wholeRecordsOfFile } from '../pcap/records.js';
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
  /** Number of its first record in its writer's count (a file being written: of the generation followed). */
  first: number | undefined;
  /** The generation followed, for a file being written (a rotation moves its content). */
  generation: number | undefined;
  /** Records of the file before `pos` (read, or passed over when joining it midway). */
  index: number;
  /** Records still to pass over: read already, from the file this one was copied from or the generation before. */
  skip: number;
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
   * Reads the files' whole records, up to `budget` bytes: the files in turn, closing each
   * that is finished (no longer written, read to its end). `writing` says whether tcpdump
   * still writes a file (it may be mid-record: the rest is read next tick), `generation`
   * which generation of it the file holds now; `adopt` is told each file's header before its
   * records are read.
   */
  async readTick(writing: (ino: bigint) => boolean, generation: (ino: bigint) => number | undefined, budget: number, adopt: (h: PcapHeader) => void): Promise<void> {
    this.filled = 0;
    this.cursor = 0;
    this.behind = false;
    while (this.files.length > 0) {
      const f = this.files[0]!;
      if (!f.checked) {
        f.checked = true;
        this.countGap(f);
      }
      // A rotation moved what follows to a copy and a new generation, both read next: where
      // this generation stopped is where they are read from.
      if (this.moved(f, generation)) {
        await this.finish();
        continue;
      }
      // Asked before the size: a file no longer written has its last bytes by then.
      const live = writing(f.ino);
      const size = Number((await f.fh.stat({ bigint: true })).size);
      if (f.pos === 0) {
        if (size < GLOBAL_HEADER_LENGTH) {
          if (live) return; // its header is still coming
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
      if (f.skip > 0) {
        const run = await skipRecordsOfFile(f.fh, f.pos, size, this.header!.littleEndian, f.skip);
        if (this.moved(f, generation)) {
          await this.finish();
          continue;
        }
        f.pos += run.bytes;
        f.index += run.records;
        f.skip -= run.records;
        if (f.skip > 0) {
          if (live) return; // the rest of what it repeats is still coming
          await this.finish();
          continue;
        }
      }
      const unread = size - f.pos;
      const room = Math.min(budget - this.filled, unread);
      if (room > 0) {
        if (this.buf.length < this.filled + room) {
          const bigger = Buffer.allocUnsafe(Math.max(this.filled + room, Math.min(budget, 2 * this.buf.length), RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH));
          this.buf.copy(bigger, 0, 0, this.filled);
          this.buf = bigger;
        }
        const { bytesRead } = await f.fh.read(this.buf, this.filled, room, f.pos);
        // Read while a rotation moved the file's content: not this generation's bytes.
        if (this.moved(f, generation)) {
          await this.finish();
          continue;
        }
        // Only whole records count; a cut one is read again next tick.
        const whole = wholeRecords(this.buf, this.filled, this.filled + bytesRead, this.header!.littleEndian);
        if (whole.corrupt) throw corruptRecordError(this.buf, this.filled + whole.bytes, this.header!.littleEndian);
        f.pos += whole.bytes;
        f.index += whole.records;
        this.filled += whole.bytes;
      }
      if (room < unread) {
        this.behind = true; // more is there than this tick may hold
        return;
      }
      if (live) return; // read to its last whole record; more will come
      await this.finish(); // a rotated (or pruned) file read to its end
    }
  }

  /** The file being written holds another generation than the one followed. */
  private moved(f: Followed, generation: (ino: bigint) => number | undefined): boolean {
    if (f.generation === undefined) return false;
    const now = generation(f.ino);
    return now !== undefined && now !== f.generation;
  }

  /**
   * More than `maxHeld` pruned files open: the oldest go. What is left of each is counted as
   * skipped (it is still open: its records are walked), and files pruned unseen are counted
   * when the next is read, by their writer's record numbers.
   */
  async letGoOfOldPruned(maxHeld: number): Promise<void> {
    const gone = (f: Followed): boolean => f.absent >= 2;
    while (this.files.filter(gone).length > maxHeld) {
      const f = this.files.find(gone)!;
      this.files.splice(this.files.indexOf(f), 1);
      if (!f.checked) {
        f.checked = true;
        this.countGap(f);
      }
      const rest = await this.unread(f);
      this.skipped += rest;
      f.index += rest;
      await this.letGo(f);
    }
  }

  /** Whole records of a file after where it was read to. */
  private async unread(f: Followed): Promise<number> {
    const size = Number((await f.fh.stat()).size);
    let from = f.pos;
    let le = this.header?.littleEndian;
    if (from === 0) {
      const h = Buffer.alloc(GLOBAL_HEADER_LENGTH);
      await f.fh.read(h, 0, GLOBAL_HEADER_LENGTH, 0);
      le = parseGlobalHeader(h)?.littleEndian;
      from = GLOBAL_HEADER_LENGTH;
    }
    if (le === undefined || size <= from) return 0;
    return (await wholeRecordsOfFile(f.fh, from, size, le)).records;
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
    const next = s?.writer !== undefined && f.first !== undefined ? f.first + f.index : undefined;
    // A file wholly read before (a rotation's copy of what was read) leaves the count where it was.
    this.expectNext = next !== undefined && this.expectWriter === s?.writer && this.expectNext !== undefined ? Math.max(this.expectNext, next) : next;
    this.expectWriter = s?.writer;
    await f.fh.close().catch(() => undefined);
  }

  /**
   * Records between where the last file stopped and where this one starts: skipped (too slow,
   * or pruned unseen); records it starts with that were read already: passed over.
   */
  private countGap(f: Followed): void {
    const s = f.source;
    if (this.expectNext === undefined || s?.writer !== this.expectWriter || f.first === undefined) return;
    const at = f.first + f.index;
    if (at > this.expectNext) this.skipped += at - this.expectNext;
    else f.skip = this.expectNext - at;
  }
}
