// Signals to tcpdump only while it waits for packets (docs/agent.md, "Capture at tcpdump's
// cost").
//
// tcpdump flushes its output on SIGUSR2 and prints its drop counts on SIGUSR1, from signal
// handlers that call stdio. A handler that runs while the main loop is inside fwrite() of a
// packet (the copy into the stdio buffer done, the buffer's pointer not yet moved) writes
// bytes twice: measured, a stream of 300 000 packets with a SIGUSR2 every 500 ms broke within
// seconds ("a record claims 8373292 bytes"). So the agent sends them only while tcpdump is
// parked in poll(): it stops tcpdump (SIGSTOP), and once the kernel says it is stopped reads
// which system call it is in (/proc/<pid>/syscall); only inside poll/ppoll, where no stdio is
// in progress, are the signals queued; SIGCONT then lets the handlers run as poll returns.
// A stopped process cannot move, so the check cannot race. tcpdump is the agent's child and
// runs as its user, so neither CAP_KILL nor CAP_SYS_PTRACE is needed (Yama allows a parent).
// The wait for the stop to take yields to the event loop (on a busy node the stop can take a
// few milliseconds to be scheduled), and tcpdump is continued whatever happens; while it is
// stopped the kernel's capture ring (-B) keeps its packets.
import { readFileSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * poll and ppoll on x86_64; ppoll on arm64 (73), which has no poll. And restart_syscall
 * (219; 128 on arm64): a poll interrupted by a stop (someone's SIGSTOP and SIGCONT) goes on
 * through it, still waiting for packets; without it such a tcpdump was never flushed again.
 */
const WAITING_SYSCALLS = process.arch === 'arm64' ? new Set(['73', '128']) : new Set(['7', '271', '219']);
/**
 * How long the stop may take to be scheduled before tcpdump is let go for this round. The
 * wait yields to the event loop; on a loaded node (two cores building images beside the
 * capture, in CI) a woken tcpdump took more than 50 ms to reach its stop often enough that
 * no proof was made for seconds. Stopped longer, tcpdump loses nothing: the ring keeps the
 * packets.
 */
const STOP_WAIT_MS = 1000;

export type ParkedSignalResult = 'sent' | 'busy' | 'gone' | 'unreadable';

export async function signalWhenParked(pid: number, signals: NodeJS.Signals[]): Promise<ParkedSignalResult> {
  // Stopped by someone else (a debugger, an operator): theirs to continue, not ours ('busy').
  const r = await whileStopped(pid, async (): Promise<ParkedSignalResult> => {
    let syscall: string;
    try {
      syscall = readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0] ?? '';
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'gone' : 'unreadable';
    }
    if (!WAITING_SYSCALLS.has(syscall)) return 'busy';
    try {
      for (const s of signals) process.kill(pid, s);
    } catch {
      return 'gone';
    }
    return 'sent';
  });
  return r.ran ? r.value : r.why;
}

function stateOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.charAt(stat.lastIndexOf(')') + 2);
}

/**
 * Runs `op` while tcpdump is stopped (SIGSTOP, seen stopped by the kernel), and continues it
 * whatever happens: a rotation moves the bytes tcpdump wrote after the cut while no more can
 * come (tcpdump-files.ts). A write(2) to a regular file is not split by a stop, so the file's
 * size is settled once the process is. 'busy' when the stop did not take within the wait (a
 * write hanging on the disk), or someone else had stopped it; `op` did not run then.
 */
export async function whileStopped<T>(pid: number, op: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false; why: 'busy' | 'gone' }> {
  try {
    if (stateOf(pid) === 'T') return { ran: false, why: 'busy' };
    process.kill(pid, 'SIGSTOP');
  } catch {
    return { ran: false, why: 'gone' };
  }
  try {
    const deadline = Date.now() + STOP_WAIT_MS;
    let stopped = stateOf(pid) === 'T';
    while (!stopped && Date.now() < deadline) {
      await nextTurn();
      stopped = stateOf(pid) === 'T';
    }
    if (!stopped) return { ran: false, why: 'busy' };
    return { ran: true, value: await op() };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (err as NodeJS.ErrnoException).path?.startsWith('/proc/')) return { ran: false, why: 'gone' };
    throw err;
  } finally {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
}
