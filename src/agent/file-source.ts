// Where a capture file's packets come from (docs/pcapng.md, "File sources"): the node, the
// pod (name, uid, IPs), the interface, the link type and snap length, recorded by the agent
// when it starts the file. The merged pcapng names every pod from these, and the gateway has
// no pod permissions; and a pod's IP may have changed since the file was written, so what
// was true then is kept with the file, not looked up later.
//
// Kept beside the files as `.sources/<inode>.json`: an inode stays with its file through
// rotation's rename (and in a download's pin, whose pin.json copies the source). A file
// written over a reused inode writes its own source over the old one; where the filesystem
// keeps birth times, a source whose birth time is not the file's is ignored.
import { type BigIntStats } from 'node:fs';
import { mkdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileSource } from '../contract/agent-api.js';

export const SOURCES_DIR = '.sources';
/** What a file's source record takes on disk (a block): reserved with the file (node-budget.ts). */
export const SOURCE_RECORD_BYTES = 4096;

export type { FileSource };

interface Stored extends FileSource {
  /** Birth time of the file, nanoseconds (0: the filesystem keeps none). */
  birthNs: string;
}

function sourcePath(dir: string, ino: bigint): string {
  return join(dir, SOURCES_DIR, `${ino.toString(16)}.json`);
}

/** Records the source of the file with this inode and birth time, replacing any older one. */
export async function writeSource(dir: string, ino: bigint, birthNs: bigint, source: FileSource): Promise<void> {
  await mkdir(join(dir, SOURCES_DIR), { recursive: true, mode: 0o700 });
  const path = sourcePath(dir, ino);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify({ ...source, birthNs: birthNs.toString() } satisfies Stored), { mode: 0o600 });
  await rename(tmp, path);
}

/** The source of the file whose lstat is `st`, if recorded (and not an older file's under a reused inode). */
export async function readSource(dir: string, st: BigIntStats): Promise<FileSource | undefined> {
  try {
    const { birthNs, ...source } = JSON.parse(await readFile(sourcePath(dir, st.ino), 'utf8')) as Stored;
    if (st.birthtimeNs > 0n && birthNs !== st.birthtimeNs.toString()) return undefined;
    return source;
  } catch {
    return undefined;
  }
}

/** Forgets the source of a file that was deleted. */
export async function removeSource(dir: string, ino: bigint): Promise<void> {
  await unlink(sourcePath(dir, ino)).catch(() => undefined);
}

/** Forgets every source of the directory (all its files were deleted). */
export async function removeSources(dir: string): Promise<void> {
  await rm(join(dir, SOURCES_DIR), { recursive: true, force: true });
}
