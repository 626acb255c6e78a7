// One pod interface's pcap files: <base>.pcap being written, <base>-<unixMicros>.pcap rotated.
//
// Only whole records are ever written, each batch with one write; a failed or short write
// is cut back to the last whole record. So every file is valid pcap at any moment, also
// after a crash: at open, a leftover current file is cut back to its last complete record
// and rotated, and capture continues in a new file. Rotation happens between records, so
// no packet is lost or written twice across it; the oldest rotated files beyond maxFiles
// are deleted first.
import { constants } from 'node:fs';
import { lstat, open, readdir, rename, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GLOBAL_HEADER_LENGTH, parseGlobalHeader, RECORD_HEADER_LENGTH } from '../pcap/format.js';
import { completePrefixLength, recordLength, wholeRecords } from '../pcap/records.js';
import type { RotationGate } from './rotation-gate.js';

export interface RotationPolicy {
  maxSizeBytes: number;
  rotationSeconds: number;
  maxFiles: number;
}

/** What the writer tells its owner about the files it makes and deletes (file-source.ts). */
export interface FileHooks {
  /**
   * A new file is open and holds its header; awaited before any record goes in. Its first
   * record will be this writer's record number `firstRecord` (counted from 0 since the writer
   * was made): a reader that knows where it stopped in the previous file can tell exactly how
   * many records it did not see (live-follow.ts).
   */
  opened?(ino: bigint, birthNs: bigint, header: Buffer, firstRecord: number): Promise<void>;
  /** A file of this writer was deleted (pruned beyond maxFiles, or empty). */
  removed?(ino: bigint): Promise<void>;
}

export class DiskFullError extends Error {
  constructor(path: string) {
    super(`no space left on the device holding ${path}`);
    this.name = 'DiskFullError';
  }
}

let lastMicros = 0;
/** Unix microseconds, strictly increasing within this process (unique rotated names). */
function unixMicros(nowMs: number): number {
  const micros = Math.max(Math.floor(nowMs * 1000), lastMicros + 1);
  lastMicros = micros;
  return micros;
}

export class RotatingPcapFile {
  readonly currentPath: string;
  /** Which writer numbered the records (file sources carry it with `firstRecord`). */
  readonly writerId = randomBytes(8).toString('hex');
  /** Records written by this writer, over all its files. */
  private written = 0;
  private fh: FileHandle | undefined;
  /** Bytes of the current file that are whole records (what readers may be given). */
  private committed = 0;
  private openedAt = 0;
  private header: Buffer | undefined;
  private littleEndian = true;
  /** Inode of the file being written: how the file server knows it by identity, not by name. */
  private ino: bigint | undefined;

  constructor(
    readonly dir: string,
    /** "<pod>_<iface>" */
    readonly base: string,
    private readonly policy: RotationPolicy,
    private readonly onRotate: () => void = () => undefined,
    private readonly now: () => number = Date.now,
    /** Renames and prunes wait while a pin of this directory is made (rotation-gate.ts). */
    private readonly gate?: RotationGate,
    private readonly hooks: FileHooks = {},
  ) {
    this.currentPath = join(dir, `${base}.pcap`);
  }

  /** Committed length of the file with inode `ino`, if it is the one being written. */
  liveLengthOf(ino: bigint): number | undefined {
    return this.fh && this.ino === ino ? this.committed : undefined;
  }

  /** Makes a leftover current file (e.g. from before a crash) whole and rotates it away. */
  async recover(): Promise<void> {
    const st = await lstat(this.currentPath).catch(() => undefined);
    if (!st) return;
    // Not ours to read or rotate: opening a FIFO would block a thread until someone writes.
    if (!st.isFile()) throw new Error(`${this.currentPath} is not a regular file; remove it to capture on this interface`);
    const good = await completePrefixLength(this.currentPath);
    // Cutting a torn tail never shortens what a pin holds: pins end on complete records.
    if (good < st.size) await truncate(this.currentPath, good);
    await this.rotation(async () => {
      if (good > GLOBAL_HEADER_LENGTH) await this.rotateFile(this.currentPath);
      else await this.unlinkFile(this.currentPath);
    });
  }

  /**
   * Appends a block of whole records (a RecordArena batch, `records` of them if the caller
   * counted). The first call (and the first after a rotation) writes `header`, the stream's
   * global header. The block is cut only where rotation needs it, between records, by
   * walking record headers; each piece goes to the disk in one write. Throws DiskFullError
   * with the file still valid.
   */
  async append(header: Buffer, block: Buffer, records?: number): Promise<void> {
    if (this.header && !this.header.equals(header)) {
      // A restarted tcpdump with another link type or snap length: new file.
      await this.rotate();
    }
    if (this.header !== header) {
      this.header = header;
      this.littleEndian = parseGlobalHeader(header)?.littleEndian ?? true;
    }
    const le = this.littleEndian;
    let rest = block;
    // The caller's count saves walking the records; they are walked only where a cut falls.
    let restRecords = records ?? wholeRecords(block, 0, block.length, le).records;
    while (rest.length > 0) {
      if (!this.fh) await this.openNew(header);
      const room = this.policy.maxSizeBytes - this.committed;
      let cut = rest.length <= room ? { bytes: rest.length, records: restRecords } : wholeRecords(rest, 0, room, le);
      // A record larger than the limit goes alone into a file of its own.
      if (cut.bytes === 0 && this.committed <= GLOBAL_HEADER_LENGTH) cut = { bytes: RECORD_HEADER_LENGTH + recordLength(rest, 0, le), records: 1 };
      if (cut.bytes > 0) {
        await this.writeRecords(rest.subarray(0, cut.bytes), cut.records);
        rest = rest.subarray(cut.bytes);
        restRecords -= cut.records;
      }
      if (rest.length === 0) break;
      await this.rotate();
      await this.openNew(header);
    }
  }

