// One tcpdump process and its lifecycle (docs/agent.md, "Capture workers"): its output
// channel, how it is started and signalled, what it says on stderr (kernel drops, why it
// ended), and the pipe that grows when it is busy. What it writes is read by a record sink
// (record-sink.ts); when it ends, and why, is the capture worker's to act on.
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { PipeBudget } from './node-budget.js';
import { signalWhenParked } from './parked-signal.js';
import { busyForPipe, resizePipe } from './pipe-size.js';
import type { ProcessRecords } from './leftover-tcpdumps.js';

const execFileAsync = promisify(execFile);

/** What the agent's container must keep of its capabilities for tcpdump to capture. */
export const TCPDUMP_CAPABILITIES = ['NET_RAW', 'SETGID'] as const;

/**
 * tcpdump is told to flush its output this often (SIGUSR2, when parked): with libpcap's 1 s
 * block timeout, a packet reaches its file within about a second at low rates.
 */
const TCPDUMP_FLUSH_MS = 250;

/** tcpdump's words for an interface that is not there (any more). */
const INTERFACE_GONE = /No such device|interface disappeared|interface went down|doesn't exist/i;

/** tcpdump's reason, and when it is a refused privilege, what the container lacks. */
function withPrivilegeHint(why: string): string {
  if (!/Operation not permitted|permission/i.test(why)) return why;
  return `${why} (the agent needs the capabilities ${TCPDUMP_CAPABILITIES.join(' and ')}, as deploy/agent/daemonset.yaml gives its container)`;
}

/** What to capture. */
export interface TcpdumpTarget {
  iface: string;
  bpf: string;
  /** tcpdump's -s (bytes kept per packet); undefined: the whole packet. */
  snapLen: number | undefined;
  /** Fields for this process's log lines (capture, pod, interface). */
  logContext: Record<string, string>;
}

export interface TcpdumpOptions {
  tcpdump: string;
  /**
   * tcpdump's stdio buffer for its output, set through coreutils' stdbuf: a pipe's 4 KiB
   * default wakes the agent 2 500 times a second at 10 MB/s, and those wake-ups were most
   * of the agent's capture CPU; 256 KiB makes each read a full pipe. 0: tcpdump's own.
   */
  outputBufferBytes?: number;
  /** A private directory (0700) for tcpdump's output channels (FIFOs, unlinked once open). */
  runDir: string;
  /** Where running tcpdumps are recorded, for a later agent to end them (leftover-tcpdumps.ts). */
  processes?: ProcessRecords;
  /**
   * The pipe from tcpdump grows to `pipeBytes` once tcpdump fills its whole output buffer
   * between two flush ticks (pipe-size.ts), within the node's `pipes` budget.
   */
  pipes?: PipeBudget;
  pipeBytes?: number;
  /** Drop counts are asked for this often (SIGUSR1). */
  statsIntervalMs?: number;
  log: Logger;
}

/** Why the kernel would not grow a worker's pipe: kept over its runs, so it is not asked again. */
export interface PipeMemo {
  refused?: string;
}

/** What the process's owner is told, and asked. */
export interface TcpdumpHooks {
  /** The worker is stopping: no more flush signals (SIGINT is on its way). */
  stopping(): boolean;
  /** tcpdump reported its kernel drops so far. */
  drops(total: number): void;
}

/** How a tcpdump ended. */
export interface TcpdumpEnd {
  /** It could not be started at all. */
  spawnFailure?: string;
  /** In tcpdump's words when it said why, else its exit code or signal. */
  reason: string;
  /** It said its interface is not there (the pod's interface must be looked up again). */
  interfaceGone: boolean;
}

/**
 * tcpdump's output channel: a FIFO rather than the pipe Node makes for a child, so that the
 * agent reads it into one reused buffer (net.Socket's `onread`) instead of a fresh buffer per
 * read, whose garbage collection was most of the agent's capture CPU. The FIFO is made in a
 * private directory, opened at both ends, and unlinked at once: nothing of it stays in the
 * filesystem.
 */
