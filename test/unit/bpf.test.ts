// Filters -> BPF, as Calico maps them, and every expression accepted by tcpdump -d.
import t from 'tap';
import { checkBpf } from '../../src/agent/bpf-check.js';
import { FilterError, filtersToBpf } from '../../src/filters/bpf.js';

const table: [unknown, string][] = [
  [undefined, ''],
  [[], ''],
  [[{ protocol: 'UDP', ports: [53] }], '(udp and (port 53))'],
  [[{ protocol: 'TCP' }], 'tcp'],
  [[{ protocol: 'ICMP' }], 'icmp'],
  [[{ protocol: 'ICMPv6' }], 'icmp6'],
  [[{ protocol: 'SCTP', ports: ['1000:2000'] }], '(sctp and (portrange 1000-2000))'],
  [[{ protocol: 'UDPLite' }], 'ip proto 136'],
  [[{ protocol: 47 }], 'ip proto 47'],
  [[{ protocol: '17' }], 'ip proto 17'],
  [[{ ports: [80, 443] }], '(port 80 or port 443)'],
  [[{ protocol: 'TCP', ports: [80, '8000:8099', '9000:9000'] }], '(tcp and (port 80 or portrange 8000-8099 or port 9000))'],
  [[{ protocol: 'UDP', ports: [53] }, { protocol: 'TCP', ports: [53] }], '(udp and (port 53)) or (tcp and (port 53))'],
  [[{ protocol: 'UDPLite' }, { protocol: 'ICMP' }], '(ip proto 136) or (icmp)'],
  [[{ protocol: 'TCP' }, {}], ''],
];

t.test('the mapping', async (t) => {
  for (const [filters, expected] of table) t.equal(filtersToBpf(filters as never), expected, JSON.stringify(filters));
});

t.test('tcpdump compiles every mapped expression', async (t) => {
  for (const [filters] of table) {
    const expr = filtersToBpf(filters as never);
    await t.resolves(checkBpf('tcpdump', expr), expr || '(all traffic)');
  }
});

t.test('bad filters are FilterErrors that name the field', async (t) => {
  const bad: [unknown, RegExp][] = [
    [[{ protocol: 'HTTP' }], /filters\[0\]: unknown protocol "HTTP"/],
    [[{ protocol: 256 }], /protocol 256 is not a number from 1 to 255/],
    [[{ protocol: 'TCP', ports: [70000] }], /filters\[0\]\.ports\[0\]: port 70000/],
    [[{ protocol: 'TCP', ports: ['90:80'] }], /port range 90:80/],
    [[{ protocol: 'TCP', ports: ['http'] }], /"http" is neither a port nor a range/],
  ];
  for (const [filters, message] of bad) t.throws(() => filtersToBpf(filters as never), message);
  t.throws(() => filtersToBpf([{ protocol: 'HTTP' }] as never), FilterError);
  await t.rejects(checkBpf('tcpdump', 'udp and port 99999'), /tcpdump refuses the filter/);
  await t.rejects(checkBpf('/nonexistent/tcpdump', 'udp'), /tcpdump not found/);
});
