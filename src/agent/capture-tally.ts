// What one capture has written on this node, over all its workers, restarts and deleted
// files, and its limits (spec.maxPackets, spec.maxBytes: docs/agent.md, "Capture limits").
//
// The limits are enforced here, before bytes reach the disk: a batch of records is cut at the
// last record within the limit, so a capture never writes more than it was allowed, however
// many pods it has on the node. The count is kept in `<captureDir>/<ns>/<name>/.tally.json`,
// written ahead of the records it counts (a reservation a little beyond what is claimed), so
// an agent that crashes comes back with at least as much counted as it wrote: it may stop a
// little early after a crash, never late; a graceful stop writes the exact count.
import { randomBytes } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RECORD_HEADER_LENGTH } from '../pcap/format.js';
import { wholeRecords } from '../pcap/records.js';
import { DiskFullError } from './rotating-pcap.js';

export const TALLY_FILE = '.tally.json';

export interface CaptureLimits {
  maxPackets?: number;
  maxBytes?: number;
}

export type LimitName = 'maxPackets' | 'maxBytes';

/** With a limit, by 1/64 of it: what a crash may cost, and how many writes a capture makes. */
const CHUNKS_PER_LIMIT = 64;

export interface Written {
  packets: number;
  bytes: number;
  /** The largest maxBytes a record was refused under: that limit is reached even if a smaller record would fit. */
  bytesRefusedAt?: number;
}

/** The limit `written` has reached, if any. */
export function limitReached(limits: CaptureLimits, written: Written): LimitName | undefined {
  if (limits.maxPackets !== undefined && written.packets >= limits.maxPackets) return 'maxPackets';
  if (limits.maxBytes !== undefined) {
    // The smallest record is its header: below that, nothing fits any more.
    if (written.bytes + RECORD_HEADER_LENGTH > limits.maxBytes) return 'maxBytes';
    if (written.bytesRefusedAt !== undefined && limits.maxBytes <= written.bytesRefusedAt) return 'maxBytes';
  }
  return undefined;
}

interface Persisted extends Written {
  uid: string;
}

export class CaptureTally implements Written {
  /** Records and record bytes (16-byte header + captured bytes) claimed for writing. */
  packets: number;
  bytes: number;
  bytesRefusedAt: number | undefined;
  private limits: CaptureLimits = {};
  /** What the file says; always >= what is claimed. */
  private reserved: { packets: number; bytes: number };
  /** The last write of the file: queued behind the one before, and awaited by claims it covers. */
  private written: Promise<void> = Promise.resolve();

  private constructor(private readonly path: string, private readonly uid: string, start: Written) {
    this.packets = start.packets;
    this.bytes = start.bytes;
    this.bytesRefusedAt = start.bytesRefusedAt;
    this.reserved = { packets: start.packets, bytes: start.bytes };
  }

  /** The tally of capture `uid` in `dir`; a file of another capture (or none, or garbage) is a fresh start. */
  static async load(dir: string, uid: string): Promise<CaptureTally> {
    const path = join(dir, TALLY_FILE);
    let start: Written = { packets: 0, bytes: 0 };
    try {
      const p = JSON.parse(await readFile(path, 'utf8')) as Partial<Persisted>;
      if (p.uid === uid && isCount(p.packets) && isCount(p.bytes)) {
        start = { packets: p.packets, bytes: p.bytes, ...(isCount(p.bytesRefusedAt) ? { bytesRefusedAt: p.bytesRefusedAt } : {}) };
      }
    } catch {
      // absent or unreadable: nothing counted yet
    }
    return new CaptureTally(path, uid, start);
  }

  setLimits(limits: CaptureLimits): void {
    this.limits = limits;
  }

  /** Only a limited capture's count must survive a restart: without limits no file is written. */
  private get limited(): boolean {
    return this.limits.maxPackets !== undefined || this.limits.maxBytes !== undefined;
  }

  /** The limit this node has reached, if any. */
  reached(): LimitName | undefined {
    return limitReached(this.limits, this);
  }