async function openChannel(dir: string): Promise<{ readFd: number; writeFd: number }> {
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

export class TcpdumpProcess {
  /** Resolves once the process is gone (or never started), with its exit. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stderr = '';
  private spawnError: Error | undefined;
  private signalTimer: NodeJS.Timeout | undefined;
  private finished = false;
  /** Bytes tcpdump wrote since the last flush tick. */
  private receivedSinceTick = 0;
  private statsAt = Date.now();
  private tickAt = Date.now();
  private unreadable = false;
  private signalling = false;
  /** Pipe capacity reserved in the node's budget for this channel (pipe-size.ts). */
  private pipeReserved = 0;
  private growing = false;
  /** The sink still has the channel open (its fd is ours to resize). */
  private channelOpen = true;

  /**
   * Makes the channel and starts tcpdump on it. Throws (with the reason for the worker's
   * status) when the channel cannot be made or the process cannot be spawned at all.
   */
  static async start(target: TcpdumpTarget, opts: TcpdumpOptions, pipeMemo: PipeMemo, hooks: TcpdumpHooks): Promise<TcpdumpProcess> {
    let channel: { readFd: number; writeFd: number };
    try {
      channel = await openChannel(opts.runDir);
    } catch (err) {
      throw new Error(`cannot make tcpdump's output channel in ${opts.runDir}: ${(err as Error).message}`);
    }
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
    const args = ['-i', target.iface, '-w', '-', '-n', '-Z', 'root', '-B', '4096'];
    if (target.snapLen !== undefined) args.push('-s', String(target.snapLen));
    if (target.bpf) args.push(target.bpf);
    let child: ChildProcess;
    try {
      // Detached: its own process group, so a stop reaches whatever it started too.
      // stdbuf execs tcpdump: the same process, signalled and inspected as tcpdump.
      const buffer = opts.outputBufferBytes ?? 0;
      const stdio: StdioOptions = ['ignore', channel.writeFd, 'pipe'];
      child = buffer > 0
        ? spawn('stdbuf', ['-o', String(buffer), opts.tcpdump, ...args], { stdio, detached: true })
        : spawn(opts.tcpdump, args, { stdio, detached: true });
    } catch (err) {
      closeSync(channel.writeFd);
      closeSync(channel.readFd);
      throw new Error(`cannot start tcpdump: ${(err as Error).message}`);
    }
    // tcpdump holds the writing end now; ours would keep the channel from ever ending.
    closeSync(channel.writeFd);
    return new TcpdumpProcess(child, channel.readFd, target, opts, pipeMemo, hooks);
  }

  private constructor(
    private readonly child: ChildProcess,
    /** The reading end of the channel, for the record sink; valid while the sink's socket is open. */
    readonly readFd: number,
    private readonly target: TcpdumpTarget,
    private readonly opts: TcpdumpOptions,
    private readonly pipeMemo: PipeMemo,
    private readonly hooks: TcpdumpHooks,
  ) {
    const pid = child.pid;
    if (pid !== undefined) {
      try {
        opts.processes?.add(pid);
      } catch (err) {
        opts.log.warn({ pid, error: (err as Error).message }, 'cannot record tcpdump for a later agent to end (leftover-tcpdumps.ts)');
      }
    }
    child.stderr!.on('data', (d: Buffer) => this.heard(d));
    child.stderr!.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.finished) return;
        this.finished = true;
        if (this.pipeReserved > 0) opts.pipes?.release(this.pipeReserved);
        this.pipeReserved = 0;
        clearInterval(this.signalTimer);
        if (pid !== undefined) void opts.processes?.remove(pid);
        resolve({ code, signal });
      };
      child.once('error', (err) => {
        this.spawnError = err;
        // A failed spawn emits no 'exit'.
        if (child.pid === undefined) finish(null, null);
      });
      child.once('exit', finish);
    });
  }

  /** Signals tcpdump's process group (its own: spawned detached), falling back to the process. */
  signal(sig: NodeJS.Signals): void {
    const child = this.child;
    if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  }

  /** The sink read `n` bytes of tcpdump's output (how busy it is: flush ticks, pipe growth). */
  received(n: number): void {
    this.receivedSinceTick += n;
  }

  /** The sink closed the channel: its fd number may be something else's from now on. */
  channelClosed(): void {
    this.channelOpen = false;
  }

  /** How it ended, from what it said; asked once the exit is known and its stderr read. */
  end(exit: { code: number | null; signal: NodeJS.Signals | null }): TcpdumpEnd {
    if (this.spawnError) {
      const missing = (this.opts.outputBufferBytes ?? 0) > 0 ? 'stdbuf (coreutils)' : `tcpdump ("${this.opts.tcpdump}")`;
      const failure = (this.spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `${missing} not found` : `cannot start tcpdump: ${this.spawnError.message}`;
      return { spawnFailure: failure, reason: failure, interfaceGone: false };
    }
    const why = this.stderr.split('\n').map((l) => l.trim()).filter((l) => (l.startsWith('tcpdump:') || l.startsWith('stdbuf:')) && !l.includes('listening on')).pop();
    if (why?.startsWith('stdbuf:') && /No such file/.test(why)) return { reason: `tcpdump not found ("${this.opts.tcpdump}")`, interfaceGone: false };
    return {
      reason: why ? withPrivilegeHint(why) : `tcpdump exited (${exit.signal ?? `code ${exit.code}`})`,
      interfaceGone: why !== undefined && INTERFACE_GONE.test(why),
    };
  }

  /** stderr: when it listens (its signal handlers are in place), its drop counts, its last words. */
  private heard(d: Buffer): void {
    this.stderr = (this.stderr + d.toString()).slice(-4096);
    // Signals only once tcpdump has said it listens (SIGUSR1 or SIGUSR2 before would end it).
    if (!this.signalTimer && this.stderr.includes('listening on')) this.signalTimer = setInterval(() => void this.tick(), TCPDUMP_FLUSH_MS);
    const drops = /(\d+) packets? dropped by kernel/g;
    let m: RegExpExecArray | null;
    let last: number | undefined;
    while ((m = drops.exec(this.stderr)) !== null) last = Number(m[1]);
    if (last !== undefined) this.hooks.drops(last);
  }

  /**
   * Every flush tick: SIGUSR2 (and SIGUSR1 when drop counts are due), only while tcpdump
   * waits for packets: its handlers use stdio, which a signal mid-write would corrupt
   * (parked-signal.ts).
   */
  private async tick(): Promise<void> {
    const pid = this.child.pid;
    // Stopping: SIGINT is on its way, and nothing may continue a tcpdump someone stopped.
    if (this.signalling || pid === undefined || this.hooks.stopping() || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const statsDue = Date.now() - this.statsAt >= (this.opts.statsIntervalMs ?? 5000);
    // A full output buffer since the last tick: tcpdump flushed by itself meanwhile, so
    // what it holds is younger than the tick; a busy capture is not stopped four times a
    // second for nothing (each stop costs /proc reads and two context switches).
    const buffer = Math.max(this.opts.outputBufferBytes ?? 0, 4096);
    const flushedItself = this.receivedSinceTick >= buffer;
    // The pipe grows for a rate, not for a buffer that filled while the event loop was late.
    const now = Date.now();
    const busy = busyForPipe(this.receivedSinceTick, now - this.tickAt, TCPDUMP_FLUSH_MS, buffer);
    this.tickAt = now;
    this.receivedSinceTick = 0;
    if (busy) this.growPipe();
    if (flushedItself && !statsDue) return;
    this.signalling = true;
    try {
      const result = await signalWhenParked(pid, statsDue ? ['SIGUSR2', 'SIGUSR1'] : ['SIGUSR2']);
      if (result === 'sent' && statsDue) this.statsAt = Date.now();
      if (result === 'unreadable' && !this.unreadable) {
        this.unreadable = true;
        this.opts.log.warn(this.target.logContext, 'cannot read tcpdump\'s /proc/<pid>/syscall: packets reach the file when tcpdump\'s buffer fills, not within a second');
      }
    } finally {
      this.signalling = false;
    }
  }

  private growPipe(): void {
    const want = this.opts.pipeBytes ?? 0;
    const budget = this.opts.pipes;
    // A pipe holds 64 KiB to begin with. The channel's fd is only valid until the process
    // ended and the sink closed it: a closed one may already be the number of something else.
    if (!budget || want <= 65_536 || this.pipeReserved > 0 || this.growing || this.pipeMemo.refused !== undefined || this.finished || !this.channelOpen) return;
    if (!budget.reserve(want)) return;
    this.growing = true;
    resizePipe(this.readFd, want).then((size) => {
      if (this.finished || !this.channelOpen) {
        budget.release(want);
        return;
      }
      budget.settle(want, size);
      this.pipeReserved = size;
    }, (err: Error) => {
      budget.release(want);
      this.pipeMemo.refused = err.message;
      this.opts.log.warn({ ...this.target.logContext, pipeBytes: want, error: err.message }, 'cannot grow the pipe from tcpdump; the capture goes on with 64 KiB (more CPU, no packet less)');
    }).finally(() => {
      this.growing = false;
    });
  }
}
