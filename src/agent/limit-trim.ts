// A capture's files on this node counted record by record, and cut to its limits (docs/agent.md,
// "Capture limits"). tcpdump writes the files itself, so a limit is seen after the packets
// that reach it are on disk: the workers are stopped, and then what went past the limit is
// cut away here, the records of all the capture's pod interfaces taken in time order, so the
// files hold exactly maxPackets, or the records before the first one that would go past
// maxBytes. The same walk recounts a capture after a crash: the files are the count.
//
// A file a download has pinned (a second link) is not cut in place, which would shorten the
// pinned bytes: its kept records are copied to a new file under its name.
import { constants } from 'node:fs';
import { copyFile, lstat, open, rename, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { GLOBAL_HEADER_LENGTH, parseGlobalHeader } from '../pcap/format.js';
import { visitRecordsOfFile } from '../pcap/records.js';
import { captureFilesIn, parseFileName } from './capture-store.js';
import { readSource, removeSource, writeSource } from './file-source.js';
import type { RotationGate } from './rotation-gate.js';

/** A capture's limits per node (spec.maxPackets, spec.maxBytes): the tally counts towards them, this cuts the files to them. */
export interface CaptureLimits {
  maxPackets?: number;
  maxBytes?: number;
}

export interface CountedFiles {
  packets: number;
  bytes: number;
  /** A record was cut for maxBytes (not for maxPackets): the limit stays reached. */
  bytesRefused: boolean;
}

interface FileRecords {
  path: string;
  ino: bigint;
  links: bigint;
  /** Where each record ends, its time and its bytes (record header included). */
  ends: number[];
  micros: number[];
  sizes: number[];
  /** Records kept (all, unless a limit cuts). */
  keep: number;
}

/**
 * Counts the capture's records in `dir` on top of `before` (records of files no longer
 * there), and cuts what goes past `limits`. The caller holds no worker of the capture: the
 * files do not grow meanwhile.
 */
export async function countAndTrim(dir: string, limits: CaptureLimits, before: { packets: number; bytes: number }, gate?: RotationGate): Promise<CountedFiles> {
  const run = async (): Promise<CountedFiles> => {
    // Each pod interface's files in the order written: rotated ones by their time, then the one being written.
    const byBase = new Map<string, { order: bigint; file: FileRecords }[]>();
    const entries = await captureFilesIn(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return []; // nothing written here yet
      throw err;
    });
    for (const e of entries) {
      const { base, rotatedAt } = parseFileName(e.name);
      const file = await recordsOf(e.path, e.st.ino, e.st.nlink);
      if (!file) continue;
      const list = byBase.get(base) ?? [];
      list.push({ order: rotatedAt ?? BigInt(Number.MAX_SAFE_INTEGER) * 1000n, file });
      byBase.set(base, list);
    }
    const streams = [...byBase.values()].map((l) => l.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0)).map((x) => x.file));
    // Records in time order over all pod interfaces; each interface's own order is kept.
    const at = streams.map(() => ({ file: 0, record: 0 }));
    let packets = before.packets;
    let bytes = before.bytes;
    let bytesRefused = false;
    const maxPackets = limits.maxPackets ?? Infinity;
    const maxBytes = limits.maxBytes ?? Infinity;
    for (;;) {
      let next = -1;
      let nextMicros = Infinity;
      for (let s = 0; s < streams.length; s++) {
        const c = at[s]!;
        while (c.file < streams[s]!.length && c.record >= streams[s]![c.file]!.ends.length) {
          c.file++;
          c.record = 0;
        }
        if (c.file >= streams[s]!.length) continue;
        const m = streams[s]![c.file]!.micros[c.record]!;
        if (m < nextMicros) {
          nextMicros = m;
          next = s;
        }
      }
      if (next < 0) break;
      const c = at[next]!;
      const f = streams[next]![c.file]!;
      const size = f.sizes[c.record]!;
      if (packets >= maxPackets) break;
      if (bytes + size > maxBytes) {
        bytesRefused = packets < maxPackets;
        break;
      }
      packets++;
      bytes += size;
      c.record++;
    }
    // What the walk did not reach goes: the rest of each interface's current file and any later file.
    for (let s = 0; s < streams.length; s++) {
      const c = at[s]!;
      streams[s]!.forEach((f, i) => {
        f.keep = i < c.file ? f.ends.length : i === c.file ? c.record : 0;
      });
      for (const f of streams[s]!) if (f.keep < f.ends.length) await cut(dir, f);
    }
    return { packets, bytes, bytesRefused };
  };
  return gate ? await gate.rotation(dir, run) : await run();
}

async function recordsOf(path: string, ino: bigint, links: bigint): Promise<FileRecords | undefined> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const h = Buffer.alloc(GLOBAL_HEADER_LENGTH);
    const { bytesRead } = await fh.read(h, 0, h.length, 0);
    const header = bytesRead === h.length ? parseGlobalHeader(h) : undefined;
    const file: FileRecords = { path, ino, links, ends: [], micros: [], sizes: [], keep: 0 };
    if (!header) return file;
    const size = (await fh.stat()).size;
    await visitRecordsOfFile(fh, GLOBAL_HEADER_LENGTH, size, header, (end, micros, bytes) => {
      file.ends.push(end);
      file.micros.push(micros);
      file.sizes.push(bytes);
    });
    return file;
  } finally {
    await fh.close();
  }
}

/** Cuts a file to its kept records; a file left with none goes. */
async function cut(dir: string, f: FileRecords): Promise<void> {
  if (f.keep === 0) {
    await unlink(f.path).catch(() => undefined);
    await removeSource(dir, f.ino);
    return;
  }
  const length = f.ends[f.keep - 1]!;
  if (f.links <= 1n) {
    await truncate(f.path, length);
    return;
  }
  // Pinned: the pin keeps its inode and its bytes; the name gets a cut copy, with the source.
  const source = await readSource(dir, await lstat(f.path, { bigint: true }));
  const tmp = join(dir, `.trim-${f.ino.toString(16)}.tmp`);
  await copyFile(f.path, tmp);
  await truncate(tmp, length);
  const st = await lstat(tmp, { bigint: true });
  if (source) await writeSource(dir, st.ino, st.birthtimeNs, source);
  await rename(tmp, f.path);
}
