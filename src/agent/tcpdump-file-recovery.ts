// What a file of tcpdump's needs after a crash or a kill (tcpdump-files.ts): its torn last
// record cut away, and the records an interrupted rotation left in two places taken out of
// the file being written; and the reads that rotation and recovery share.
import { open, readdir, rename, truncate, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { GLOBAL_HEADER_LENGTH } from '../pcap/format.js';
import { completePrefixLength } from '../pcap/records.js';

/** A torn last record (tcpdump killed mid-buffer) is cut away. */
export async function makeWhole(path: string): Promise<void> {
  const good = await completePrefixLength(path);
  const fh = await open(path, 'r');
  try {
    if (good < (await fh.stat()).size) await truncate(path, good);
  } finally {
    await fh.close();
  }
}

/**
 * An agent that died in a rotation between the copy's rename and the move of the rest left
 * the rotated records in both files: the file being written still begins with the newest
 * rotated file's records. They are removed from it (tcpdump is gone: a plain rewrite).
 */
export async function dropRotatedPrefix(currentPath: string, newest: string | undefined, dir: string, base: string): Promise<void> {
  if (!newest) return;
  const [rotated, current] = await Promise.all([open(join(dir, newest), 'r'), open(currentPath, 'r')]);
  try {
    const [rs, cs] = [(await rotated.stat()).size, (await current.stat()).size];
    if (rs <= GLOBAL_HEADER_LENGTH || cs < rs) return;
    const n = Math.min(rs, GLOBAL_HEADER_LENGTH + 65_536);
    const [a, b] = [Buffer.alloc(n), Buffer.alloc(n)];
    await Promise.all([readFully(rotated, a, 0), readFully(current, b, 0)]);
    if (!a.equals(b)) return;
    const rest = join(dir, `.rest-${base}.pcap`);
    const out = await open(rest, 'w', 0o600);
    try {
      await out.write(a, 0, GLOBAL_HEADER_LENGTH);
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (let pos = rs; pos < cs;) {
        const { bytesRead } = await current.read(buf, 0, Math.min(buf.length, cs - pos), pos);
        if (bytesRead === 0) break;
        await out.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
    } finally {
      await out.close();
    }
    await rename(rest, currentPath);
  } finally {
    await Promise.all([rotated.close(), current.close()]);
  }
}

/** The rotated files of writer `base` in `dir`, oldest first. */
export async function rotatedFiles(dir: string, base: string): Promise<string[]> {
  const pattern = new RegExp(`^${escapeRegExp(base)}-(\\d+)\\.pcap$`);
  return (await readdir(dir))
    .map((f) => ({ f, m: pattern.exec(f) }))
    .filter((x): x is { f: string; m: RegExpExecArray } => x.m !== null)
    .sort((a, b) => (BigInt(a.m[1]!) < BigInt(b.m[1]!) ? -1 : 1))
    .map((x) => x.f);
}

/** Fills `buf` from `position`; a file shorter than that is an error. */
export async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let off = 0; off < buf.length;) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) throw new Error('the file ended before the bytes it was to hold');
    off += bytesRead;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
