// The files of one tcpdump, under the names the file layout promises (docs/agent.md, "Capture
// at tcpdump's cost"): `<pod>_<iface>.pcap` being written, `<pod>_<iface>-<unixMicros>.pcap`
// rotated, at most maxFiles of those.
//
// tcpdump writes `<pod>_<iface>.pcap` itself: its standard output is that file, opened here
// for appending, and a large stdio buffer makes its writes as cheap as bare `tcpdump -w`'s.
// It does not rotate (its -C asks the file's position after every packet: 4.6x its CPU,
// measured); the agent does, by copy: the file's whole records up to the size limit are
// copied to the rotated name (copy_file_range: in the kernel), then, with tcpdump stopped for
// the moment it takes, the bytes after the cut are moved to the front (after the header) and
// the file truncated behind them. tcpdump, continued, appends after them.
//
// The file being written keeps its inode through rotations, but not its content: each
// rotation starts a new generation of it. Every file's records are numbered in its writer's
// count (the source's writer and firstRecord, file-source.ts); the first record number of a
// generation tells generations apart (in the file's identity, and to the live stream), and
// makes the stream's reading exact across a rotation (a record is never given twice).
import { constants, type BigIntStats } from 'node:fs';
import { copyFile, lstat, mkdir, open, rename, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GLOBAL_HEADER_LENGTH, MAX_RECORD_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH, type PcapHeader } from '../pcap/format.js';
import { wholeRecords } from '../pcap/records.js';
import type { RotationGate } from './rotation-gate.js';
import { dropRotatedPrefix, makeWhole, readFully, rotatedFiles } from './tcpdump-file-recovery.js';

export interface RotationPolicy {
  maxSizeBytes: number;
  rotationSeconds: number;
  maxFiles: number;
}

/** Bytes read at once when walking the file being written. */
const WALK_CHUNK_BYTES = 1024 * 1024;

/** tcpdump's default (and largest) snap length. */
const TCPDUMP_MAX_SNAPLEN = 262_144;

/**
 * The most a rotated file holds: the size limit, or one record alone when a record is larger.
 * The file being written may pass the limit by what tcpdump writes between two looks at it
 * (docs/agent.md); that is counted in the node's budget by rotation's own margin.
 */
export function fileBytesAtMost(policy: RotationPolicy): number {
  return Math.max(policy.maxSizeBytes, GLOBAL_HEADER_LENGTH + RECORD_HEADER_LENGTH + TCPDUMP_MAX_SNAPLEN);
}

/** What the files' owner is told. */
export interface TcpdumpFileHooks {
  /** The file being written has its header: its source is recorded (first record number `firstRecord`). */
  started?(ino: bigint, birthNs: bigint, header: PcapHeader, numbering: Numbering): Promise<void>;
  /** A rotated copy is about to get its name: its source (the generation's) is recorded first. */
  copied?(ino: bigint, birthNs: bigint, numbering: Numbering): Promise<void>;
  /** The file being written began a new generation whose first record is `numbering.firstRecord`. */
  generation?(ino: bigint, birthNs: bigint, numbering: Numbering): Promise<void>;
  /** The file with this inode is no longer written; it had `size` bytes (rotated or deleted next). */
  retired?(ino: bigint, size: number): void;
  /** A file was rotated. */
  rotated?(): void;
  /** A rotated file is about to be deleted beyond maxFiles (its records may need counting first). */
  pruning?(path: string): Promise<void>;
  /** A file was deleted (pruned beyond maxFiles, or it held no packet). */
  removed?(ino: bigint): Promise<void>;
}

/** A file's place in its writer's record numbers. */
export interface Numbering {
  writer: string;
  firstRecord: number;
}

/** Runs its argument while tcpdump is stopped; false when it could not be stopped now. */
export type WhileStopped = (op: () => Promise<void>) => Promise<boolean>;

let lastMicros = 0;
/** Unix microseconds, strictly increasing within this process (unique rotated names). */
function unixMicros(nowMs: number): number {
  const micros = Math.max(Math.floor(nowMs * 1000), lastMicros + 1);
  lastMicros = micros;
  return micros;
}