  /** Writes whole records in one write; when the disk is full, every whole record that still fits, then gives up. */
  private async writeRecords(bytes: Buffer, records: number): Promise<void> {
    try {
      await this.write(bytes);
      this.written += records;
    } catch (err) {
      if (!(err instanceof DiskFullError)) throw err;
      for (let off = 0; off < bytes.length;) {
        const end = off + RECORD_HEADER_LENGTH + recordLength(bytes, off, this.littleEndian);
        await this.write(bytes.subarray(off, end));
        this.written++;
        off = end;
      }
    }
  }

  /** Rotates when the current file holds packets and is older than the rotation period. */
  async rotateIfOld(): Promise<boolean> {
    if (!this.fh || this.committed <= GLOBAL_HEADER_LENGTH) return false;
    if (this.now() - this.openedAt < this.policy.rotationSeconds * 1000) return false;
    await this.rotate();
    return true;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private async openNew(header: Buffer): Promise<void> {
    // A new inode every time, never a truncated old one: a download may have pinned the old
    // one by a hard link (file-pins.ts), and truncating it would change the pinned bytes.
    // O_NOFOLLOW and O_NONBLOCK: whatever took the file's name (a symlink, a FIFO nothing
    // reads) fails at once instead of redirecting or blocking the write.
    const existing = await lstat(this.currentPath).catch(() => undefined);
    if (existing && !existing.isFile()) throw new Error(`${this.currentPath} is not a regular file; remove it to capture on this interface`);
    if (existing) await this.rotation(() => this.unlinkFile(this.currentPath));
    const fh = await open(this.currentPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
    const st = await fh.stat({ bigint: true }).catch(() => undefined);
    if (!st?.isFile()) {
      await fh.close();
      throw new Error(`${this.currentPath} is not a regular file; remove it to capture on this interface`);
    }
    this.fh = fh;
    this.ino = st.ino;
    this.committed = 0;
    this.openedAt = this.now();
    await this.write(header);
    await this.hooks.opened?.(st.ino, st.birthtimeNs, header, this.written);
  }

  private async write(bytes: Buffer): Promise<void> {
    const fh = this.fh!;
    try {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, this.committed + done);
        if (bytesWritten === 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
        done += bytesWritten;
      }
      this.committed += bytes.length;
    } catch (err) {
      // Whatever part of the batch reached the disk is cut away again.
      await fh.truncate(this.committed).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || (err as NodeJS.ErrnoException).code === 'EDQUOT') throw new DiskFullError(this.currentPath);
      throw err;
    }
  }

  private async rotate(): Promise<void> {
    const hadPackets = this.committed > GLOBAL_HEADER_LENGTH;
    await this.rotation(async () => {
      await this.close();
      if (hadPackets) await this.rotateFile(this.currentPath);
      else await this.unlinkFile(this.currentPath);
    });
  }

  private async rotation(op: () => Promise<void>): Promise<void> {
    await (this.gate ? this.gate.rotation(this.dir, op) : op());
  }

  private async rotateFile(path: string): Promise<void> {
    await rename(path, join(this.dir, `${this.base}-${unixMicros(this.now())}.pcap`));
    this.onRotate();
    await this.prune();
  }

  /** Deletes the oldest rotated files beyond maxFiles. */
  private async prune(): Promise<void> {
    const pattern = new RegExp(`^${escapeRegExp(this.base)}-(\\d+)\\.pcap$`);
    const rotated = (await readdir(this.dir))
      .map((f) => ({ f, m: pattern.exec(f) }))
      .filter((x): x is { f: string; m: RegExpExecArray } => x.m !== null)
      .sort((a, b) => (BigInt(a.m[1]!) < BigInt(b.m[1]!) ? -1 : 1));
    for (const { f } of rotated.slice(0, Math.max(0, rotated.length - this.policy.maxFiles))) {
      await this.unlinkFile(join(this.dir, f));
    }
  }

  /** Deletes a file of this writer, and tells the owner which inode went. */
  private async unlinkFile(path: string): Promise<void> {
    const st = await lstat(path, { bigint: true }).catch(() => undefined);
    if (!st) return;
    await unlink(path).catch(() => undefined);
    await this.hooks.removed?.(st.ino);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
