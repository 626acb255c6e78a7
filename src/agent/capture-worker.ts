// One tcpdump on one pod interface, its output cut into blocks of whole records and written
// to rotating files (docs/agent.md, "Capture workers"). tcpdump writes pcap to a pipe in whole
// stdio buffers (-w -, no -U), flushed on SIGUSR2 while it waits for packets; the worker
// never writes a partial record. A tcpdump that dies is restarted with back-off and its files
// stay valid. Kernel drop counts are asked for every few seconds (SIGUSR1).
//
// Nothing here may wedge the agent: every failure in the loop becomes the worker's `error`
// (never an unhandled rejection), stopping is SIGINT then SIGKILL of tcpdump's process group
// after a deadline, waiting on the process's exit rather than on pipes, and disk writes go
// through a gate with a deadline on the final flush, so a hung disk holds this worker alone.
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { RecordArena } from './record-arena.js';
import { DeadlineExceeded, withDeadline } from './deadline.js';
import type { DiskGate } from './disk-gate.js';
import type { BufferBudget, PipeBudget } from './node-budget.js';
import { busyForPipe, resizePipe } from './pipe-size.js';
import { DiskFullError, RotatingPcapFile, type RotationPolicy } from './rotating-pcap.js';
import type { ProcessRecords } from './leftover-tcpdumps.js';
import type { RotationGate } from './rotation-gate.js';
import { signalWhenParked } from './parked-signal.js';
import type { CaptureTally } from './capture-tally.js';
import { removeSource, writeSource, type FileSource } from './file-source.js';
import { parseGlobalHeader } from '../pcap/format.js';

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

export interface WorkerOptions {
  tcpdump: string;
  /**
   * tcpdump's stdio buffer for its output, set through coreutils' stdbuf: a pipe's 4 KiB
   * default wakes the agent 2 500 times a second at 10 MB/s, and those wake-ups were most
   * of the agent's capture CPU; 256 KiB makes each read a full pipe. 0: tcpdump's own.
   */
  outputBufferBytes?: number;
  policy: RotationPolicy;
  log: Logger;
  gate: DiskGate;
  buffers: BufferBudget;
  /**
   * The pipe from tcpdump grows to `pipeBytes` once tcpdump fills its whole output buffer
   * between two flush ticks (pipe-size.ts), within the node's `pipes` budget.
   */
  pipes?: PipeBudget;
  pipeBytes?: number;
  statsIntervalMs?: number;
  /** SIGINT, then SIGKILL after this long. */
  stopGraceMs?: number;
  /** The last writes after tcpdump ended get this long; a hung disk is then left behind. */
  finalFlushMs?: number;
  onPackets?: (packets: number, bytes: number) => void;
  onRotate?: () => void;
  /** Held by pins of the capture's directory (rotation-gate.ts). */
  rotationGate?: RotationGate;
  /** A private directory (0700) for tcpdump's output channels (FIFOs, unlinked once open). */
  runDir: string;
  /** Where running tcpdumps are recorded, for a later agent to end them (leftover-tcpdumps.ts). */
  processes?: ProcessRecords;
  /** The capture's count on this node and its limits: every batch is claimed there first. */
  tally?: CaptureTally;
}

const MAX_BACKOFF_MS = 30_000;
/**
 * tcpdump is told to flush its output this often (SIGUSR2, when parked): with libpcap's 1 s
 * block timeout, a packet reaches its file within about a second at low rates.
 */
const TCPDUMP_FLUSH_MS = 250;
/** Gathered records are written once there are this many bytes... */
const FLUSH_BYTES = 256 * 1024;
/** ...or once the oldest has waited this long (what "readable at any moment" costs). */
const FLUSH_MS = 100;
/** One read of tcpdump's output: the arena pauses the channel below this much room. */
const READ_BYTES = 128 * 1024;

const execFileAsync = promisify(execFile);

