// A capture file's identity (docs/downloads.md, "File identities"): what stays the same for one
// file through rotation's rename and differs between any two files of a node, so that "the
// file listed" and "the file served" can be compared. A name does not do it: rotation gives
// `<pod>_<iface>.pcap` to a new file every few seconds on a busy pod. The inode does, with
// the file's birth time against the inode's reuse after a deletion; on a filesystem that
// keeps no birth time, the first record's timestamp (fixed once written) stands in for it.
import { constants, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { GLOBAL_HEADER_LENGTH, RECORD_HEADER_LENGTH } from '../pcap/format.js';

/** The identity of an open file whose fstat is `st`. */
export async function fileIdentity(st: BigIntStats, handle: FileHandle): Promise<string> {
  return await identityOf(st, () => firstRecordTime(handle));
}

/** The identity of the file at `path`, whose lstat is `st`; opened only when it has no birth time. */
export async function fileIdentityAt(path: string, st: BigIntStats): Promise<string> {
  return await identityOf(st, async () => {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      return await firstRecordTime(handle);
    } finally {
      await handle.close();
    }
  });
}

/** The timestamp of the first record: 8 bytes right after the global header. */
async function firstRecordTime(handle: FileHandle): Promise<Buffer> {
  const ts = Buffer.alloc(8);
  await handle.read(ts, 0, 8, GLOBAL_HEADER_LENGTH);
  return ts;
}

async function identityOf(st: BigIntStats, firstRecordTime: () => Promise<Buffer>): Promise<string> {
  const ino = st.ino.toString(16);
  if (st.birthtimeNs > 0n) return `${ino}-b${st.birthtimeNs.toString(16)}`;
  if (st.size < BigInt(GLOBAL_HEADER_LENGTH + RECORD_HEADER_LENGTH)) return `${ino}-e`;
  return `${ino}-r${(await firstRecordTime()).toString('hex')}`;
}
