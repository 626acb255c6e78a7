// The sources an agent lists with its files (src/gateway/agent-listing.ts) become interface
// names, descriptions and name-resolution entries of a pcapng that Wireshark shows: the
// gateway takes names, IPs and small numbers, and refuses anything else as off-contract.
import t from 'tap';
import { InvalidListingError, parseListing } from '../../src/gateway/agent-listing.js';

const source = { node: 'node-1', namespace: 'shop', capture: 'dns', pod: 'web-0', podUID: '6f1c2a3e-0b1d-4c59-9a57-1f3c2d4e5f60', podIPs: ['192.0.2.10', '2001:db8::10'], iface: 'cali1234abcd', linkType: 1, snapLen: 262144, tsresol: 6 };
const file = (s: unknown) => [{ name: 'web-0_cali1234abcd.pcap', size: 24, modified: '2026-11-27T12:00:00Z', identity: 'a1-b1', ...(s === undefined ? {} : { source: s }) }];

t.test('a valid source is kept; no source is fine (agents older than sources)', async (t) => {
  t.same(parseListing('node-1', file(source))[0]!.source, source);
  t.equal(parseListing('node-1', file(undefined))[0]!.source, undefined);
});

t.test('a source that is not names, IPs and small numbers is refused', async (t) => {
  const bad: [string, Record<string, unknown>][] = [
    ['another node', { node: 'node-2' }],
    ['a pod name with markup', { pod: '<script>' }],
    ['a namespace with a dot', { namespace: 'a.b' }],
    ['an IP that is not one', { podIPs: ['192.0.2.999'] }],
    ['a name as an IP', { podIPs: ['web-0.shop'] }],
    ['an interface with a slash', { iface: 'eth0/../x' }],
    ['a long interface name', { iface: 'a'.repeat(16) }],
    ['a negative link type', { linkType: -1 }],
    ['a snap length of 0', { snapLen: 0 }],
    ['a timestamp resolution of 3', { tsresol: 3 }],
    ['a uid with spaces', { podUID: 'x y' }],
  ];
  for (const [what, change] of bad) {
    t.throws(() => parseListing('node-1', file({ ...source, ...change })), InvalidListingError, what);
  }
  t.throws(() => parseListing('node-1', file('web-0')), InvalidListingError, 'not an object');
});
