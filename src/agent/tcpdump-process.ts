// One tcpdump process and its lifecycle (docs/agent.md, "Capture workers"): how it is started
// and signalled, what it says on stderr (packets captured, kernel drops, why it ended). It
// writes its file itself, through its standard output (tcpdump-files.ts); when it ends, and
// why, is the capture worker's to act on.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { signalWhenParked, whileStopped } from './parked-signal.js';
import type { ProcessRecords } from './leftover-tcpdumps.js';

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
   * coreutils' stdbuf, to give tcpdump's output a STDIO_BUFFER_BYTES buffer; undefined:
   * tcpdump's own (st_blksize, 4 KiB: a write(2) every 4 KiB).
   */
  stdbuf?: string;
  /** Where running tcpdumps are recorded, for a later agent to end them (leftover-tcpdumps.ts). */
  processes?: ProcessRecords;
  /** Drop counts are asked for this often (SIGUSR1) while tcpdump is busy; a quiet one is asked every tick. */
  statsIntervalMs?: number;
  log: Logger;
}

/** tcpdump's counts, as it prints them on SIGUSR1 and when it ends. */
export interface TcpdumpCounts {
  /** Packets it handed to its output (in its stdio buffer or in the file). */
  captured: number;
  /** Packets the kernel put in its capture ring, dropped ones included. */
  received: number;
  /** Packets the kernel dropped (ring full). */
  dropped: number;
}

/** What the process's owner is told, and asked. */
export interface TcpdumpHooks {
  /** The worker is stopping: no more flush signals (SIGINT is on its way). */
  stopping(): boolean;
  /** Bytes tcpdump wrote to its files since the last call (how busy it is: a busy one flushes by itself). */
  writtenSinceTick(): number;
  /** Its counts are wanted at the next tick, busy or not (its first packets: the status says Capturing with them). */
  countsWanted(): boolean;
  /** tcpdump reported its counts so far (this process's). */
  counts(c: TcpdumpCounts): void;
  /**
   * Every packet that reached the kernel's capture ring before `atMs` (the agent's clock) is
   * in the files: tcpdump, parked in poll, had handed on all the ring held, then flushed.
   */
  flushedThrough(atMs: number): void;
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

export class TcpdumpProcess {
  /** Resolves once the process is gone (or never started), with its exit. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stderr = '';
  /** Where the next counts line may start in `stderr`. */
  private countsFrom = 0;
  private spawnError: Error | undefined;
  private signalTimer: NodeJS.Timeout | undefined;
  private finished = false;
  private statsAt = Date.now();
  private unreadable = false;
  private signalling = false;
  /** Settles when the signalling under way is done. */
  private signalled: Promise<void> = Promise.resolve();
  /** Sent with both signals at this time (agent's clock) to a parked tcpdump; its counts not heard yet. */
  private askedAt: number | undefined;
  /** Its counts said the ring was empty when asked at this time; proven flushed once it parks again. */
  private emptyAt: number | undefined;

  /**
   * Starts tcpdump writing its pcap to `output` (a descriptor of the file: tcpdump-files.ts).
   * Throws (with the reason for the worker's status) when the process cannot be spawned.
   */
  static start(target: TcpdumpTarget, output: number, opts: TcpdumpOptions, hooks: TcpdumpHooks): TcpdumpProcess {
    // Capture at tcpdump's own cost (docs/agent.md, "Capture at tcpdump's cost"): tcpdump
    // writes its own file, as bare `tcpdump -w` does, in STDIO_BUFFER_BYTES writes (stdbuf:
    // 0.6x the CPU of its 4 KiB ones, measured); no --immediate-mode (13x tcpdump's CPU
    // and drops at 50 000 packets/s: packets reach tcpdump within libpcap's 1 s block timeout,
    // or sooner when busy) and no -U (a write per packet): a SIGUSR2 every 250 ms, sent while
    // it waits for packets (parked-signal.ts), makes it flush what it holds.
    // `-Z root`: run as root, tcpdump changes user once its socket is open (Debian's to
    // `tcpdump` by default). Staying root keeps it ours to signal (SIGUSR1 for the counts,
    // SIGUSR2 to flush, SIGINT to stop) without CAP_KILL, and lets it create its files in the
    // capture directory; the change to root still calls initgroups(), hence CAP_SETGID. With
    // CAP_NET_RAW that is all it needs: see TCPDUMP_CAPABILITIES and deploy/agent/daemonset.yaml.
    const args = ['-i', target.iface, '-w', '-', '-n', '-Z', 'root', '-B', '4096'];
    if (target.snapLen !== undefined) args.push('-s', String(target.snapLen));
    if (target.bpf) args.push(target.bpf);
    let child: ChildProcess;
    try {
      // Detached: its own process group, so a stop reaches whatever it started too.
      const [file, argv] = opts.stdbuf ? [opts.stdbuf, ['-o', String(STDIO_BUFFER_BYTES), opts.tcpdump, ...args]] : [opts.tcpdump, args];
      child = spawn(file, argv, { stdio: ['ignore', output, 'pipe'], detached: true });
    } catch (err) {
      throw new Error(`cannot start tcpdump: ${(err as Error).message}`);
    }
    return new TcpdumpProcess(child, target, opts, hooks);
  }

