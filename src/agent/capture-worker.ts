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
      const args = ['-i', this.spec.iface, '-U', '-w', '-', '-n', '--immediate-mode', '-Z', 'root', '-B', '4096'];
      if (this.spec.bpf) args.push(this.spec.bpf);
      const child = spawn(this.opts.tcpdump, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      const splitter = new RecordSplitter();
      let writing = Promise.resolve();
      let diskFull = false;
      let stderr = '';
      const stdout = child.stdout!;
      stdout.on('data', (chunk: Buffer) => {
        let records: Buffer[];
        try {
          records = splitter.push(chunk);
        } catch (err) {
          this.stats.error = (err as Error).message;
          child.kill('SIGKILL');
          return;
        }
        if (records.length === 0 && splitter.header === undefined) return;
        // Back-pressure: while a write is pending tcpdump's pipe fills and it waits (the
        // kernel counts what it then has to drop), rather than the agent buffering.
        stdout.pause();
        writing = writing.then(async () => {
          if (diskFull) return;
          try {
            await this.file.append(splitter.headerBytes!, records);
            if (records.length > 0) this.count(records);
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
            stdout.resume();
          }
        });
      });
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
        void writing.then(() => {
          this.dropsBefore = this.stats.kernelDrops;
          if (spawnError) {
            this.stats.error = (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `tcpdump not found ("${this.opts.tcpdump}")` : spawnError.message;
          } else if (!this.stopping && !diskFull) {
            const why = stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tcpdump:') && !l.includes('listening on')).pop();
            this.stats.error = why ?? `tcpdump exited (${signal ?? `code ${code}`})`;
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
