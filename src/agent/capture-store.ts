// The capture directory on a node: <root>/<namespace>/<capture>/<pod>_<iface>.pcap is the
// file being written; <pod>_<iface>-<unixMicros>.pcap are rotated ones.
//
// Serving files from a host directory is where path tricks bite, so a requested name is
// used only if it is a plain name of the expected form, present in the directory listing,
// and a regular file opened without following symlinks; the directories on the way are
// checked to be real directories inside the root.
import { constants, type BigIntStats } from 'node:fs';
import { copyFile, lstat, open, readdir, realpath, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, sep } from 'node:path';
import { CAPTURE_FILE_NAME } from '../pcap/file-names.js';
import { completePrefixLength } from '../pcap/records.js';
import { GLOBAL_HEADER_LENGTH } from '../pcap/format.js';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN } from '../http/params.js';
import { fileIdentity, fileIdentityAt } from './file-identity.js';
import { readSource, removeSources, SOURCES_DIR, type FileSource } from './file-source.js';

/** What a served file name may look like (src/pcap/file-names.ts). */
const FILE_NAME = CAPTURE_FILE_NAME;
/** Rotated files end in -<unix microseconds>.pcap; the others may still be growing. */
const ROTATED = /-(\d{13,19})\.pcap$/;

const NAMESPACE = new RegExp(DNS1123_LABEL);
const CAPTURE = new RegExp(DNS1123_SUBDOMAIN);

export interface StoredFile {
  name: string;
  size: number;
  modified: string;
  /** Same for one file through renames, different for any two files (file-identity.ts). */
  identity: string;
  /** Where its packets come from, as recorded when the file was started (file-source.ts). */
  source?: FileSource;
}

export interface OpenedFile {
  handle: FileHandle;
  /** Bytes that may be served: for a growing file, up to its last complete record. */
  size: number;
  modified: Date;
  identity: string;
}

/** What the store asks the agent about the files its tcpdumps are writing right now. */
export interface WritingFiles {
  /** Whether a tcpdump is writing the file with this inode in this directory. */
  isWriting(dir: string, ino: bigint): boolean;
  /** Its complete-record prefix, if a tcpdump is writing it (tcpdump may be mid-record). */
  committedLength(dir: string, ino: bigint): Promise<number | undefined>;
  /** Every packet of the capture that reached the kernel before this time (ms) is in its files, if proven. */
  flushedThrough(namespace: string, name: string): number | undefined;
  /**
   * The generation of the file being written with this inode, if a tcpdump writes it: the
   * first record number of what it holds now (a rotation moves its content: tcpdump-files.ts).
   */
  generationOf(dir: string, ino: bigint): number | undefined;
  /** Runs `op` with no rotation in `dir` meanwhile (a copy of a file being written is one moment's). */
  steady<T>(dir: string, op: () => Promise<T>): Promise<T>;
}

const NOTHING_WRITTEN: WritingFiles = { isWriting: () => false, committedLength: () => Promise.resolve(undefined), flushedThrough: () => undefined, generationOf: () => undefined, steady: (_dir, op) => op() };

export function isRotatedName(file: string): boolean {
  return ROTATED.test(file);
}

/**
 * What a capture file's name says: its writer's base `<pod>_<iface>`, and for a rotated file
 * when it was rotated (unix microseconds); the file being written has none.
 */
export function parseFileName(file: string): { base: string; rotatedAt: bigint | undefined } {
  const m = ROTATED.exec(file);
  return m ? { base: file.slice(0, m.index), rotatedAt: BigInt(m[1]!) } : { base: file.replace(/\.pcap$/, ''), rotatedAt: undefined };
}

export interface CaptureFileEntry {
  name: string;
  path: string;
  /** lstat: a symlink under a capture file's name is no capture file. */
  st: BigIntStats;
}

/**
 * The capture files of a directory, sorted by name: plain names of the expected form that
 * are regular files. A file removed while this looks is left out. What the file server lists
 * and what a pin links are the same set (file-pins.ts).
 */
export async function captureFilesIn(dir: string): Promise<CaptureFileEntry[]> {
  const out: CaptureFileEntry[] = [];
  for (const name of (await readdir(dir)).sort()) {
    if (!FILE_NAME.test(name)) continue;
    const path = join(dir, name);
    const st = await lstat(path, { bigint: true }).catch(() => undefined);
    // A file with no more than its header holds no packet yet (tcpdump has just started): not listed.
    if (st?.isFile() && st.size > BigInt(GLOBAL_HEADER_LENGTH)) out.push({ name, path, st });
  }
  return out;
}

export class CaptureStore {
  constructor(
    readonly root: string,
    /** The files the agent's tcpdumps are writing right now. */
    readonly writing: WritingFiles = NOTHING_WRITTEN,
  ) {}

  /** The directory of a capture; throws on names Kubernetes would never allow. */
  captureDir(namespace: string, name: string): string {
    if (!NAMESPACE.test(namespace) || namespace.length > 63) throw new Error(`invalid namespace "${namespace}"`);
    if (!CAPTURE.test(name) || name.length > 253) throw new Error(`invalid capture name "${name}"`);
    return join(this.root, namespace, name);
  }

  /** The capture directory if it exists as a real directory inside the root. */
  private async existingDir(namespace: string, name: string): Promise<string | undefined> {
    const dir = this.captureDir(namespace, name);
    for (const d of [join(this.root, namespace), dir]) {
      const st = await lstat(d).catch(() => undefined);
      if (!st?.isDirectory()) return undefined;
    }
    const [realRoot, realDir] = await Promise.all([realpath(this.root), realpath(dir)]);
    if (!realDir.startsWith(realRoot + sep)) return undefined;
    return dir;
  }