/** What the agent's container must keep of its capabilities for tcpdump to capture. */
export const TCPDUMP_CAPABILITIES = ['NET_RAW', 'SETGID'] as const;

/** tcpdump's words for an interface that is not there (any more). */
const INTERFACE_GONE = /No such device|interface disappeared|interface went down|doesn't exist/i;

/** tcpdump's reason, and when it is a refused privilege, what the container lacks. */
function withPrivilegeHint(why: string): string {
  if (!/Operation not permitted|permission/i.test(why)) return why;
  return `${why} (the agent needs the capabilities ${TCPDUMP_CAPABILITIES.join(' and ')}, as deploy/agent/daemonset.yaml gives its container)`;
}

export declare interface CaptureWorker {
  /** Something the status shows changed: first packet, an error, a restart. */
  on(event: 'changed', listener: () => void): this;
  /** tcpdump said the interface does not exist: the pod's interface must be looked up again. */
  on(event: 'interface-gone', listener: () => void): this;
}

export class CaptureWorker extends EventEmitter {
  readonly file: RotatingPcapFile;
  readonly stats: WorkerStats = { packets: 0, bytes: 0, kernelDrops: 0, firstPacketAt: undefined, restarts: 0, error: undefined };
  private child: ChildProcess | undefined;
  private stopping = false;
  private gaveUp = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private dropsBefore = 0;
  /** Why the kernel (or perl) would not grow this worker's pipe: not asked again. */
  private pipeRefused: string | undefined;

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

