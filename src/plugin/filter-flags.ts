// `--filter udp:53 --filter tcp:80-90,443`: one PacketCapture filter rule per flag, in
// tcpdump's spelling (lower-case protocol, "-" for a range) for the people who type them,
// written in Calico's (TCP, "80:90") for the resource.
import { filtersToBpf, FilterError } from '../filters/bpf.js';
import type { PacketCaptureRule } from '../kube/packetcapture.js';

const PROTOCOLS: Record<string, string> = { tcp: 'TCP', udp: 'UDP', icmp: 'ICMP', icmpv6: 'ICMPv6', icmp6: 'ICMPv6', sctp: 'SCTP', udplite: 'UDPLite' };

export class FilterFlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterFlagError';
  }
}

/** One rule from `PROTO[:PORTS]`, `:PORTS` (any protocol) or an IP protocol number. */
export function filterRule(flag: string): PacketCaptureRule {
  const m = /^([^:]*)(?::(.*))?$/.exec(flag.trim())!;
  const proto = m[1]!.trim();
  const ports = m[2];
  const rule: PacketCaptureRule = {};
  if (proto !== '') {
    if (/^\d+$/.test(proto)) rule.protocol = Number(proto);
    else {
      const named = PROTOCOLS[proto.toLowerCase()];
      if (!named) throw new FilterFlagError(`--filter ${flag}: unknown protocol "${proto}" (tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255)`);
      rule.protocol = named;
    }
  }
  if (ports !== undefined) {
    if (ports.trim() === '') throw new FilterFlagError(`--filter ${flag}: no port after ":"`);
    rule.ports = ports.split(',').map((p) => {
      const t = p.trim();
      if (/^\d+$/.test(t)) return Number(t);
      const range = /^(\d+)-(\d+)$/.exec(t);
      if (range) return `${range[1]}:${range[2]}`;
      throw new FilterFlagError(`--filter ${flag}: "${t}" is neither a port nor a range FROM-TO`);
    });
  }
  if (rule.protocol === undefined && rule.ports === undefined) throw new FilterFlagError(`--filter needs a protocol, ports or both, e.g. udp:53, tcp:80-90, :443 or icmp`);
  try {
    filtersToBpf([rule]);
  } catch (err) {
    if (err instanceof FilterError) throw new FilterFlagError(`--filter ${flag}: ${err.message.replace(/^filters\[0\](\.ports\[\d+\])?: /, '')}`);
    throw err;
  }
  return rule;
}

/** How a rule reads in tables: tcpdump's spelling again. */
export function describeRule(rule: PacketCaptureRule): string {
  const proto = rule.protocol === undefined ? '' : String(rule.protocol).toLowerCase();
  const ports = (rule.ports ?? []).map((p) => String(p).replace(':', '-')).join(',');
  return ports ? `${proto}:${ports}` : proto;
}