  /**
   * The capture directory if it exists as a real directory inside the root (for pins, which
   * link its files: file-pins.ts).
   */
  async directory(namespace: string, name: string): Promise<string | undefined> {
    return await this.existingDir(namespace, name);
  }

  /**
   * Bytes of the file that may be served: all of a rotated file (written whole, never
   * touched again); of one being written, its committed records; of any other, its complete
   * records (a crash may have left a torn one). `path` may be another link to the inode.
   */
  async servableLength(dir: string, path: string, file: string, st: { ino: bigint; size: bigint }): Promise<number> {
    if (isRotatedName(file)) return Number(st.size);
    return (await this.writing.committedLength(dir, st.ino)) ?? (await completePrefixLength(path));
  }

  /**
   * A file's identity (file-identity.ts), and its generation when it is (or was) a file being
   * written: a rotation moves that file's content, keeping its inode (tcpdump-files.ts).
   */
  async identityOf(dir: string, path: string, st: BigIntStats, source: FileSource | undefined, handle?: FileHandle): Promise<string> {
    const base = handle ? await fileIdentity(st, handle) : await fileIdentityAt(path, st);
    const generation = this.writing.generationOf(dir, st.ino) ?? source?.firstRecord;
    return generation ? `${base}-n${generation.toString(16)}` : base;
  }

  async list(namespace: string, name: string): Promise<StoredFile[]> {
    const dir = await this.existingDir(namespace, name);
    if (!dir) return [];
    const out: StoredFile[] = [];
    for (const { name: file, path, st } of await captureFilesIn(dir)) {
      const found = await Promise.all([this.servableLength(dir, path, file, st), readSource(dir, st)]).catch(() => undefined);
      const identity = found && (await this.identityOf(dir, path, st, found[1]).catch(() => undefined));
      if (found === undefined || identity === undefined) continue; // deleted by rotation while we looked
      out.push({ name: file, size: found[0], modified: st.mtime.toISOString(), identity, ...(found[1] ? { source: found[1] } : {}) });
    }
    return out;
  }

  /** Names of the capture's files on this node, sorted (what status.files[].fileNames lists). */
  async fileNames(namespace: string, name: string): Promise<string[]> {
    const dir = await this.existingDir(namespace, name);
    if (!dir) return [];
    return (await captureFilesIn(dir)).map((e) => e.name);
  }

  /** The file, opened for reading, or undefined when it is not a servable file of this capture. */
  async openFile(namespace: string, name: string, file: string): Promise<OpenedFile | undefined> {
    if (!FILE_NAME.test(file)) return undefined;
    const dir = await this.existingDir(namespace, name);
    if (!dir || !(await readdir(dir)).includes(file)) return undefined;
    const path = join(dir, file);
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    try {
      const st = await handle.stat({ bigint: true });
      if (!st.isFile()) throw new Error('not a regular file');
      if (this.writing.isWriting(dir, st.ino)) {
        await handle.close();
        return await this.writing.steady(dir, () => this.openCopy(dir, path));
      }
      const size = await this.servableLength(dirname(path), path, file, st);
      return { handle, size: Math.min(size, Number(st.size)), modified: st.mtime, identity: await this.identityOf(dir, path, st, await readSource(dir, st), handle) };
    } catch {
      await handle.close().catch(() => undefined);
      return undefined;
    }
  }

  /**
   * A file being written, served from a copy of its committed records made with no rotation
   * under way: a rotation moves its content while it is served otherwise (tcpdump-files.ts).
   * The copy is unlinked as soon as it is open; its identity is the file's.
   */
  private async openCopy(dir: string, path: string): Promise<OpenedFile | undefined> {
    const st = await lstat(path, { bigint: true });
    const [size, identity] = [await this.servableLength(dir, path, '', st), await this.identityOf(dir, path, st, await readSource(dir, st))];
    // Not a capture file's name: never listed or served by name.
    const copy = join(dir, `.serving-${randomBytes(8).toString('hex')}`);
    await copyFile(path, copy);
    let handle: FileHandle;
    try {
      handle = await open(copy, constants.O_RDONLY | constants.O_NOFOLLOW);
    } finally {
      await unlink(copy).catch(() => undefined);
    }
    const copied = await handle.stat();
    return { handle, size: Math.min(size, copied.size), modified: st.mtime, identity };
  }

  /**
   * Deletes every file of the capture on this node but those named in `keep` (the capture's
   * own state, when only its files are deleted); returns the pcap file names removed.
   */
  async removeAll(namespace: string, name: string, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
    const dir = await this.existingDir(namespace, name);
    if (!dir) return [];
    const removed: string[] = [];
    for (const file of (await readdir(dir)).sort()) {
      if (keep.has(file)) continue;
      const path = join(dir, file);
      const st = await lstat(path).catch(() => undefined);
      if (!st || st.isDirectory()) continue;
      await unlink(path).catch(() => undefined);
      if (FILE_NAME.test(file)) removed.push(file);
    }
    // The files' sources go with them (their pins keep a copy in pin.json).
    if (!keep.has(SOURCES_DIR)) await removeSources(dir);
    await rmdir(dir).catch(() => undefined);
    await rmdir(join(this.root, namespace)).catch(() => undefined);
    return removed;
  }
}
