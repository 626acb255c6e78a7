// One tcpdump on one pod interface, writing its own file (docs/agent.md, "Capture workers").
// The worker is the lifecycle around two parts: the tcpdump process (tcpdump-process.ts:
// flags, signals, stderr) and its files (tcpdump-files.ts: the file it writes, rotated by copy
// under the file layout's names, pruned). A tcpdump that dies is restarted with back-off;
// what it left is made whole before the next one starts.
//
// Nothing here may wedge the agent: every failure in the loop becomes the worker's `error`
// (never an unhandled rejection), stopping is SIGINT then SIGKILL of tcpdump's process group
// after a deadline, waiting on the process's exit rather than on pipes, and file work goes
// through the disk gate with a deadline at the end, so a hung disk holds this worker alone.
import { EventEmitter } from 'node:events';
import { statfs } from 'node:fs/promises';
import { DiskFullError } from './disk-full.js';
import { DeadlineExceeded, withDeadline } from './deadline.js';
import type { DiskGate } from './disk-gate.js';
import { TcpdumpFiles, type Numbering, type RotationPolicy } from './tcpdump-files.js';
import type { RotationGate } from './rotation-gate.js';
import { removeSource, writeSource, type FileSource } from './file-source.js';
import { GLOBAL_HEADER_LENGTH } from '../pcap/format.js';
import { STDIO_BUFFER_BYTES, TcpdumpProcess, type TcpdumpCounts, type TcpdumpOptions } from './tcpdump-process.js';

export { TCPDUMP_CAPABILITIES } from './tcpdump-process.js';

export interface WorkerSpec {
  /** namespace/name of the capture. */
  capture: string;
  pod: string;
  iface: string;
  bpf: string;
  /** tcpdump's -s (bytes kept per packet); undefined: the whole packet. */
  snapLen: number | undefined;
  dir: string;
  /** Where the packets come from, recorded with every file this worker starts (file-source.ts). */
  origin: Omit<FileSource, 'iface' | 'linkType' | 'snapLen' | 'tsresol'>;
}

export interface WorkerStats {
  packets: number;
  bytes: number;
  kernelDrops: number;
  firstPacketAt: number | undefined;
  restarts: number;
  /** Set while tcpdump keeps failing, and for good once the worker gave up (disk full). */
  error: string | undefined;
}

/** tcpdump's options and the worker's own. */
export interface WorkerOptions extends TcpdumpOptions {
  policy: RotationPolicy;
  /** File work (recovery, adoption) in libuv's thread pool at once (disk-gate.ts). */
  gate: DiskGate;
  /** SIGINT, then SIGKILL after this long. */
  stopGraceMs?: number;
  /** The last file work after tcpdump ended gets this long. */
  finalFlushMs?: number;
  onPackets?: (packets: number, bytes: number) => void;
  onRotate?: () => void;
  /** A rotated file is about to be deleted beyond maxFiles (the capture's limits count its records first). */
  onPrune?: (path: string) => Promise<void>;
  /** Held by pins of the capture's directory (rotation-gate.ts). */
  rotationGate?: RotationGate;
}

/** How often the file is looked at: rotated when due, its size counted. */
const ACCOUNT_MS = 250;
/** Free space below which a capture stops (disk full): two of tcpdump's stdio buffers. */
const DISK_FULL_BYTES = 2 * STDIO_BUFFER_BYTES;
const MAX_BACKOFF_MS = 30_000;

export declare interface CaptureWorker {
  /** Something the status shows changed: first packet, an error, a restart. */
  on(event: 'changed', listener: () => void): this;
  /** tcpdump said the interface does not exist: the pod's interface must be looked up again. */
  on(event: 'interface-gone', listener: () => void): this;
}

export class CaptureWorker extends EventEmitter {
  readonly files: TcpdumpFiles;
  readonly stats: WorkerStats = { packets: 0, bytes: 0, kernelDrops: 0, firstPacketAt: undefined, restarts: 0, error: undefined };
  /**
   * Every packet that reached the kernel before this time (agent's clock, ms) is in the
   * files; 0 until tcpdump has proven it once (tcpdump-process.ts). For the live stream's
   * watermark.
   */
  flushedThrough = 0;
  private tcpdump: TcpdumpProcess | undefined;
  private stopping = false;
  private gaveUp = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Counts of the tcpdumps before the running one. */
  private before = { packets: 0, drops: 0 };
  /** Bytes of records in files no longer written (what was written, deletions or not). */
  private bytesRetired = 0;
  /** Bytes counted at the last look (what tcpdump wrote since is how busy it is). */
  private lastBytes = 0;
  private writtenSinceTick = 0;
  private recovering = false;
  private accounting: Promise<void> | undefined;
  /** The source of the file being written, less its record numbers (from its header). */
  private source: FileSource | undefined;