  /**
   * Claims the longest prefix of `block` (whole records, `records` of them) that the limits
   * allow, and returns its length in bytes; the claim is on disk (reserved) before this
   * resolves, so the caller may write it. Synchronous up to the reservation, so that workers
   * of one capture writing at once never claim the same room.
   */
  async claim(block: Buffer, records: number, littleEndian: boolean): Promise<{ bytes: number; records: number }> {
    const roomPackets = this.limits.maxPackets === undefined ? Infinity : Math.max(0, this.limits.maxPackets - this.packets);
    const roomBytes = this.limits.maxBytes === undefined ? Infinity : Math.max(0, this.limits.maxBytes - this.bytes);
    let taken = { bytes: block.length, records };
    if (this.reached()) {
      taken = { bytes: 0, records: 0 };
    } else if (records > roomPackets || block.length > roomBytes) {
      const run = wholeRecords(block, 0, Math.min(block.length, roomBytes), littleEndian, roomPackets);
      taken = { bytes: run.bytes, records: run.records };
    }
    this.packets += taken.records;
    this.bytes += taken.bytes;
    // A record refused for its bytes (not for the packet count) ends the capture at this
    // maxBytes, even if smaller packets would still fit: "reached" must not come and go.
    const refusedForBytes = taken.records < records && (this.limits.maxPackets === undefined || this.packets < this.limits.maxPackets);
    if (refusedForBytes && this.limits.maxBytes !== undefined && this.limits.maxBytes > (this.bytesRefusedAt ?? -1)) {
      this.bytesRefusedAt = this.limits.maxBytes;
      this.reserved = { packets: -1, bytes: -1 }; // written now, not at the next reservation
    }
    // Only a limited count is a bound that must be on disk first; the other rides along.
    const behind = (this.limits.maxPackets !== undefined && this.packets > this.reserved.packets) || (this.limits.maxBytes !== undefined && this.bytes > this.reserved.bytes);
    if (!this.limited) {
      this.reserved = { packets: this.packets, bytes: this.bytes };
    } else if (behind) {
      this.reserved = {
        packets: this.limits.maxPackets === undefined ? this.packets : Math.max(this.reserved.packets, ahead(this.packets, this.limits.maxPackets)),
        bytes: this.limits.maxBytes === undefined ? this.bytes : Math.max(this.reserved.bytes, ahead(this.bytes, this.limits.maxBytes)),
      };
      try {
        await this.persist(this.reserved);
      } catch (err) {
        // Not on disk: the next claim must write again (the claimed count stays, on the safe side).
        this.reserved = { packets: -1, bytes: -1 };
        throw err;
      }
    } else {
      // Covered by a reservation already made, maybe still being written.
      await this.written;
    }
    return taken;
  }

  /** Writes the exact count (no reservation): all workers of the capture have stopped. */
  async settle(): Promise<void> {
    if (!this.limited) return;
    if (this.reserved.packets === this.packets && this.reserved.bytes === this.bytes) return;
    this.reserved = { packets: this.packets, bytes: this.bytes };
    await this.persist(this.reserved);
  }

  /** Writes are serialized, each a whole file renamed into place: never a torn tally. */
  private persist(counts: { packets: number; bytes: number }): Promise<void> {
    const body = JSON.stringify({ uid: this.uid, packets: counts.packets, bytes: counts.bytes, ...(this.bytesRefusedAt !== undefined ? { bytesRefusedAt: this.bytesRefusedAt } : {}) } satisfies Persisted);
    const next = this.written.catch(() => undefined).then(async () => {
      const tmp = `${this.path}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
        await rename(tmp, this.path);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        // A full disk is the worker's disk-full stop, as when its records do not fit.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOSPC' || code === 'EDQUOT') throw new DiskFullError(this.path);
        throw err;
      }
    });
    this.written = next;
    return next;
  }
}

/** What to reserve beyond `claimed`: a chunk ahead, never past the limit. */
function ahead(claimed: number, limit: number): number {
  return Math.max(claimed, Math.min(limit, claimed + Math.max(1, Math.ceil(limit / CHUNKS_PER_LIMIT))));
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