  /** Signals tcpdump's process group (its own: spawned detached), falling back to the process. */
  private signal(sig: NodeJS.Signals): void {
    const child = this.child;
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
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

  /**
   * tcpdump's output channel: a FIFO rather than the pipe Node makes for a child, so that
   * the agent reads it into one reused buffer (net.Socket's `onread`) instead of a fresh
   * buffer per read, whose garbage collection was most of the agent's capture CPU. The FIFO
   * is made in a private directory, opened at both ends, and unlinked at once: nothing of it
   * stays in the filesystem.
   */
  private async openChannel(): Promise<{ readFd: number; writeFd: number }> {
    const dir = this.opts.runDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, `${randomBytes(8).toString('hex')}.fifo`);
    await execFileAsync('mkfifo', ['-m', '600', path]);
    try {
      // The reading end first and non-blocking, so that opening the writing end returns at once.
      const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        return { readFd, writeFd: openSync(path, constants.O_WRONLY) };
      } catch (err) {
        closeSync(readFd);
        throw err;
      }
    } finally {
      await unlink(path).catch(() => undefined);
    }
  }

  private async runOnce(): Promise<'ended' | 'disk-full'> {
    if (this.stopping) return 'ended';
    let channel: { readFd: number; writeFd: number };
    try {
      channel = await this.openChannel();
    } catch (err) {
      this.stats.error = `cannot make tcpdump's output channel in ${this.opts.runDir}: ${(err as Error).message}`;
      return 'ended';
    }
    return await new Promise((resolve) => {
      // Capture at tcpdump's own cost (docs/agent.md, "Capture at tcpdump's cost"): no
      // --immediate-mode (8x tcpdump's CPU, and drops at high rates: packets reach tcpdump
      // within libpcap's 1 s block timeout, or sooner when busy) and no -U (a write per
      // packet, 2.6x): tcpdump writes whole stdio buffers, and a SIGUSR2 every 250 ms, sent
      // while it waits for packets (parked-signal.ts), makes it flush what it holds, so files
      // stay current at low rates.
      // `-Z root`: run as root, tcpdump changes user once its socket is open (Debian's to
      // `tcpdump` by default). Staying root keeps it ours to signal (SIGUSR1 for the drop
      // counts, SIGUSR2 to flush, SIGINT to stop) without CAP_KILL; the change to root still
      // calls initgroups(), hence CAP_SETGID. With CAP_NET_RAW that is all it needs: see
      // TCPDUMP_CAPABILITIES and deploy/agent/daemonset.yaml.
      const args = ['-i', this.spec.iface, '-w', '-', '-n', '-Z', 'root', '-B', '4096'];
      if (this.spec.snapLen !== undefined) args.push('-s', String(this.spec.snapLen));
      if (this.spec.bpf) args.push(this.spec.bpf);
      let child: ChildProcess;
      try {
        // Detached: its own process group, so a stop reaches whatever it started too.
        // stdbuf execs tcpdump: the same process, signalled and inspected as tcpdump.
        const buffer = this.opts.outputBufferBytes ?? 0;
        const stdio: StdioOptions = ['ignore', channel.writeFd, 'pipe'];
        child = buffer > 0
          ? spawn('stdbuf', ['-o', String(buffer), this.opts.tcpdump, ...args], { stdio, detached: true })
          : spawn(this.opts.tcpdump, args, { stdio, detached: true });
      } catch (err) {
        closeSync(channel.writeFd);
        closeSync(channel.readFd);
        this.stats.error = `cannot start tcpdump: ${(err as Error).message}`;
        resolve('ended');
        return;
      }
      // tcpdump holds the writing end now; ours would keep the channel from ever ending.
      closeSync(channel.writeFd);
      this.child = child;
      const pid = child.pid;
      if (pid !== undefined) {
        try {
          this.opts.processes?.add(pid);
        } catch (err) {
          this.opts.log.warn({ pid, error: (err as Error).message }, 'cannot record tcpdump for a later agent to end (leftover-tcpdumps.ts)');
        }
      }
      const arena = new RecordArena();
      const buffers = this.opts.buffers;
      let writing = Promise.resolve();
      let diskFull = false;
      let stderr = '';
      // Records are written in batches: one disk write per ~100 ms or 256 KiB, not one per
      // packet, so the agent keeps up with what tcpdump alone could write.
      let flushTimer: NodeJS.Timeout | undefined;
      let flushing = false;
      let paused = false;
      /** Bytes taken from the node's buffer budget and not given back yet. */
      let held = 0;
      /** Bytes tcpdump wrote since the last flush tick. */
      let receivedSinceTick = 0;
      const readBuffer = Buffer.allocUnsafeSlow(READ_BYTES);
      const output = new Socket({
        fd: channel.readFd,
        readable: true,
        writable: false,
        onread: {
          buffer: readBuffer,
          callback: (n: number, buf: Buffer): boolean => {
            try {
              arena.push(buf.subarray(0, n));
            } catch (err) {
              this.stats.error = (err as Error).message;
              this.signal('SIGKILL');
              return false;
            }
            buffers.take(n);
            held += n;
            receivedSinceTick += n;
            if (arena.wholeBytes >= FLUSH_BYTES) flush();
            else if (arena.wholeRecords > 0) flushTimer ??= setTimeout(flush, FLUSH_MS);
            // Back-pressure: with no room for another read, or past the node's buffer limit,
            // the channel is not read; tcpdump waits and the kernel counts what it drops.
            paused = arena.room < READ_BYTES || buffers.exhausted;
            if (paused) flush();
            return !paused;
          },
        },
      });
      const resumeIfRoom = (): void => {
        if (paused && arena.room >= READ_BYTES && !buffers.exhausted) {
          paused = false;
          output.resume();
        }
      };
      const unsubscribe = buffers.onAvailable(resumeIfRoom);
      const flush = (): void => {
        clearTimeout(flushTimer);
        flushTimer = undefined;
        if (flushing) return;
        const batch = arena.take();
        if (!batch) return;
        flushing = true;
        writing = writing.then(async () => {
          try {
            if (diskFull) return;
            let { bytes, records } = batch;
            if (this.opts.tally) {
              // The capture's limits (spec.maxPackets, spec.maxBytes) cut the batch; what
              // does not fit is dropped here, and the controller finishes the capture.
              const claimed = await this.opts.tally.claim(bytes, records, arena.header!.littleEndian);
              if (claimed.records < records) this.emit('changed');
              bytes = bytes.subarray(0, claimed.bytes);
              records = claimed.records;
            }
            if (records === 0) return;
            await this.opts.gate.run(() => this.file.append(arena.headerBytes!, bytes, records));
            this.count(records, bytes.length);
          } catch (err) {
            if (err instanceof DiskFullError) {
              diskFull = true;
              this.stats.error = `${err.message}: capture stopped on this interface`;
              this.signal('SIGINT');
            } else {
              this.stats.error = `writing ${this.file.currentPath}: ${(err as Error).message}`;
              this.signal('SIGKILL');
            }
            this.emit('changed');
          } finally {
            buffers.give(batch.bytes.length);
            held -= batch.bytes.length;
            flushing = false;
            if (arena.wholeBytes >= FLUSH_BYTES || (paused && arena.wholeRecords > 0)) flush();
            else if (arena.wholeRecords > 0) flushTimer ??= setTimeout(flush, FLUSH_MS);
            resumeIfRoom();
          }
        });
      };
      output.on('error', () => undefined);
      // Signals only once tcpdump has said it listens (its handlers are in place by then;
      // SIGUSR1 or SIGUSR2 before would end it), and only while it waits for packets: its
      // handlers use stdio, which a signal mid-write would corrupt (parked-signal.ts).
      let signalTimer: NodeJS.Timeout | undefined;
      let statsAt = Date.now();
      let tickAt = Date.now();
      let unreadable = false;
      let signalling = false;
      const tick = async (): Promise<void> => {
        const pid = child.pid;
        // Stopping: SIGINT is on its way, and nothing may continue a tcpdump someone stopped.
        if (signalling || pid === undefined || this.stopping || child.exitCode !== null || child.signalCode !== null) return;
        const statsDue = Date.now() - statsAt >= (this.opts.statsIntervalMs ?? 5000);
        // A full output buffer since the last tick: tcpdump flushed by itself meanwhile, so
        // what it holds is younger than the tick; a busy capture is not stopped four times a
        // second for nothing (each stop costs /proc reads and two context switches).
        const buffer = Math.max(this.opts.outputBufferBytes ?? 0, 4096);
        const flushedItself = receivedSinceTick >= buffer;
        // The pipe grows for a rate, not for a buffer that filled while the event loop was late.
        const now = Date.now();
        const busy = busyForPipe(receivedSinceTick, now - tickAt, TCPDUMP_FLUSH_MS, buffer);
        tickAt = now;
        receivedSinceTick = 0;
        if (busy) growPipe();
        if (flushedItself && !statsDue) return;
        signalling = true;
        try {
          const result = await signalWhenParked(pid, statsDue ? ['SIGUSR2', 'SIGUSR1'] : ['SIGUSR2']);
          if (result === 'sent' && statsDue) statsAt = Date.now();
          if (result === 'unreadable' && !unreadable) {
            unreadable = true;
            this.opts.log.warn({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface }, 'cannot read tcpdump\'s /proc/<pid>/syscall: packets reach the file when tcpdump\'s buffer fills, not within a second');
          }
        } finally {
          signalling = false;
        }
      };
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-4096);
        if (!signalTimer && stderr.includes('listening on')) signalTimer = setInterval(() => void tick(), TCPDUMP_FLUSH_MS);
        const drops = /(\d+) packets? dropped by kernel/g;
        let m: RegExpExecArray | null;
        let last: number | undefined;
        while ((m = drops.exec(stderr)) !== null) last = Number(m[1]);
        if (last !== undefined) this.stats.kernelDrops = this.dropsBefore + last;
      });
      child.stderr!.on('error', () => undefined);
      const ageTimer = setInterval(() => {
        writing = writing.then(async () => {
          await this.opts.gate.run(() => this.file.rotateIfOld()).catch((err: unknown) => {
            this.stats.error = `rotating ${this.file.currentPath}: ${(err as Error).message}`;
          });
        });
      }, 1000);
      let spawnError: Error | undefined;
      child.once('error', (err) => {
        spawnError = err;
        // A failed spawn emits no 'exit'.
        if (child.pid === undefined) finish(null, null);
      });
      let finished = false;
      /** Pipe capacity reserved in the node's budget for this run's channel (pipe-size.ts). */
      let pipeReserved = 0;
      let growing = false;
      const growPipe = (): void => {
        const want = this.opts.pipeBytes ?? 0;
        const budget = this.opts.pipes;
        // A pipe holds 64 KiB to begin with. The channel's fd is only valid while the socket
        // is open: a closed one may already be the number of something else.
        if (!budget || want <= 65_536 || pipeReserved > 0 || growing || this.pipeRefused !== undefined) return;
        if (finished || output.destroyed || output.readableEnded) return;
        if (!budget.reserve(want)) return;
        growing = true;
        resizePipe(channel.readFd, want).then((size) => {
          if (finished) {
            budget.release(want);
            return;
          }
          budget.settle(want, size);
          pipeReserved = size;
        }, (err: Error) => {
          budget.release(want);
          this.pipeRefused = err.message;
          this.opts.log.warn({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface, pipeBytes: want, error: err.message }, 'cannot grow the pipe from tcpdump; the capture goes on with 64 KiB (more CPU, no packet less)');
        }).finally(() => {
          growing = false;
        });
      };
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (finished) return;
        finished = true;
        if (pipeReserved > 0) this.opts.pipes?.release(pipeReserved);
        pipeReserved = 0;
        clearInterval(signalTimer);
        clearInterval(ageTimer);
        this.child = undefined;
        if (pid !== undefined) void this.opts.processes?.remove(pid);
        void (async () => {
          // The channel ends with the process unless something inherited it; then it is cut.
          await withDeadline(new Promise<void>((r) => (output.readableEnded || output.destroyed ? r() : output.once('close', () => r()))), 1000, 'the channel to close').catch(() => undefined);
          output.destroy();
          // Everything tcpdump delivered reaches the file before the run ends, within a
          // deadline: a hung disk must not hold the stop.
          const drained = await withDeadline((async () => {
            while (arena.wholeRecords > 0 || flushing) {
              flush();
              await writing;
            }
            await writing;
          })(), this.opts.finalFlushMs ?? 5000, 'the last writes').then(() => true, () => false);
          if (!drained) this.stats.error = `writing ${this.file.currentPath} hangs (is the disk hung?)`;
          // Whatever was read and is not on disk (a record tcpdump was cut in, or a hung write).
          buffers.give(held);
          held = 0;
          unsubscribe();
          this.dropsBefore = this.stats.kernelDrops;
          if (spawnError) {
            this.stats.error = (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `${(this.opts.outputBufferBytes ?? 0) > 0 ? 'stdbuf (coreutils)' : `tcpdump ("${this.opts.tcpdump}")`} not found` : `cannot start tcpdump: ${spawnError.message}`;
          } else if (!this.stopping && !diskFull) {
            const why = stderr.split('\n').map((l) => l.trim()).filter((l) => (l.startsWith('tcpdump:') || l.startsWith('stdbuf:')) && !l.includes('listening on')).pop();
            if (why?.startsWith('stdbuf:') && /No such file/.test(why)) this.stats.error = `tcpdump not found ("${this.opts.tcpdump}")`;
            else this.stats.error = why ? withPrivilegeHint(why) : `tcpdump exited (${signal ?? `code ${code}`})`;
            if (why && INTERFACE_GONE.test(why)) this.emit('interface-gone');
          }
          resolve(diskFull ? 'disk-full' : 'ended');
        })();
      };
      child.once('exit', finish);
    });
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