  constructor(readonly spec: WorkerSpec, private readonly opts: WorkerOptions) {
    super();
    const record = (ino: bigint, birthNs: bigint, n: Numbering): Promise<void> => (this.source ? writeSource(spec.dir, ino, birthNs, { ...this.source, ...n }) : Promise.resolve());
    this.files = new TcpdumpFiles(spec.dir, `${spec.pod}_${spec.iface}`, opts.policy, {
      started: async (ino, birthNs, h, n) => {
        this.source = { ...spec.origin, iface: spec.iface, linkType: h.linktype, snapLen: h.snaplen, tsresol: h.nanoseconds ? 9 : 6 };
        await record(ino, birthNs, n);
      },
      copied: record,
      generation: record,
      retired: (_ino, size) => {
        // What an earlier run left was counted then (or by an earlier agent).
        if (!this.recovering) this.bytesRetired += Math.max(0, size - GLOBAL_HEADER_LENGTH);
      },
      rotated: () => opts.onRotate?.(),
      pruning: async (path) => await opts.onPrune?.(path),
      removed: (ino) => removeSource(spec.dir, ino),
    }, opts.rotationGate);
  }

  /** Still writing (or about to write again) files of its capture. */
  get capturing(): boolean {
    return this.running !== undefined && !this.stopping && !this.gaveUp;
  }

  /** Whether this worker's tcpdump is writing the file with inode `ino` now. */
  isWriting(ino: bigint): boolean {
    return this.running !== undefined && this.files.isCurrent(ino);
  }

  /** The complete-record prefix of the file being written, if it has inode `ino`. */
  async committedLength(ino: bigint): Promise<number | undefined> {
    return this.running !== undefined ? await this.files.committedLength(ino) : undefined;
  }

  /** The generation (its first record number) of the file being written, if it has inode `ino`. */
  generationOf(ino: bigint): number | undefined {
    return this.running !== undefined ? this.files.generationOf(ino) : undefined;
  }

  start(): void {
    this.running ??= this.loop().catch((err: unknown) => {
      // loop() handles its own failures; this is the last line, never an unhandled rejection.
      this.fail(`capture worker failed: ${(err as Error).message}`);
    });
  }

  /** Stops tcpdump (which writes what it holds), takes up its last files, all within deadlines. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.signal('SIGINT');
    // Past the grace period a stopping tcpdump is killed, with its whole group.
    const grace = this.opts.stopGraceMs ?? 3000;
    const kill = setTimeout(() => this.signal('SIGKILL'), grace);
    this.wake?.();
    try {
      // A tcpdump whose write waits on a hung disk cannot die until the disk answers (not
      // even of SIGKILL): it is left behind, recorded for the next agent to end.
      await withDeadline(this.running ?? Promise.resolve(), grace + (this.opts.finalFlushMs ?? 5000), 'stopping tcpdump').catch((err: unknown) => {
        if (!(err instanceof DeadlineExceeded)) throw err;
        this.opts.log.error({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface }, 'stopping tcpdump hangs (is the disk hung?): its writes wait on the disk, and it cannot end, even killed, until the disk answers; left behind');
      });
    } finally {
      clearTimeout(kill);
    }
  }

  private fail(message: string): void {
    this.stats.error = message;
    this.emit('changed');
  }

  private signal(sig: NodeJS.Signals): void {
    this.tcpdump?.signal(sig);
  }

  private async loop(): Promise<void> {
    let backoff = 500;
    let recovered = false;
    while (!this.stopping && !this.gaveUp) {
      const started = Date.now();
      try {
        if (!recovered) {
          this.recovering = true;
          try {
            await this.opts.gate.run(() => this.files.recover());
          } finally {
            this.recovering = false;
          }
          recovered = true;
        }
        await this.runOnce();
        if (this.stopping || this.gaveUp) break;
      } catch (err) {
        // Recovering a leftover file or taking up tcpdump's failed (EIO, EACCES, a file that
        // is not a regular file, ...): this worker's error, retried; never the process's.
        this.fail(`${recovered ? 'capturing' : 'recovering the files of an earlier run'}: ${(err as Error).message}`);
        recovered = false;
      }
      if (this.stopping) break;
      // A run that lasted a while earns a quick restart; repeated failures back off.
      backoff = Date.now() - started > 60_000 ? 500 : Math.min(backoff * 2, MAX_BACKOFF_MS);
      this.stats.restarts++;
      this.opts.log.warn({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface, retryInMs: backoff, error: this.stats.error }, 'capture on interface ended; restarting');
      this.emit('changed');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** One tcpdump, from its start to its end, and its files taken up. */
  private async runOnce(): Promise<void> {
    if (this.stopping) return;
    const logContext = { capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface };
    const output = await this.opts.gate.run(() => this.files.create());
    let tcpdump: TcpdumpProcess;
    try {
      tcpdump = TcpdumpProcess.start({ iface: this.spec.iface, bpf: this.spec.bpf, snapLen: this.spec.snapLen, logContext }, output, this.opts, {
        stopping: () => this.stopping,
        writtenSinceTick: () => {
          const n = this.writtenSinceTick;
          this.writtenSinceTick = 0;
          return n;
        },
        counts: (c) => this.counted(c),
        countsWanted: () => this.stats.bytes > 0 && this.stats.packets === 0,
        flushedThrough: (at) => {
          this.flushedThrough = Math.max(this.flushedThrough, at);
        },
      });
    } catch (err) {
      this.stats.error = (err as Error).message;
      return;
    }
    this.tcpdump = tcpdump;
    const timer = setInterval(() => this.account(), ACCOUNT_MS);
    let exit: { code: number | null; signal: NodeJS.Signals | null };
    try {
      exit = await tcpdump.exited;
    } finally {
      clearInterval(timer);
      this.tcpdump = undefined;
    }
    // What it wrote last is counted (a torn last record cut away) before the run ends, within
    // a deadline: a hung disk must not hold the stop.
    await this.accounting;
    const last = this.opts.gate.run(() => this.takeUp(true));
    await withDeadline(last, this.opts.finalFlushMs ?? 5000, 'counting tcpdump\'s last writes').catch((err: unknown) => {
      if (err instanceof DeadlineExceeded) this.opts.log.error(logContext, 'counting tcpdump\'s last writes hangs (is the disk hung?); left behind');
      else this.stats.error = `capturing: ${(err as Error).message}`;
    });
    this.before = { packets: this.stats.packets, drops: this.stats.kernelDrops };
    this.flushedThrough = 0;
    const end = tcpdump.end(exit);
    if (end.spawnFailure) {
      this.stats.error = end.spawnFailure;
    } else if (!this.stopping && !this.gaveUp) {
      this.stats.error = end.reason;
      if (end.interfaceGone) this.emit('interface-gone');
    }
  }

