// One tcpdump on one pod interface, its output split into whole records and written to
// rotating files. tcpdump writes pcap to a pipe (-w - -U: each packet as it comes); the
// worker never writes a partial record. A tcpdump that dies is restarted with back-off
// and its files stay valid. Kernel drop counts are asked for every few seconds (SIGUSR1).
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { RecordSplitter } from '../pcap/format.js';
import { DiskFullError, RotatingPcapFile, type RotationPolicy } from './rotating-pcap.js';

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
  /** Set when the worker gave up (disk full) or tcpdump keeps failing. */
  error: string | undefined;
}

export interface WorkerOptions {
  tcpdump: string;
  policy: RotationPolicy;
  log: Logger;
  statsIntervalMs?: number;
  onPackets?: (packets: number, bytes: number) => void;
  onRotate?: () => void;
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

/** tcpdump's reason, and when it is a refused privilege, what the container lacks. */
function withPrivilegeHint(why: string): string {
  if (!/Operation not permitted|permission/i.test(why)) return why;
  return `${why} (the agent needs the capabilities ${TCPDUMP_CAPABILITIES.join(' and ')}, as deploy/agent/daemonset.yaml gives its container)`;
}

export class CaptureWorker extends EventEmitter {
  readonly file: RotatingPcapFile;
  readonly stats: WorkerStats = { packets: 0, bytes: 0, kernelDrops: 0, firstPacketAt: undefined, restarts: 0, error: undefined };
  private child: ChildProcess | undefined;
  private stopping = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private dropsBefore = 0;

  constructor(readonly spec: WorkerSpec, private readonly opts: WorkerOptions) {
    super();
    this.file = new RotatingPcapFile(spec.dir, `${spec.pod}_${spec.iface}`, opts.policy, () => opts.onRotate?.());
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops tcpdump, writes what it had captured, closes the file. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.child?.kill('SIGINT');
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    await this.file.recover();
    let backoff = 500;
    while (!this.stopping) {
      const started = Date.now();
      const outcome = await this.runOnce();
      if (this.stopping || outcome === 'disk-full') break;
      // A run that lasted a while earns a quick restart; repeated failures back off.
      backoff = Date.now() - started > 60_000 ? 500 : Math.min(backoff * 2, MAX_BACKOFF_MS);
      this.stats.restarts++;
      this.opts.log.warn({ capture: this.spec.capture, pod: this.spec.pod, iface: this.spec.iface, retryInMs: backoff, error: this.stats.error }, 'tcpdump ended; restarting');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    await this.file.close();
  }

  private runOnce(): Promise<'ended' | 'disk-full'> {
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
      const child = spawn(this.opts.tcpdump, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      const splitter = new RecordSplitter();
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
      const flush = (): void => {
        clearTimeout(flushTimer);
        flushTimer = undefined;
        if (pending.length === 0 || flushing) return;
        const records = pending;
        pending = [];
        pendingBytes = 0;
        flushing = true;
        writing = writing.then(async () => {
          if (diskFull) return;
          try {
            await this.file.append(splitter.headerBytes!, records);
            this.count(records);
          } catch (err) {
            if (err instanceof DiskFullError) {
              diskFull = true;
              this.stats.error = `${err.message}: capture stopped on this interface`;
              child.kill('SIGINT');
            } else {
              this.stats.error = `writing ${this.file.currentPath}: ${(err as Error).message}`;
              child.kill('SIGKILL');
            }
          } finally {
            flushing = false;
            // Back-pressure: past MAX_PENDING_BYTES the pipe was paused and tcpdump waited
            // (the kernel counts what it then drops), rather than the agent buffering more.
            if (stdout.isPaused()) stdout.resume();
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
          child.kill('SIGKILL');
          return;
        }
        for (const r of records) {
          pending.push(r);
          pendingBytes += r.length;
        }
        if (pendingBytes >= FLUSH_BYTES) flush();
        else if (pending.length > 0) flushTimer ??= setTimeout(flush, FLUSH_MS);
        if (pendingBytes >= MAX_PENDING_BYTES) stdout.pause();
      });
      stdout.once('end', flush);
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-4096);
        const drops = /(\d+) packets? dropped by kernel/g;
        let m: RegExpExecArray | null;
        let last: number | undefined;
        while ((m = drops.exec(stderr)) !== null) last = Number(m[1]);
        if (last !== undefined) this.stats.kernelDrops = this.dropsBefore + last;
      });
      const statsTimer = setInterval(() => child.kill('SIGUSR1'), this.opts.statsIntervalMs ?? 5000);
      const ageTimer = setInterval(() => {
        writing = writing.then(async () => {
          await this.file.rotateIfOld().catch((err: unknown) => {
            this.stats.error = `rotating ${this.file.currentPath}: ${(err as Error).message}`;
          });
        });
      }, 1000);
      let spawnError: Error | undefined;
      child.once('error', (err) => {
        spawnError = err;
      });
      child.once('close', (code, signal) => {
        clearInterval(statsTimer);
        clearInterval(ageTimer);
        this.child = undefined;
        void (async () => {
          // Everything tcpdump delivered reaches the file before the run ends.
          while (pending.length > 0 || flushing) {
            flush();
            await writing;
          }
        })().then(() => {
          this.dropsBefore = this.stats.kernelDrops;
          if (spawnError) {
            this.stats.error = (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `tcpdump not found ("${this.opts.tcpdump}")` : spawnError.message;
          } else if (!this.stopping && !diskFull) {
            const why = stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tcpdump:') && !l.includes('listening on')).pop();
            this.stats.error = why ? withPrivilegeHint(why) : `tcpdump exited (${signal ?? `code ${code}`})`;
          }
          resolve(diskFull ? 'disk-full' : 'ended');
        });
      });
    });
  }

  private count(records: Buffer[]): void {
    let bytes = 0;
    for (const r of records) bytes += r.length;
    const first = this.stats.firstPacketAt === undefined;
    this.stats.packets += records.length;
    this.stats.bytes += bytes;
    if (!this.stats.error?.startsWith('no space')) this.stats.error = undefined;
    this.opts.onPackets?.(records.length, bytes);
    if (first) {
      this.stats.firstPacketAt = Date.now();
      this.emit('first-packet');
    }
  }
}
