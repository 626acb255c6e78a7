// PacketCapture filters -> a tcpdump/BPF expression, the way Calico maps them:
// rules are ORed; in a rule the protocol and the ports are ANDed; ports are ORed;
// "port N" or "portrange A-B"; UDPLite -> "ip proto 136", ICMPv6 -> "icmp6", a number N ->
// "ip proto N". No filters, or any rule without protocol and ports, means all traffic ("").
import { execFile } from 'node:child_process';
import type { PacketCaptureRule } from '../kube/packetcapture.js';
import { encodeGlobalHeader } from '../pcap/format.js';

export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

const NAMED: Record<string, string> = {
  TCP: 'tcp',
  UDP: 'udp',
  ICMP: 'icmp',
  ICMPv6: 'icmp6',
  SCTP: 'sctp',
  UDPLite: 'ip proto 136',
};

function protocolExpr(p: string | number, where: string): string {
  if (typeof p === 'number' || /^\d+$/.test(p)) {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 255) throw new FilterError(`${where}: protocol ${p} is not a number from 1 to 255`);
    return `ip proto ${n}`;
  }
  const named = NAMED[p];
  if (!named) throw new FilterError(`${where}: unknown protocol "${p}" (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1..255)`);
  return named;
}

function portExpr(port: string | number, where: string): string {
  const text = String(port);
  const single = /^\d{1,5}$/.exec(text);
  if (single) {
    const n = Number(text);
    if (n < 1 || n > 65535) throw new FilterError(`${where}: port ${n} is not from 1 to 65535`);
    return `port ${n}`;
  }
  const range = /^(\d{1,5}):(\d{1,5})$/.exec(text);
  if (range) {
    const [a, b] = [Number(range[1]), Number(range[2])];
    if (a < 1 || b > 65535 || a > b) throw new FilterError(`${where}: port range ${text} is not "from:to" with 1 <= from <= to <= 65535`);
    return a === b ? `port ${a}` : `portrange ${a}-${b}`;
  }
  throw new FilterError(`${where}: "${text}" is neither a port nor a range "from:to"`);
}

export function filtersToBpf(filters: readonly PacketCaptureRule[] | undefined): string {
  if (!filters || filters.length === 0) return '';
  const rules: string[] = [];
  for (const [i, rule] of filters.entries()) {
    const where = `filters[${i}]`;
    const parts: string[] = [];
    if (rule.protocol !== undefined && rule.protocol !== null) parts.push(protocolExpr(rule.protocol, where));
    if (rule.ports && rule.ports.length > 0) parts.push(`(${rule.ports.map((p, j) => portExpr(p, `${where}.ports[${j}]`)).join(' or ')})`);
    // A rule that constrains nothing matches every packet, and so does the whole filter.
    if (parts.length === 0) return '';
    rules.push(parts.length === 1 ? parts[0]! : `(${parts.join(' and ')})`);
  }
  return rules.length === 1 ? rules[0]! : rules.map((r) => (r.startsWith('(') ? r : `(${r})`)).join(' or ');
}

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
