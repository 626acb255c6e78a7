// PacketCapture filters -> a tcpdump/BPF expression, the way Calico maps them (the
// resource's meaning, shared by the agent that runs tcpdump and the plugin that checks
// flags before it creates anything):
// rules are ORed; in a rule the protocol and the ports are ANDed; ports are ORed;
// "port N" or "portrange A-B"; UDPLite -> "ip proto 136", ICMPv6 -> "icmp6", a number N ->
// "ip proto N". No filters, or any rule without protocol and ports, means all traffic ("").
import type { PacketCaptureRule } from '../kube/packetcapture.js';

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
