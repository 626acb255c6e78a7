// One tcpdump on one pod interface, its output split into whole records and written to
// rotating files (docs/agent.md, "Capture workers"). tcpdump writes pcap to a pipe (-w - -U:
// each packet as it comes); the worker never writes a partial record. A tcpdump that dies is
// restarted with back-off and its files stay valid. Kernel drop counts are asked for every
// few seconds (SIGUSR1).
//
// Nothing here may wedge the agent: every failure in the loop becomes the worker's `error`
// (never an unhandled rejection), stopping is SIGINT then SIGKILL of tcpdump's process group
// after a deadline, waiting on the process's exit rather than on pipes, and disk writes go
// through a gate with a deadline on the final flush, so a hung disk holds this worker alone.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { RecordSplitter } from '../pcap/format.js';
import { DeadlineExceeded, withDeadline } from './deadline.js';
import type { DiskGate } from './disk-gate.js';
import type { BufferBudget } from './node-budget.js';
import { DiskFullError, RotatingPcapFile, type RotationPolicy } from './rotating-pcap.js';
import type { RotationGate } from './rotation-gate.js';

export interface WorkerSpec {
  /** namespace/name of the capture. */
  capture: string;
  pod: string;
  iface: string;
  bpf: string;
  dir: string;
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
  policy: RotationPolicy;
  log: Logger;
  gate: DiskGate;
  buffers: BufferBudget;
  statsIntervalMs?: number;
  /** SIGINT, then SIGKILL after this long. */
  stopGraceMs?: number;
  /** The last writes after tcpdump ended get this long; a hung disk is then left behind. */
  finalFlushMs?: number;
  onPackets?: (packets: number, bytes: number) => void;
  onRotate?: () => void;
  /** Held by pins of the capture's directory (rotation-gate.ts). */
  rotationGate?: RotationGate;
}

