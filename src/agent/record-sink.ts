// Where tcpdump's output goes (docs/agent.md, "Capture workers"): read from its channel into
// the record arena, claimed against the capture's limits, written to the rotating files in
// batches, with back-pressure on the channel when the arena or the node's buffer budget is
// full. One sink per tcpdump run; the files outlive it.
//
// Records are written in batches: one disk write per ~100 ms or 256 KiB, not one per packet,
// so the agent keeps up with what tcpdump alone could write. Disk writes go through the
// node's disk gate, and the last ones after tcpdump ended get a deadline: a hung disk holds
// this sink alone.
import { Socket } from 'node:net';
import { RecordArena } from './record-arena.js';
import { withDeadline } from './deadline.js';
import type { DiskGate } from './disk-gate.js';
import type { BufferBudget } from './node-budget.js';
import { DiskFullError, type RotatingPcapFile } from './rotating-pcap.js';
import type { CaptureTally } from './capture-tally.js';

/** Gathered records are written once there are this many bytes... */
const FLUSH_BYTES = 256 * 1024;
/** ...or once the oldest has waited this long (what "readable at any moment" costs). */
const FLUSH_MS = 100;
/** One read of tcpdump's output: the arena pauses the channel below this much room. */
const READ_BYTES = 128 * 1024;

export interface RecordSinkOptions {
  file: RotatingPcapFile;
  gate: DiskGate;
  buffers: BufferBudget;
  /** The capture's count on this node and its limits: every batch is claimed there first. */
  tally?: CaptureTally;
  /** The last writes after the channel ended get this long. */
  finalFlushMs?: number;
}

/** What the sink tells its worker. */
export interface RecordSinkHooks {
  /** Bytes read from the channel. */
  received(bytes: number): void;
  /** Records reached the file. */
  written(records: number, bytes: number): void;
  /** The capture's limits cut a batch. */
  limited(): void;
  /**
   * Something went wrong: `stop` (the disk is full: end tcpdump gently, the files are
   * whole), `kill` (the stream or a write failed: end it now and start again), or `note`
   * (say so in the status, capture goes on).
   */
  failed(message: string, action: 'stop' | 'kill' | 'note'): void;
  /** The channel is closed: its fd number is no longer this sink's. */
  closed(): void;
}

export class RecordSink {
  /** The disk filled up: nothing more is written by this sink. */
  diskFull = false;
  private readonly arena = new RecordArena();
  private readonly output: Socket;
  private readonly unsubscribe: () => void;
  private readonly ageTimer: NodeJS.Timeout;
  private writing = Promise.resolve();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing = false;
  private paused = false;
  /** Bytes taken from the node's buffer budget and not given back yet. */
  private held = 0;

  constructor(fd: number, private readonly opts: RecordSinkOptions, private readonly hooks: RecordSinkHooks) {
    const arena = this.arena;
    const readBuffer = Buffer.allocUnsafeSlow(READ_BYTES);
    this.output = new Socket({
      fd,
      readable: true,
      writable: false,
      onread: {
        buffer: readBuffer,
        callback: (n: number, buf: Buffer): boolean => {
          try {
            arena.push(buf.subarray(0, n));
          } catch (err) {
            hooks.failed((err as Error).message, 'kill');
            return false;
          }
          opts.buffers.take(n);
          this.held += n;
          hooks.received(n);
          if (arena.wholeBytes >= FLUSH_BYTES) this.flush();
          else if (arena.wholeRecords > 0) this.flushTimer ??= setTimeout(() => this.flush(), FLUSH_MS);
          // Back-pressure: with no room for another read, or past the node's buffer limit,
          // the channel is not read; tcpdump waits and the kernel counts what it drops.
          this.paused = arena.room < READ_BYTES || opts.buffers.exhausted;
          if (this.paused) this.flush();
          return !this.paused;
        },
      },
    });
    this.output.on('error', () => undefined);
    this.output.once('close', () => hooks.closed());
    this.unsubscribe = opts.buffers.onAvailable(() => this.resumeIfRoom());
    this.ageTimer = setInterval(() => {
      this.writing = this.writing.then(async () => {
        await opts.gate.run(() => opts.file.rotateIfOld()).catch((err: unknown) => {
          hooks.failed(`rotating ${opts.file.currentPath}: ${(err as Error).message}`, 'note');
        });
      });
    }, 1000);
  }

  /**
   * Once tcpdump is gone: waits for the channel to end (cut after a second: something may
   * have inherited it), writes everything whole that was read, within the final deadline,
   * and gives back the node's buffer budget. False when the last writes hang.
   */
  async close(): Promise<boolean> {
    clearInterval(this.ageTimer);
    const output = this.output;
    await withDeadline(new Promise<void>((r) => (output.readableEnded || output.destroyed ? r() : output.once('close', () => r()))), 1000, 'the channel to close').catch(() => undefined);
    output.destroy();
    const drained = await withDeadline((async () => {
      while (this.arena.wholeRecords > 0 || this.flushing) {
        this.flush();
        await this.writing;
      }
      await this.writing;
    })(), this.opts.finalFlushMs ?? 5000, 'the last writes').then(() => true, () => false);
    // Whatever was read and is not on disk (a record tcpdump was cut in, or a hung write).
    this.opts.buffers.give(this.held);
    this.held = 0;
    this.unsubscribe();
    return drained;
  }

  private resumeIfRoom(): void {
    if (this.paused && this.arena.room >= READ_BYTES && !this.opts.buffers.exhausted) {
      this.paused = false;
      this.output.resume();
    }
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.flushing) return;
    const batch = this.arena.take();
    if (!batch) return;
    this.flushing = true;
    const { file, gate, tally, buffers } = this.opts;
    const arena = this.arena;
    this.writing = this.writing.then(async () => {
      try {
        if (this.diskFull) return;
        let { bytes, records } = batch;
        if (tally) {
          // The capture's limits (spec.maxPackets, spec.maxBytes) cut the batch; what
          // does not fit is dropped here, and the controller finishes the capture.
          const claimed = await tally.claim(bytes, records, arena.header!.littleEndian);
          if (claimed.records < records) this.hooks.limited();
          bytes = bytes.subarray(0, claimed.bytes);
          records = claimed.records;
        }
        if (records === 0) return;
        await gate.run(() => file.append(arena.headerBytes!, bytes, records));
        this.hooks.written(records, bytes.length);
      } catch (err) {
        if (err instanceof DiskFullError) {
          this.diskFull = true;
          this.hooks.failed(`${err.message}: capture stopped on this interface`, 'stop');
        } else {
          this.hooks.failed(`writing ${file.currentPath}: ${(err as Error).message}`, 'kill');
        }
      } finally {
        buffers.give(batch.bytes.length);
        this.held -= batch.bytes.length;
        this.flushing = false;
        if (arena.wholeBytes >= FLUSH_BYTES || (this.paused && arena.wholeRecords > 0)) this.flush();
        else if (arena.wholeRecords > 0) this.flushTimer ??= setTimeout(() => this.flush(), FLUSH_MS);
        this.resumeIfRoom();
      }
    });
  }
}
