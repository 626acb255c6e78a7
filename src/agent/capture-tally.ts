// What one capture has written on this node, over all its workers, restarts and deleted
// files, and its limits (spec.maxPackets, spec.maxBytes: docs/agent.md, "Capture limits").
//
// While tcpdumps write, the count is theirs (tcpdump's own packet count, the files' sizes), a
// little behind the files, and it may pass a limit by what they wrote before they were
// stopped. Once none of the capture's tcpdumps runs, the files are counted record by record and
// cut to the limits (limit-trim.ts), so they hold exactly what was allowed. That count is kept
// in `<captureDir>/<ns>/<name>/.tally.json`, with the records of files that are no longer
// there (pruned by rotation, deleted through the API), so a count outlives its files and the
// agent: after a crash the files are counted again, and cut again if they went past.
import { randomBytes } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RECORD_HEADER_LENGTH } from '../pcap/format.js';
import { DiskFullError } from './disk-full.js';
import { countAndTrim, type CaptureLimits } from './limit-trim.js';
import type { RotationGate } from './rotation-gate.js';

export const TALLY_FILE = '.tally.json';

export type { CaptureLimits } from './limit-trim.js';

export type LimitName = 'maxPackets' | 'maxBytes';

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
  /** Records of files no longer on disk. */
  gone?: { packets: number; bytes: number };
}

export class CaptureTally implements Written {
  /** Records and record bytes (16-byte header + captured bytes) written. */
  packets: number;
  bytes: number;
  bytesRefusedAt: number | undefined;
  private limits: CaptureLimits = {};
  /** Records of files no longer on disk: counted, never counted again from the files. */
  private gone: { packets: number; bytes: number };
  /** The last write of the file, queued behind the one before. */
  private written: Promise<void> = Promise.resolve();
  /** Written to since the files were last counted (and after a load: a crash may have left more). */
  private dirty = true;

  private constructor(private readonly dir: string, private readonly uid: string, start: Written, gone: { packets: number; bytes: number }) {
    this.packets = start.packets;
    this.bytes = start.bytes;
    this.bytesRefusedAt = start.bytesRefusedAt;
    this.gone = gone;
  }

  /** The tally of capture `uid` in `dir`; a file of another capture (or none, or garbage) is a fresh start. */
  static async load(dir: string, uid: string): Promise<CaptureTally> {
    let start: Written = { packets: 0, bytes: 0 };
    let gone = { packets: 0, bytes: 0 };
    try {
      const p = JSON.parse(await readFile(join(dir, TALLY_FILE), 'utf8')) as Partial<Persisted>;
      if (p.uid === uid && isCount(p.packets) && isCount(p.bytes)) {
        start = { packets: p.packets, bytes: p.bytes, ...(isCount(p.bytesRefusedAt) ? { bytesRefusedAt: p.bytesRefusedAt } : {}) };
        if (isCount(p.gone?.packets) && isCount(p.gone?.bytes)) gone = { packets: p.gone.packets, bytes: p.gone.bytes };
      }
    } catch {
      // absent or unreadable: nothing counted yet
    }
    return new CaptureTally(dir, uid, start, gone);
  }

  setLimits(limits: CaptureLimits): void {
    this.limits = limits;
  }

  /** Only a limited capture's count must outlive its files: without limits no file is written. */
  get limited(): boolean {
    return this.limits.maxPackets !== undefined || this.limits.maxBytes !== undefined;
  }

  /** The limit this node has reached, if any. */
  reached(): LimitName | undefined {
    return limitReached(this.limits, this);
  }

  /** The tcpdumps wrote this much more (their own count); returns the limit now reached, if any. */
  add(packets: number, bytes: number): LimitName | undefined {
    this.dirty = true;
    this.packets += packets;
    this.bytes += bytes;
    return this.reached();
  }

  /**
   * Files holding these records are about to be deleted (rotation's prune of a limited
   * capture): they stay counted. On disk before the caller deletes them.
   */
  async forget(packets: number, bytes: number): Promise<void> {
    this.gone = { packets: this.gone.packets + packets, bytes: this.gone.bytes + bytes };
    if (this.limited) await this.persist();
  }

  /** Every file of the capture is about to be deleted (through the API; no tcpdump runs): all it counted stays counted. */
  async forgetAll(): Promise<void> {
    this.gone = { packets: this.packets, bytes: this.bytes };
    if (this.limited) await this.persist();
  }

  /**
   * No tcpdump of the capture runs: its files are counted record by record and cut to the
   * limits, and that count is kept; true when it differs from the count before. Without
   * limits nothing is read or written.
   */
  async settle(gate?: RotationGate): Promise<boolean> {
    if (!this.limited || !this.dirty) return false;
    const was = [this.packets, this.bytes];
    const counted = await countAndTrim(this.dir, this.limits, this.gone, gate);
    this.dirty = false;
    this.packets = counted.packets;
    this.bytes = counted.bytes;
    // A record cut for its bytes ends the capture at this maxBytes, even if smaller packets
    // would still fit: "reached" must not come and go with packet sizes.
    if (counted.bytesRefused && this.limits.maxBytes !== undefined && this.limits.maxBytes > (this.bytesRefusedAt ?? -1)) this.bytesRefusedAt = this.limits.maxBytes;
    await this.persist();
    return was[0] !== this.packets || was[1] !== this.bytes;
  }

  /** Writes are serialized, each a whole file renamed into place: never a torn tally. */
  private persist(): Promise<void> {
    const body = JSON.stringify({ uid: this.uid, packets: this.packets, bytes: this.bytes, gone: this.gone, ...(this.bytesRefusedAt !== undefined ? { bytesRefusedAt: this.bytesRefusedAt } : {}) } satisfies Persisted);
    const path = join(this.dir, TALLY_FILE);
    const next = this.written.catch(() => undefined).then(async () => {
      const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
        await rename(tmp, path);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOSPC' || code === 'EDQUOT') throw new DiskFullError(path);
        throw err;
      }
    });
    this.written = next;
    return next;
  }
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