const MAX_BACKOFF_MS = 30_000;
/** Gathered records are written once there are this many bytes... */
const FLUSH_BYTES = 256 * 1024;
/** ...or once the oldest has waited this long (what "readable at any moment" costs). */
const FLUSH_MS = 100;
/** Beyond this, tcpdump's pipe is no longer read until the disk has caught up. */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;

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

  constructor(readonly spec: WorkerSpec, private readonly opts: WorkerOptions) {
    super();
    this.file = new RotatingPcapFile(spec.dir, `${spec.pod}_${spec.iface}`, opts.policy, () => opts.onRotate?.(), Date.now, opts.rotationGate);
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

  private runOnce(): Promise<'ended' | 'disk-full'> {
    if (this.stopping) return Promise.resolve('ended');
    return new Promise((resolve) => {
      // No --immediate-mode: it costs tcpdump 8x the CPU and drops packets at high rates;
      // packets then reach us within libpcap's 1 s block timeout, or sooner when traffic is busy.
      // `-Z root`: run as root, tcpdump changes user once its socket is open (Debian's to
      // `tcpdump` by default). Staying root keeps it ours to signal (SIGUSR1 for the drop
      // counts, SIGINT to stop) without CAP_KILL; the change to root still calls
      // initgroups(), hence CAP_SETGID. With CAP_NET_RAW that is all it needs: see
      // TCPDUMP_CAPABILITIES and deploy/agent/daemonset.yaml.
      const args = ['-i', this.spec.iface, '-U', '-w', '-', '-n', '-Z', 'root', '-B', '4096'];
      if (this.spec.bpf) args.push(this.spec.bpf);
      let child: ChildProcess;
      try {
        // Detached: its own process group, so a stop reaches whatever it started too.
        child = spawn(this.opts.tcpdump, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      } catch (err) {
        this.stats.error = `cannot start tcpdump: ${(err as Error).message}`;
        resolve('ended');
        return;
      }
      this.child = child;
      const splitter = new RecordSplitter();
      const buffers = this.opts.buffers;
      let writing = Promise.resolve();
      let diskFull = false;
      let stderr = '';
      const stdout = child.stdout!;
      // Records are gathered and written in batches: one disk write per ~100 ms or 256 KiB,
      // not one per packet, so the agent keeps up with what tcpdump alone could write.
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let flushTimer: NodeJS.Timeout | undefined;
      let flushing = false;
      const resumeIfRoom = (): void => {
        if (stdout.isPaused() && pendingBytes < MAX_PENDING_BYTES && !buffers.exhausted) stdout.resume();
      };
      const unsubscribe = buffers.onAvailable(resumeIfRoom);
      const flush = (): void => {
        clearTimeout(flushTimer);
        flushTimer = undefined;
        if (pending.length === 0 || flushing) return;
        const records = pending;
        const recordBytes = pendingBytes;
        pending = [];
        pendingBytes = 0;
        flushing = true;
        writing = writing.then(async () => {
          if (diskFull) return;
          try {
            await this.opts.gate.run(() => this.file.append(splitter.headerBytes!, records));
            this.count(records);
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
            buffers.give(recordBytes);
            flushing = false;
            // Back-pressure: past the worker's or the node's buffer limit the pipe was
            // paused and tcpdump waited (the kernel counts what it then drops).
            resumeIfRoom();
            if (pendingBytes >= FLUSH_BYTES) flush();
            else if (pending.length > 0) flushTimer ??= setTimeout(flush, FLUSH_MS);
          }
        });
      };
      stdout.on('data', (chunk: Buffer) => {
        let records: Buffer[];
        try {
          records = splitter.push(chunk);
        } catch (err) {
          this.stats.error = (err as Error).message;
          this.signal('SIGKILL');
          return;
        }
        let n = 0;
        for (const r of records) {
          pending.push(r);
          n += r.length;
        }
        pendingBytes += n;
        buffers.take(n);
        if (pendingBytes >= FLUSH_BYTES) flush();
        else if (pending.length > 0) flushTimer ??= setTimeout(flush, FLUSH_MS);
        if (pendingBytes >= MAX_PENDING_BYTES || buffers.exhausted) stdout.pause();
      });
      stdout.on('error', () => undefined);
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-4096);
        const drops = /(\d+) packets? dropped by kernel/g;
        let m: RegExpExecArray | null;
        let last: number | undefined;
        while ((m = drops.exec(stderr)) !== null) last = Number(m[1]);
        if (last !== undefined) this.stats.kernelDrops = this.dropsBefore + last;
      });
      child.stderr!.on('error', () => undefined);
      const statsTimer = setInterval(() => this.signal('SIGUSR1'), this.opts.statsIntervalMs ?? 5000);
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
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (finished) return;
        finished = true;
        clearInterval(statsTimer);
        clearInterval(ageTimer);
        this.child = undefined;
        void (async () => {
          // The pipe ends with the process unless something inherited it; then it is cut.
          await withDeadline(new Promise<void>((r) => (stdout.readableEnded || stdout.destroyed ? r() : stdout.once('close', () => r()))), 1000, 'the pipe to close').catch(() => undefined);
          stdout.destroy();
          // Everything tcpdump delivered reaches the file before the run ends, within a
          // deadline: a hung disk must not hold the stop.
          const drained = await withDeadline((async () => {
            while (pending.length > 0 || flushing) {
              flush();
              await writing;
            }
            await writing;
          })(), this.opts.finalFlushMs ?? 5000, 'the last writes').then(() => true, () => false);
          if (!drained) {
            this.stats.error = `writing ${this.file.currentPath} hangs (is the disk hung?)`;
            buffers.give(pendingBytes);
            pending = [];
            pendingBytes = 0;
          }
          unsubscribe();
          this.dropsBefore = this.stats.kernelDrops;
          if (spawnError) {
            this.stats.error = (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `tcpdump not found ("${this.opts.tcpdump}")` : `cannot start tcpdump: ${spawnError.message}`;
          } else if (!this.stopping && !diskFull) {
            const why = stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tcpdump:') && !l.includes('listening on')).pop();
            this.stats.error = why ? withPrivilegeHint(why) : `tcpdump exited (${signal ?? `code ${code}`})`;
            if (why && INTERFACE_GONE.test(why)) this.emit('interface-gone');
          }
          resolve(diskFull ? 'disk-full' : 'ended');
        })();
      };
      child.once('exit', finish);
    });
  }

  private count(records: Buffer[]): void {
    let bytes = 0;
    for (const r of records) bytes += r.length;
    const first = this.stats.firstPacketAt === undefined;
    this.stats.packets += records.length;
    this.stats.bytes += bytes;
    const hadError = this.stats.error !== undefined;
    if (!this.gaveUp) this.stats.error = undefined;
    this.opts.onPackets?.(records.length, bytes);
    if (first) this.stats.firstPacketAt = Date.now();
    if (first || hadError) this.emit('changed');
  }
}
