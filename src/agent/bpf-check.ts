// Whether tcpdump accepts a filter expression (docs/agent.md, "Filter checks"): run on the
// node, where the tcpdump that will capture is.
import { execFile } from 'node:child_process';
import { FilterError } from '../filters/bpf.js';
import { encodeGlobalHeader } from '../pcap/format.js';

/**
 * The check could not run to a verdict: tcpdump missing, killed by the timeout, or the
 * spawn refused (EAGAIN, ENOMEM, EMFILE). Never a verdict on the filter: the caller retries
 * (docs/agent.md, "Filter checks"). `missing` says tcpdump is not installed at all.
 */
export class FilterCheckFailed extends Error {
  constructor(message: string, readonly missing: boolean) {
    super(message);
    this.name = 'FilterCheckFailed';
  }
}

/**
 * Compiles the expression with tcpdump (-d) so a bad filter is an Error state, not a crash
 * loop. It compiles for an Ethernet capture read from stdin (an empty pcap file), not for a
 * live interface: the check needs no privilege, so a missing capability shows up where
 * capture starts, with tcpdump's own reason, never as a "refused filter".
 * Rejects with FilterError only when tcpdump itself refused the expression.
 */
export async function checkBpf(tcpdump: string, expression: string, timeoutMs = 10_000): Promise<void> {
  if (expression === '') return;
  await new Promise<void>((resolve, reject) => {
    let child: ReturnType<typeof execFile>;
    try {
      child = execFile(tcpdump, ['-d', '-r', '-', expression], { timeout: timeoutMs }, (err, _stdout, stderr) => {
        if (!err) return resolve();
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: NodeJS.Signals | null; code?: string | number };
        if (e.code === 'ENOENT') return reject(new FilterCheckFailed(`tcpdump not found ("${tcpdump}"): install it on the node's image`, true));
        if (typeof e.code === 'string') return reject(new FilterCheckFailed(`cannot run tcpdump to check the filter: ${e.code} (${e.message})`, false));
        if (e.killed || e.signal) return reject(new FilterCheckFailed(`checking the filter with tcpdump did not finish (${e.signal ?? 'killed'} after at most ${timeoutMs} ms)`, false));
        // Only tcpdump's own complaint about the expression is a verdict on the spec.
        const why = stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tcpdump:')).pop();
        if (!why) return reject(new FilterCheckFailed(`tcpdump -d exited with code ${String(e.code)} without saying why`, false));
        reject(new FilterError(`tcpdump refuses the filter "${expression}": ${why.replace(/^tcpdump:\s*/, '')}`));
      });
    } catch (err) {
      // Spawning can throw synchronously (e.g. EAGAIN from fork under a process limit).
      return reject(new FilterCheckFailed(`cannot run tcpdump to check the filter: ${(err as Error).message}`, false));
    }
    child.stdin?.on('error', () => undefined); // tcpdump may exit before reading it all
    child.stdin?.end(encodeGlobalHeader());
  });
}