/** The file being written: its descriptor (the agent's, shared with tcpdump's stdout) and where its records are known to. */
interface Current {
  fh: FileHandle;
  ino: bigint;
  birthNs: bigint;
  header: PcapHeader | undefined;
  /** First record number of this generation. */
  firstRecord: number;
  /** When this generation began (agent's clock). */
  since: number;
  /** Whole records walked from the header: to this offset, this many. */
  walked: number;
  records: number;
  /** Where a rotation by size cuts, among the records walked: the last within the limit (or the first, alone), and how many records come before. */
  cut: number;
  cutRecords: number;
}

export class TcpdumpFiles {
  readonly currentPath: string;
  /** The writer the files' records are numbered under: new for every worker (a restarted agent counts anew). */
  readonly writer = randomBytes(8).toString('hex');
  /** Records in this writer's files before the file being written (or the next one). */
  private nextRecord = 0;
  private current: Current | undefined;
  /** The turn of walks and rotations of the file being written (serial()). */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    readonly dir: string,
    /** "<pod>_<iface>" */
    readonly base: string,
    private readonly policy: RotationPolicy,
    private readonly hooks: TcpdumpFileHooks = {},
    private readonly gate?: RotationGate,
    private readonly now: () => number = Date.now,
  ) {
    this.currentPath = join(dir, `${base}.pcap`);
  }

  private get copyPath(): string {
    // Not a capture file's name (a leading dot): never listed, pinned or served half copied.
    return join(this.dir, `.rotating-${this.base}.pcap`);
  }

  /** Whether the file tcpdump writes now has this inode. */
  isCurrent(ino: bigint): boolean {
    return this.current?.ino === ino;
  }

  /** The first record number of the file being written, if it has this inode: its generation. */
  generationOf(ino: bigint): number | undefined {
    return this.current?.ino === ino ? this.current.firstRecord : undefined;
  }

  /**
   * Before a tcpdump starts: what an earlier one left (a crash, a kill) is made whole and
   * rotated, and a rotation's half-made copy removed. Every file ends on a complete record
   * afterwards.
   */
  async recover(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await unlink(this.copyPath).catch(() => undefined);
    await unlink(join(this.dir, `.rest-${this.base}.pcap`)).catch(() => undefined);
    await this.close();
    const st = await lstat(this.currentPath).catch(() => undefined);
    if (!st) return;
    if (!st.isFile()) throw new Error(`${this.currentPath} is not a regular file; remove it to capture on this interface`);
    await dropRotatedPrefix(this.currentPath, (await rotatedFiles(this.dir, this.base)).at(-1), this.dir, this.base);
    await makeWhole(this.currentPath);
    await this.retire(this.currentPath);
  }

  /** Creates the file tcpdump will write (empty: it writes the header) and returns its descriptor, for tcpdump's stdout. */
  async create(): Promise<number> {
    await this.close();
    // O_EXCL: recover() rotated whatever was there; anything under the name now is someone else's.
    const fh = await open(this.currentPath, constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    const st = await fh.stat({ bigint: true });
    this.current = { fh, ino: st.ino, birthNs: st.birthtimeNs, header: undefined, firstRecord: this.nextRecord, since: this.now(), walked: GLOBAL_HEADER_LENGTH, records: 0, cut: GLOBAL_HEADER_LENGTH, cutRecords: 0 };
    return fh.fd;
  }

  /**
   * tcpdump has ended: a torn last record (killed mid-buffer) is cut away, and the file is no
   * longer the one being written (it is rotated when the next tcpdump starts). Returns its size.
   */
  async ended(): Promise<number> {
    const c = this.current;
    if (!c) return 0;
    return await this.serial(async () => {
      let size = Number((await c.fh.stat()).size);
      if (c.header || (await this.readHeader(c).catch(() => false))) {
        await this.walk(c).catch(() => undefined);
        if (c.walked < size) await c.fh.truncate((size = c.walked));
      }
      this.nextRecord = c.firstRecord + c.records;
      await this.close();
      return size;
    });
  }

  /** Size of the file being written, if any. */
  async size(): Promise<number | undefined> {
    const c = this.current;
    return c ? Number((await c.fh.stat()).size) : undefined;
  }

  /**
   * The complete-record prefix of the file being written, if it has inode `ino`: its records
   * walked from where the last walk stopped (each byte read once).
   */
  async committedLength(ino: bigint): Promise<number | undefined> {
    return await this.serial(async () => {
      const c = this.current;
      if (c?.ino !== ino || !(await this.walk(c))) return undefined;
      return c.walked;
    });
  }

  /**
   * Every look while tcpdump runs: the source recorded once the header is there, and a
   * rotation when one is due (the file past the size limit, or its generation older than the
   * rotation period). `stopped` runs a part while tcpdump is stopped.
   */
  async tick(stopped: WhileStopped): Promise<void> {
    const c = this.current;
    if (!c) return;
    if (!c.header && !(await this.readHeader(c))) return;
    for (let i = 0; i < 8 && this.current === c; i++) {
      const size = Number((await c.fh.stat()).size);
      const bySize = size - GLOBAL_HEADER_LENGTH > this.policy.maxSizeBytes;
      const byTime = this.now() - c.since >= this.policy.rotationSeconds * 1000;
      if (!bySize && !byTime) return;
      if (!(await this.rotate(c, stopped, bySize))) return;
      if (!bySize) return;
    }
  }

  private async readHeader(c: Current): Promise<boolean> {
    const b = Buffer.alloc(GLOBAL_HEADER_LENGTH);
    const { bytesRead } = await c.fh.read(b, 0, b.length, 0);
    if (bytesRead < b.length) return false; // still in tcpdump's buffer
    const header = parseGlobalHeader(b);
    if (!header) throw new Error(`tcpdump wrote ${this.currentPath} without a pcap header`);
    await this.hooks.started?.(c.ino, c.birthNs, header, { writer: this.writer, firstRecord: c.firstRecord });
    c.header = header;
    return true;
  }

  /**
   * Walks the whole records after `c.walked` (callers hold the walk's turn), noting where a
   * rotation by size would cut; false when the file has no header yet. A tight loop over
   * record headers, in chunks: a callback per record cost a rotation of 10 MB files 0.7
   * CPU-s per 2 million packets, measured.
   */
  private async walk(c: Current): Promise<boolean> {
    if (!c.header && !(await this.readHeader(c))) return false;
    const size = Number((await c.fh.stat()).size);
    if (size <= c.walked) return true;
    const le = c.header!.littleEndian;
    const limit = GLOBAL_HEADER_LENGTH + this.policy.maxSizeBytes;
    const buf = Buffer.allocUnsafe(Math.min(WALK_CHUNK_BYTES, size - c.walked) + RECORD_HEADER_LENGTH + MAX_RECORD_LENGTH);
    while (c.walked < size) {
      const pos = c.walked;
      const { bytesRead } = await c.fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      const run = wholeRecords(buf, 0, bytesRead, le);
      if (pos + run.bytes <= limit) {
        if (run.records > 0) Object.assign(c, { cut: pos + run.bytes, cutRecords: c.records + run.records });
      } else if (pos < limit || c.cutRecords === 0) {
        // This chunk crosses the limit: its whole records within it, or the generation's
        // first record alone when that one is larger.
        const within = wholeRecords(buf, 0, Math.max(0, limit - pos), le);
        const cut = within.records > 0 ? within : c.cutRecords === 0 ? wholeRecords(buf, 0, bytesRead, le, 1) : undefined;
        if (cut && cut.records > 0) Object.assign(c, { cut: pos + cut.bytes, cutRecords: c.records + cut.records });
      }
      c.walked += run.bytes;
      c.records += run.records;
      if (run.corrupt) throw new Error(`${this.currentPath} holds a record that is no pcap record at offset ${c.walked}`);
      if (run.bytes === 0) break;
    }
    return true;
  }

  /** Walks, rotations and reads of the walk's result take turns. */
  private async serial<T>(op: () => Promise<T>): Promise<T> {
    const before = this.turn;
    let done!: () => void;
    this.turn = new Promise<void>((resolve) => (done = resolve));
    try {
      await before;
      return await op();
    } finally {
      done();
    }
  }

  /**
   * One rotation of the file being written: its whole records up to the size limit (all of
   * them when by time) copied to the rotated name, and the rest moved to the front while
   * tcpdump is stopped. False when there was nothing to rotate, or tcpdump could not be
   * stopped now (the next look tries again).
   */
  private async rotate(c: Current, stopped: WhileStopped, bySize: boolean): Promise<boolean> {
    let moved = false;
    // Inside the directory's rotation turn: a pin (or a copy for a reader) sees the file
    // before the rotation or after it, and the copy made here under no capture file's name.
    await this.rotation(() => this.serial(async () => {
      if (this.current !== c || !(await this.walk(c))) return;
      const { cut, records } = bySize ? { cut: c.cut, records: c.cutRecords } : { cut: c.walked, records: c.records };
      if (records === 0) {
        // Nothing whole in a generation past its time: it starts over.
        if (!bySize) c.since = this.now();
        return;
      }
      // A reflink where the filesystem has them (xfs, btrfs): no copy at all; else copy_file_range.
      await copyFile(this.currentPath, this.copyPath, constants.COPYFILE_FICLONE);
      await truncate(this.copyPath, cut);
      const copy = await lstat(this.copyPath, { bigint: true });
      await this.hooks.copied?.(copy.ino, copy.birthtimeNs, { writer: this.writer, firstRecord: c.firstRecord });
      moved = await stopped(async () => {
        await rename(this.copyPath, join(this.dir, `${this.base}-${unixMicros(this.now())}.pcap`));
        const size = Number((await c.fh.stat()).size);
        const tail = Buffer.allocUnsafe(size - cut);
        if (tail.length > 0) await readFully(c.fh, tail, cut);
        // The new generation before the file changes: a reader that finds the old one after
        // reading knows what it read was not changed meanwhile (live-pod-interface.ts).
        c.firstRecord += records;
        // What was walked past the cut is walked again, moved (a rotation's worth at most).
        Object.assign(c, { since: this.now(), walked: GLOBAL_HEADER_LENGTH, records: 0, cut: GLOBAL_HEADER_LENGTH, cutRecords: 0 });
        await c.fh.truncate(GLOBAL_HEADER_LENGTH);
        if (tail.length > 0) await c.fh.write(tail, 0, tail.length);
      });
      if (!moved) {
        await unlink(this.copyPath).catch(() => undefined);
        return;
      }
      await this.hooks.generation?.(c.ino, c.birthNs, { writer: this.writer, firstRecord: c.firstRecord });
      this.hooks.retired?.(copy.ino, cut);
      await this.prune();
    }));
    if (moved) this.hooks.rotated?.();
    return moved;
  }

  private async close(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.fh.close().catch(() => undefined);
  }

  /** The file at `path` is done: rotated if it holds a packet, deleted if not. */
  private async retire(path: string): Promise<void> {
    const st = await lstat(path, { bigint: true }).catch(() => undefined);
    if (!st) return;
    this.hooks.retired?.(st.ino, Number(st.size));
    if (st.size <= BigInt(GLOBAL_HEADER_LENGTH)) {
      await this.rotation(() => this.unlinkFile(path, st));
      return;
    }
    await this.rotation(async () => {
      await rename(path, join(this.dir, `${this.base}-${unixMicros(this.now())}.pcap`));
      await this.prune();
    });
    this.hooks.rotated?.();
  }

  private async rotation(op: () => Promise<void>): Promise<void> {
    await (this.gate ? this.gate.rotation(this.dir, op) : op());
  }

  /** Deletes the oldest rotated files beyond maxFiles. */
  private async prune(): Promise<void> {
    const rotated = await rotatedFiles(this.dir, this.base);
    for (const f of rotated.slice(0, Math.max(0, rotated.length - this.policy.maxFiles))) {
      const path = join(this.dir, f);
      const st = await lstat(path, { bigint: true }).catch(() => undefined);
      if (!st) continue;
      await this.hooks.pruning?.(path);
      await this.unlinkFile(path, st);
    }
  }

  private async unlinkFile(path: string, st: BigIntStats): Promise<void> {
    await unlink(path).catch(() => undefined);
    await this.hooks.removed?.(st.ino);
  }
}