  private constructor(
    private readonly child: ChildProcess,
    private readonly target: TcpdumpTarget,
    private readonly opts: TcpdumpOptions,
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

  /**
   * Runs `op` while tcpdump is stopped, in turn with the flush signals (never both at once).
   * False when it is not running, or could not be stopped now.
   */
  async whileStopped(op: () => Promise<void>): Promise<boolean> {
    const pid = this.child.pid;
    while (this.signalling) await this.signalled;
    if (pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return false;
    this.signalling = true;
    let done!: () => void;
    this.signalled = new Promise<void>((resolve) => (done = resolve));
    try {
      return (await whileStopped(pid, op)).ran;
    } finally {
      this.signalling = false;
      done();
    }
  }

  /** How it ended, from what it said; asked once the exit is known and its stderr read. */
  end(exit: { code: number | null; signal: NodeJS.Signals | null }): TcpdumpEnd {
    if (this.spawnError) {
      const failure = (this.spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `tcpdump not found ("${this.opts.tcpdump}")` : `cannot start tcpdump: ${this.spawnError.message}`;
      return { spawnFailure: failure, reason: failure, interfaceGone: false };
    }
    // stdbuf could not run tcpdump (it says so, and exits 127 or 126).
    const notRun = /stdbuf: failed to run command .*: (.*)/.exec(this.stderr);
    if (this.opts.stdbuf && notRun && (exit.code === 127 || exit.code === 126)) {
      const failure = exit.code === 127 ? `tcpdump not found ("${this.opts.tcpdump}")` : `cannot start tcpdump: ${notRun[1]!.trim()}`;
      return { spawnFailure: failure, reason: failure, interfaceGone: false };
    }
    const why = this.stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tcpdump:') && !l.includes('listening on') && !COUNTS_LINE.test(l)).pop();
    return {
      reason: why ? withPrivilegeHint(why) : `tcpdump exited (${exit.signal ?? `code ${exit.code}`})`,
      interfaceGone: why !== undefined && INTERFACE_GONE.test(why),
    };
  }

  /** stderr: when it listens (its signal handlers are in place), its counts, its last words. */
  private heard(d: Buffer): void {
    const before = this.stderr.length;
    this.stderr = (this.stderr + d.toString()).slice(-4096);
    this.countsFrom = Math.max(0, this.countsFrom - (before + d.length - this.stderr.length));
    // Signals only once tcpdump has said it listens (SIGUSR1 or SIGUSR2 before would end it).
    if (!this.signalTimer && this.stderr.includes('listening on')) this.signalTimer = setInterval(() => void this.tick(), TCPDUMP_FLUSH_MS);
    // SIGUSR1's one line, or the three lines it prints when it ends.
    const text = this.stderr.slice(this.countsFrom);
    const line = COUNTS_LINE.exec(text);
    const ended = ENDED_COUNTS.exec(text);
    const m = line ?? ended;
    if (!m) return;
    this.countsFrom += m.index + m[0].length;
    const counts = { captured: Number(m[1]), received: Number(m[2]), dropped: Number(m[3]) };
    this.hooks.counts(counts);
    if (this.askedAt !== undefined) {
      // Nothing waiting in the ring (it holds packets in blocks until a block fills or
      // libpcap's timeout retires it): all it had is in tcpdump's buffer, flushed by the
      // SIGUSR2 that ran right after (signals are handled lowest number first).
      if (counts.received - counts.dropped === counts.captured) this.emptyAt = this.askedAt;
      this.askedAt = undefined;
    }
  }

  /**
   * Every flush tick: SIGUSR2 (and SIGUSR1 for the counts), only while tcpdump waits for
   * packets: its handlers use stdio, which a signal mid-write would corrupt (parked-signal.ts).
   */
  private async tick(): Promise<void> {
    const pid = this.child.pid;
    // Stopping: SIGINT is on its way, and nothing may continue a tcpdump someone stopped.
    if (this.signalling || pid === undefined || this.hooks.stopping() || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const statsDue = Date.now() - this.statsAt >= (this.opts.statsIntervalMs ?? 5000) || this.hooks.countsWanted();
    // A whole stdio buffer since the last tick: tcpdump flushed by itself meanwhile,
    // so what it holds is younger than the tick; a busy capture is not stopped four times a
    // second for nothing (each stop costs /proc reads and two context switches).
    const flushedItself = this.hooks.writtenSinceTick() >= (this.opts.stdbuf ? STDIO_BUFFER_BYTES : GLIBC_BUFFER_BYTES);
    if (flushedItself && !statsDue) return;
    this.signalling = true;
    let done!: () => void;
    this.signalled = new Promise<void>((resolve) => (done = resolve));
    try {
      const at = Date.now();
      // Parked again: the handlers of the last signals have run, its flush included.
      const result = await signalWhenParked(pid, ['SIGUSR2', 'SIGUSR1']);
      if (result === 'sent') {
        if (this.emptyAt !== undefined) this.hooks.flushedThrough(this.emptyAt);
        this.emptyAt = undefined;
        // Counts asked earlier and not heard yet answer that earlier ask (lines come in order):
        // a later time would claim more than they prove.
        this.askedAt ??= at;
        this.statsAt = at;
      }
      if (result === 'unreadable' && !this.unreadable) {
        this.unreadable = true;
        this.opts.log.warn(this.target.logContext, 'cannot read tcpdump\'s /proc/<pid>/syscall: packets reach the file when tcpdump\'s buffer fills, not within a second');
      }
    } finally {
      this.signalling = false;
      done();
    }
  }
}

/**
 * tcpdump's stdio buffer, through stdbuf (glibc's own is st_blksize: 4 KiB on ext4, xfs and
 * tmpfs). What it holds reaches the file at the next flush signal at the latest.
 */
export const STDIO_BUFFER_BYTES = 262_144;
const GLIBC_BUFFER_BYTES = 4096;
const COUNTS_LINE = /(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel/;
const ENDED_COUNTS = /(\d+) packets? captured\n(\d+) packets? received by filter\n(\d+) packets? dropped by kernel/;