  /** Every ACCOUNT_MS while tcpdump runs: its file rotated when due, what it wrote counted. */
  private account(): void {
    if (this.accounting) return;
    this.accounting = this.opts.gate.run(() => this.takeUp(false)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
        // A rotation's copy did not fit: the capture stops here, its files whole.
        this.diskFull();
        return;
      }
      this.stats.error = `capturing: ${err.message}`;
      this.signal('SIGKILL');
      this.emit('changed');
    }).finally(() => {
      this.accounting = undefined;
    });
  }

  private async takeUp(ended: boolean): Promise<void> {
    const tcpdump = this.tcpdump;
    // A file tcpdump is done with counts as retired (recover() rotates it without counting it again).
    if (ended) this.bytesRetired += Math.max(0, (await this.files.ended()) - GLOBAL_HEADER_LENGTH);
    else if (!this.stopping && !this.gaveUp) await this.files.tick(async (op) => (tcpdump ? await tcpdump.whileStopped(op) : false));
    const size = await this.files.size();
    const bytes = this.bytesRetired + Math.max(0, (size ?? 0) - GLOBAL_HEADER_LENGTH);
    const grew = bytes > this.lastBytes;
    this.writtenSinceTick += Math.max(0, bytes - this.lastBytes);
    this.lastBytes = bytes;
    this.record(this.stats.packets, bytes);
    if (grew && !ended && !this.gaveUp) await this.checkDisk();
  }

  /**
   * tcpdump does not stop when its writes fail: it goes on, and a write that fits in part
   * leaves part of a buffer in the file, which later writes would bury mid-file. So the
   * worker stops it while a whole buffer still fits; what its last flush could not write is
   * cut away when its files are taken up. The node's disk budget keeps captures from filling
   * the disk themselves; this is for someone else filling it.
   */
  private async checkDisk(): Promise<void> {
    const s = await statfs(this.spec.dir).catch(() => undefined);
    if (!s || s.bavail * s.bsize >= DISK_FULL_BYTES) return;
    this.diskFull();
  }

  private diskFull(): void {
    this.gaveUp = true;
    this.stats.error = new DiskFullError(this.files.currentPath).message;
    this.signal('SIGINT');
    this.emit('changed');
  }

  /** tcpdump's own counts: packets it wrote, drops in the kernel. */
  private counted(c: TcpdumpCounts): void {
    this.stats.kernelDrops = this.before.drops + c.dropped;
    this.record(this.before.packets + c.captured, this.stats.bytes);
  }

  private record(packets: number, bytes: number): void {
    const dp = packets - this.stats.packets;
    const db = bytes - this.stats.bytes;
    if (dp <= 0 && db <= 0) return;
    const first = this.stats.firstPacketAt === undefined;
    this.stats.packets = Math.max(this.stats.packets, packets);
    this.stats.bytes = Math.max(this.stats.bytes, bytes);
    const hadError = this.stats.error !== undefined;
    if (!this.gaveUp) this.stats.error = undefined;
    this.opts.onPackets?.(Math.max(0, dp), Math.max(0, db));
    // Capturing once both say so: a packet counted by tcpdump, and on disk.
    const firstNow = first && this.stats.packets > 0 && this.stats.bytes > 0;
    if (firstNow) this.stats.firstPacketAt = Date.now();
    if (firstNow || hadError) this.emit('changed');
  }
}
