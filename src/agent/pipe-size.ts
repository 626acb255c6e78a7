// Grows the pipe a busy tcpdump writes into (docs/agent.md, "Capture at tcpdump's cost").
//
// A pipe holds 64 KiB. tcpdump writes its 256 KiB output buffer in one write(), so each
// flush cost the agent at least four wake-ups, each an epoll return, a read and two context
// switches: at 50 000 packets/s, perf put a third of the agent's capture CPU there.
// With a 1 MiB pipe the whole buffer goes in at once and the agent wakes once for it.
//
// Node has no fcntl(2), so F_SETPIPE_SZ is done by perl (perl-base is Essential in Debian,
// and the agent image names it), given the agent's end of the pipe: the size belongs to the
// pipe, whoever sets it. The kernel may refuse: above /proc/sys/fs/pipe-max-size, or once
// the user's pipes exceed fs.pipe-user-pages-soft, both without CAP_SYS_RESOURCE, which the
// agent does not have. The capture then goes on at 64 KiB, costing CPU, not packets.
import { spawn } from 'node:child_process';

/** Linux's fcntl commands (F_LINUX_SPECIFIC_BASE + 7 and + 8, the same on every architecture). */
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;

const SCRIPT = [
  'open(my $p, "<&=", 3) or die "fd 3: $!\\n";',
  `defined(fcntl($p, ${F_SETPIPE_SZ}, int($ARGV[0]))) or die "F_SETPIPE_SZ: $!\\n";`,
  `my $n = fcntl($p, ${F_GETPIPE_SZ}, 0); defined($n) or die "F_GETPIPE_SZ: $!\\n";`,
  'print $n + 0, "\\n";',
].join(' ');

export class PipeResizeError extends Error {
  override name = 'PipeResizeError';
}

/**
 * Sets the capacity of the pipe `fd` belongs to (the kernel rounds it up to a power of two
 * of pages) and returns the capacity it now has.
 */
export async function resizePipe(fd: number, bytes: number, timeoutMs = 5000): Promise<number> {
  return await new Promise((resolve, reject) => {
    // The pipe goes in as fd 3, not as stdin: libuv makes a child's fds 0-2 blocking, and
    // O_NONBLOCK belongs to the open file the agent shares with the child, so the agent's
    // next read of an empty pipe would block its whole event loop.
    const child = spawn('perl', ['-e', SCRIPT, String(bytes)], { stdio: ['ignore', 'pipe', 'pipe', fd], timeout: timeoutMs });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-1024)));
    child.once('error', (e: NodeJS.ErrnoException) => reject(new PipeResizeError(e.code === 'ENOENT' ? 'perl not found (it sets the pipe\'s size)' : `cannot run perl: ${e.message}`)));
    child.once('close', (code, signal) => {
      const size = Number(out.trim());
      if (code === 0 && Number.isSafeInteger(size) && size > 0) resolve(size);
      else reject(new PipeResizeError(err.trim() || `perl ended (${signal ?? `code ${code}`})`));
    });
  });
}

/**
 * Whether a capture is busy enough to grow its pipe: a full output buffer per tick interval,
 * as a rate. Bytes received over a tick that came late (a loaded node runs its timers
 * behind) are spread over the time that really passed, so a quiet capture on a busy node
 * does not look busy.
 */
export function busyForPipe(receivedBytes: number, elapsedMs: number, tickMs: number, bufferBytes: number): boolean {
  return (receivedBytes * tickMs) / Math.max(tickMs, elapsedMs) >= bufferBytes;
}
