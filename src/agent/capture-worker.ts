// One tcpdump on one pod interface, its records written whole to rotating files (docs/agent.md,
// "Capture workers"). The worker is the lifecycle around two parts: the tcpdump process
// (tcpdump-process.ts: channel, signals, stderr, pipe) and the record sink (record-sink.ts:
// arena, limits, batched writes, back-pressure). A tcpdump that dies is restarted with
// back-off and its files stay valid.
//
// Nothing here may wedge the agent: every failure in the loop becomes the worker's `error`
// (never an unhandled rejection), stopping is SIGINT then SIGKILL of tcpdump's process group
// after a deadline, waiting on the process's exit rather than on pipes, and disk writes go
// through a gate with a deadline on the final flush, so a hung disk holds this worker alone.
import { EventEmitter } from 'node:events';
import { DeadlineExceeded, withDeadline } from './deadline.js';
import { RotatingPcapFile, type RotationPolicy } from './rotating-pcap.js';
import type { RotationGate } from './rotation-gate.js';
import { removeSource, writeSource, type FileSource } from './file-source.js';
import { parseGlobalHeader } from '../pcap/format.js';
import { RecordSink, type RecordSinkOptions } from './record-sink.js';
import { TcpdumpProcess, type PipeMemo, type TcpdumpOptions } from './tcpdump-process.js';

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

/** tcpdump's options, the sink's (but its file: the worker's), and the worker's own. */
export interface WorkerOptions extends TcpdumpOptions, Omit<RecordSinkOptions, 'file'> {
  policy: RotationPolicy;
  /** SIGINT, then SIGKILL after this long. */
  stopGraceMs?: number;
  onPackets?: (packets: number, bytes: number) => void;
  onRotate?: () => void;
  /** Held by pins of the capture's directory (rotation-gate.ts). */
  rotationGate?: RotationGate;
}

const MAX_BACKOFF_MS = 30_000;

export declare interface CaptureWorker {
  /** Something the status shows changed: first packet, an error, a restart. */
  on(event: 'changed', listener: () => void): this;
  /** tcpdump said the interface does not exist: the pod's interface must be looked up again. */
  on(event: 'interface-gone', listener: () => void): this;
}

export class CaptureWorker extends EventEmitter {
  readonly file: RotatingPcapFile;
  readonly stats: WorkerStats = { packets: 0, bytes: 0, kernelDrops: 0, firstPacketAt: undefined, restarts: 0, error: undefined };
  private tcpdump: TcpdumpProcess | undefined;
  private stopping = false;
  private gaveUp = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private dropsBefore = 0;
  /** Why the kernel (or perl) would not grow this worker's pipe: not asked again. */
  private readonly pipeMemo: PipeMemo = {};

  constructor(readonly spec: WorkerSpec, private readonly opts: WorkerOptions) {
    super();
    this.file = new RotatingPcapFile(spec.dir, `${spec.pod}_${spec.iface}`, opts.policy, () => opts.onRotate?.(), Date.now, opts.rotationGate, {
      opened: async (ino, birthNs, header, firstRecord) => {
        const h = parseGlobalHeader(header);
        if (!h) return;
        await writeSource(spec.dir, ino, birthNs, { ...spec.origin, iface: spec.iface, linkType: h.linktype, snapLen: h.snaplen, tsresol: h.nanoseconds ? 9 : 6, writer: this.file.writerId, firstRecord });
      },
      removed: (ino) => removeSource(spec.dir, ino),
    });
  }

  /** Still writing (or about to write again) files of its capture. */
  get capturing(): boolean {
    return this.running !== undefined && !this.stopping && !this.gaveUp;
  }

  start(): void {
    this.running ??= this.loop().catch((err: unknown) => {
      // loop() handles its own failures; this is the last line, never an unhandled rejection.
      this.fail(`capture worker failed: ${(err as Error).message}`);
    });
  }

  /** Stops tcpdump, writes what it had captured, closes the file, all within deadlines. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.signal('SIGINT');
    // Past the grace period a stopping tcpdump is killed, with its whole group.
    const kill = setTimeout(() => this.signal('SIGKILL'), this.opts.stopGraceMs ?? 3000);
    this.wake?.();
    try {
      await this.running;
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
          await this.opts.gate.run(() => this.file.recover());
          recovered = true;
        }
        const outcome = await this.runOnce();
        if (this.stopping || outcome === 'disk-full') {
          if (outcome === 'disk-full') this.gaveUp = true;
          break;
        }
      } catch (err) {
        // Recovering a leftover file or writing failed (EIO, EACCES, a file that is not a
        // regular file, ...): this worker's error, retried; never the process's.
        this.fail(`${recovered ? 'capturing' : 'recovering the files of an earlier run'}: ${(err as Error).message}`);
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
    await withDeadline(this.opts.gate.run(() => this.file.close()), this.opts.finalFlushMs ?? 5000, 'closing the capture file').catch((err: unknown) => {
      if (err instanceof DeadlineExceeded) this.opts.log.error({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface }, 'closing the capture file hangs (is the disk hung?); left behind');
    });
  }

  /** One tcpdump, from its start to its end, and its records to the files. */
  private async runOnce(): Promise<'ended' | 'disk-full'> {
    if (this.stopping) return 'ended';
    const logContext = { capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface };
    let tcpdump: TcpdumpProcess;
    try {
      tcpdump = await TcpdumpProcess.start({ iface: this.spec.iface, bpf: this.spec.bpf, snapLen: this.spec.snapLen, logContext }, this.opts, this.pipeMemo, {
        stopping: () => this.stopping,
        drops: (n) => {
          this.stats.kernelDrops = this.dropsBefore + n;
        },
      });
    } catch (err) {
      this.stats.error = (err as Error).message;
      return 'ended';
    }
    this.tcpdump = tcpdump;
    const sink = new RecordSink(tcpdump.readFd, { ...this.opts, file: this.file }, {
      received: (n) => tcpdump.received(n),
      written: (records, bytes) => this.count(records, bytes),
      limited: () => this.emit('changed'),
      failed: (message, action) => {
        this.stats.error = message;
        if (action === 'note') return;
        this.signal(action === 'stop' ? 'SIGINT' : 'SIGKILL');
        this.emit('changed');
      },
      closed: () => tcpdump.channelClosed(),
    });
    const exit = await tcpdump.exited;
    this.tcpdump = undefined;
    // Everything tcpdump delivered reaches the file before the run ends, within a deadline:
    // a hung disk must not hold the stop.
    if (!(await sink.close())) this.stats.error = `writing ${this.file.currentPath} hangs (is the disk hung?)`;
    this.dropsBefore = this.stats.kernelDrops;
    const end = tcpdump.end(exit);
    if (end.spawnFailure) {
      this.stats.error = end.spawnFailure;
    } else if (!this.stopping && !sink.diskFull) {
      this.stats.error = end.reason;
      if (end.interfaceGone) this.emit('interface-gone');
    }
    return sink.diskFull ? 'disk-full' : 'ended';
  }

  private count(records: number, bytes: number): void {
    const first = this.stats.firstPacketAt === undefined;
    this.stats.packets += records;
    this.stats.bytes += bytes;
    const hadError = this.stats.error !== undefined;
    if (!this.gaveUp) this.stats.error = undefined;
    this.opts.onPackets?.(records, bytes);
    if (first) this.stats.firstPacketAt = Date.now();
    if (first || hadError) this.emit('changed');
  }
}
