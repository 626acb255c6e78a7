// The gateway's stage of files.pcapng (src/gateway/pcapng-merge.ts): each node's stream, as
// the agent writes it (src/agent/node-pcapng.ts, from real pcap files), merged into one
// section read by real tshark: interfaces renumbered across nodes, every packet kept, time
// order across nodes (a microsecond node and a nanosecond node compared exactly, a clock
// that steps back kept in its own order), names from every node. And what the gateway refuses
// from an agent: a stream cut inside a block, an interface of another node, a packet on an
// undeclared interface, a name record that is not a pod name.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { nodePcapng, type NodeFile } from '../../src/agent/node-pcapng.js';
import { NodeMerge, NodeStreamError, type NodeStream } from '../../src/gateway/pcapng-merge.js';
import { encodeGlobalHeader } from '../../src/pcap/format.js';
import { interfaceDescriptionBlock, interfaceStatisticsBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock } from '../../src/pcap/pcapng.js';
import { BlockType, parseStatisticsBlock, PcapngBlockReader, PcapngFormatError } from '../../src/pcap/pcapng-reader.js';
import { run } from '../harness/http.js';
import type { TapTest } from '../harness/tap.js';
import { dnsQueryFrame } from '../harness/pcap-fixtures.js';

const BASE_S = 1_700_000_000;

/** A classic pcap file of DNS queries from `ip` at these times (seconds after BASE_S, fractional), in µs or ns. */
function pcapBytes(ip: string, times: number[], nanoseconds = false): Buffer {
  const header = encodeGlobalHeader();
  if (nanoseconds) header.writeUInt32LE(0xa1b23c4d, 0);
  const records = times.map((x, i) => {
    const frame = dnsQueryFrame(ip, '192.0.2.53', 40000, i, `${ip.replace(/\./g, '-')}-${i}.example`);
    const h = Buffer.alloc(16);
    const whole = Math.floor(x);
    h.writeUInt32LE(BASE_S + whole, 0);
    h.writeUInt32LE(Math.round((x - whole) * (nanoseconds ? 1e9 : 1e6)), 4);
    h.writeUInt32LE(frame.length, 8);
    h.writeUInt32LE(frame.length, 12);
    return Buffer.concat([h, frame]);
  });
  return Buffer.concat([header, ...records]);
}

interface Pod { node: string; pod: string; ip: string; times: number[]; nanoseconds?: boolean }

const pods: Pod[] = [
  { node: 'node-a', pod: 'web-0', ip: '192.0.2.10', times: [0.001, 0.005, 0.009, 0.013] },
  // A nanosecond capture: 0.0050000005 is half a microsecond after web-0's 0.005.
  { node: 'node-b', pod: 'web-1', ip: '192.0.2.11', times: [0.002, 0.0050000005, 0.011], nanoseconds: true },
  // A kernel clock that steps back once (0.012 after 0.014).
  { node: 'node-b', pod: 'db-0', ip: '192.0.2.12', times: [0.004, 0.014, 0.012, 0.020] },
  { node: 'node-c', pod: 'cache-0', ip: '192.0.2.13', times: [0.003, 0.0051] },
];

/** A pod's uid, as Kubernetes writes them. */
function uidOf(pod: string): string {
  return `00000000-0000-4000-8000-${Buffer.from(pod).toString('hex').padStart(12, '0').slice(-12)}`;
}

/** Each node's pcapng, as its agent writes it. */
async function nodeStreams(t: TapTest): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'node-merge-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const byNode = new Map<string, NodeFile[]>();
  for (const p of pods) {
    const bytes = pcapBytes(p.ip, p.times, p.nanoseconds);
    const path = join(dir, `${p.pod}_eth0.pcap`);
    await writeFile(path, bytes);
    byNode.set(p.node, [...(byNode.get(p.node) ?? []), {
      name: `${p.pod}_eth0.pcap`, path, size: bytes.length,
      source: { node: p.node, namespace: 'shop', capture: 'cap', pod: p.pod, podUID: uidOf(p.pod), podIPs: [p.ip], iface: 'eth0', linkType: 1, snapLen: 262144, tsresol: p.nanoseconds ? 9 : 6 },
    }]);
  }
  const out = new Map<string, Buffer>();
  for (const [node, files] of byNode) {
    const parts: Buffer[] = [];
    for await (const b of nodePcapng(files, { node, namespace: 'shop', capture: 'cap', application: 'kube-pcap test' })) parts.push(b);
    out.set(node, Buffer.concat(parts));
  }
  return out;
}

/** A node's stream, arriving in chunks of `chunk` bytes (odd sizes cut blocks anywhere). */
function streamOf(node: string, bytes: Buffer, chunk = 333): NodeStream & { released: boolean } {
  const s = {
    node,
    released: false,
    open: async () => {
      const parts: Buffer[] = [];
      for (let o = 0; o < bytes.length; o += chunk) parts.push(bytes.subarray(o, o + chunk));
      return Readable.from(parts);
    },
    done: () => void (s.released = true),
  };
  return s;
}

async function merged(streams: NodeStream[]): Promise<Buffer> {
  const { merge, header } = await NodeMerge.open(streams, { namespace: 'shop', capture: 'cap', application: 'kube-pcap test', comment: 'test section', openConcurrency: 2 });
  const parts = [header];
  for await (const c of merge.packets()) parts.push(c);
  return Buffer.concat(parts);
}

async function tshark(t: TapTest, bytes: Buffer, args: string[]): Promise<string[][]> {
  const dir = await mkdtemp(join(tmpdir(), 'node-merge-out-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'files.pcapng');
  await writeFile(file, bytes);
  const r = await run('tshark', ['-r', file, ...args]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^Running as user/.test(l)).join('\n'), '', 'tshark has nothing to say about the file');
  return r.stdout.trim().split('\n').map((l) => l.split('|'));
}

t.test('three nodes\' streams become one section: every packet, under its node and pod, in time order across nodes', async (t) => {
  const nodes = await nodeStreams(t);
  const streams = [...nodes].map(([node, bytes]) => streamOf(node, bytes));
  const out = await merged(streams);
  t.ok(streams.every((s) => s.released), 'each node is let go once its stream has been read to the end');
  const rows = await tshark(t, out, ['-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_id', '-e', 'frame.interface_name', '-e', 'frame.interface_description', '-e', 'frame.time_epoch', '-e', 'ip.src']);
  t.equal(rows.length, pods.reduce((n, p) => n + p.times.length, 0), 'the sum of every node\'s packets');
  const ids = new Map<string, string>();
  for (const [id, name, description, , src] of rows) {
    const p = pods.find((x) => x.ip === src)!;
    t.equal(name, `${p.node}/shop/${p.pod}/eth0`);
    t.match(description, new RegExp(`^k8s\\.node=${p.node};k8s\\.namespace=shop;k8s\\.pod=${p.pod};k8s\\.capture=cap;k8s\\.pod\\.uid=${uidOf(p.pod)}$`));
    if (ids.has(name!)) t.equal(ids.get(name!), id, `${name} keeps one interface id`);
    ids.set(name!, id!);
  }
  t.equal(new Set(ids.values()).size, pods.length, 'one interface per pod interface across the nodes, none sharing an id');
  // tshark's epoch times, in nanoseconds past BASE_S: the ns node's packet half a µs after web-0's.
  const times = rows.map((r) => Math.round((Number(r[3]!.split('.')[1]!.padEnd(9, '0').slice(0, 9))) + (Number(r[3]!.split('.')[0]) - BASE_S) * 1e9));
  t.same(times, [0.001, 0.002, 0.003, 0.004, 0.005, 0.0050000005, 0.0051, 0.009, 0.011, 0.013, 0.014, 0.012, 0.020].map((x) => Math.round(x * 1e9)), 'time order across nodes, to the nanosecond; the stepped-back packet right after its predecessor');
});

t.test('names from every node\'s name records; capinfos sees one section by kube-pcap with four interfaces', async (t) => {
  const nodes = await nodeStreams(t);
  const out = await merged([...nodes].map(([node, bytes]) => streamOf(node, bytes, 4096)));
  const names = await tshark(t, out, ['-N', 'n', '-T', 'fields', '-e', 'ip.src_host']);
  t.same([...new Set(names.map((r) => r[0]))].sort(), ['cache-0.shop', 'db-0.shop', 'web-0.shop', 'web-1.shop']);
  const dir = await mkdtemp(join(tmpdir(), 'node-merge-cap-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'f.pcapng'), out);
  const r = await run('capinfos', ['-M', join(dir, 'f.pcapng')]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Number of interfaces in file: 4/);
  t.match(r.stdout, /Capture application:\s+kube-pcap test/);
  t.match(r.stdout, /Capture comment:\s+test section/);
  t.match(r.stdout, /Number of packets:\s+13\n/);
});

t.test('however the nodes\' bytes are cut into chunks, the merged file is the same, byte for byte', async (t) => {
  const nodes = await nodeStreams(t);
  const whole = await merged([...nodes].map(([node, bytes]) => streamOf(node, bytes, 1 << 20)));
  // 1 byte at a time, cuts inside the first 12 bytes of a block, blocks across several chunks.
  for (const chunk of [1, 5, 11, 12, 13, 31, 100, 4093]) {
    const out = await merged([...nodes].map(([node, bytes]) => streamOf(node, bytes, chunk)));
    t.ok(out.equals(whole), `chunks of ${chunk} bytes`);
  }
});

/** A node stream written by hand: a section, these interfaces, names and packets. */
function handmade(o: { ifName: string; description: string; names?: string[]; packetInterface?: number; statsComment?: string; packetComment?: string }): Buffer {
  const enc = new PacketEncoder();
  const frame = dnsQueryFrame('192.0.2.10', '192.0.2.53', 40000, 1, 'x.example');
  enc.packet(o.packetInterface ?? 0, 0, 1, frame, frame.length);
  let packet = enc.take()!;
  if (o.packetComment !== undefined) {
    // An option after the packet data: opt_comment, then opt_endofopt.
    const text = Buffer.from(o.packetComment);
    const opt = Buffer.alloc(4 + ((text.length + 3) & ~3) + 4);
    opt.writeUInt16LE(1, 0);
    opt.writeUInt16LE(text.length, 2);
    text.copy(opt, 4);
    const total = packet.length + opt.length;
    packet = Buffer.concat([packet.subarray(0, packet.length - 4), opt, Buffer.alloc(4)]);
    packet.writeUInt32LE(total, 4);
    packet.writeUInt32LE(total, total - 4);
  }
  return Buffer.concat([
    sectionHeaderBlock({ application: 'x' }),
    interfaceDescriptionBlock({ linkType: 1, snapLen: 65535, tsresol: 6, name: o.ifName, description: o.description }),
    nameResolutionBlock([{ ip: '192.0.2.10', names: o.names ?? ['web-0.shop'] }]),
    ...(o.statsComment !== undefined ? [interfaceStatisticsBlock({ interfaceId: 0, timestamp: 1_700_000_000_000_000n, kernelDrops: 7, comment: o.statsComment })] : []),
    packet,
  ]);
}

t.test('an agent\'s words reach the viewer only as one bounded line of printable text', async (t) => {
  const ifName = 'node-a/shop/web-0/eth0';
  const description = 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap';
  const hostile = `\u001b]0;owned\u0007\u001b[31mdrops\u202eeliF\nsecond line ${'x'.repeat(5000)}`;
  const out = await merged([streamOf('node-a', handmade({ ifName, description, statsComment: hostile }))]);
  const r = new PcapngBlockReader(Readable.from([out]), 'merged');
  const comments: string[] = [];
  let drops: number | undefined;
  while (await r.next()) {
    if (r.type !== BlockType.ISB) continue;
    const s = parseStatisticsBlock(r.block(), 'merged');
    if (s.comment !== undefined) comments.push(s.comment);
    drops = s.kernelDrops;
  }
  t.equal(comments.length, 1);
  t.notMatch(comments[0]!, /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/, 'no control character, escape sequence or direction override');
  t.ok(comments[0]!.length <= 256, `at most 256 characters (${comments[0]!.length})`);
  t.match(comments[0]!, /^ \]0;owned \[31mdrops eliF second line x+$/, 'the text itself kept, as one line');
  t.equal(drops, 7, 'the drop count kept');
  const err = await merged([streamOf('node-a', handmade({ ifName, description, packetComment: 'trust me' }))]).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof NodeStreamError, 'a packet with options (a comment per packet) is refused');
  t.match((err as Error).message, /a packet block with options, which the agents do not write/);
});

t.test('what the gateway refuses from an agent, naming the node', async (t) => {
  const good = handmade({ ifName: 'node-a/shop/web-0/eth0', description: 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap' });
  t.ok((await merged([streamOf('node-a', good)])).length > good.length - 200, 'a well-formed stream passes');
  const refused = async (what: string, streams: NodeStream[], pattern: RegExp): Promise<void> => {
    const err = await merged(streams).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof NodeStreamError, `${what}: refused`);
    t.equal((err as NodeStreamError).node, 'node-a', `${what}: names the node`);
    t.ok((err as NodeStreamError).cause instanceof PcapngFormatError, `${what}: as off-contract`);
    t.match((err as Error).message, pattern, what);
  };
  await refused('another node\'s interface', [streamOf('node-a', handmade({ ifName: 'node-b/shop/web-0/eth0', description: 'k8s.node=node-b;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap' }))], /not <node>\/<namespace>\/<pod>\/<iface> of this node and capture/);
  await refused('another namespace\'s interface', [streamOf('node-a', handmade({ ifName: 'node-a/bank/web-0/eth0', description: 'k8s.node=node-a;k8s.namespace=bank;k8s.pod=web-0;k8s.capture=cap' }))], /not <node>\/<namespace>\/<pod>\/<iface>/);
  await refused('an interface name with what Wireshark would show as more', [streamOf('node-a', handmade({ ifName: 'node-a/shop/web-0/eth0\u202e', description: 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap' }))], /not <node>\/<namespace>\/<pod>\/<iface>/);
  await refused('a description of another pod', [streamOf('node-a', handmade({ ifName: 'node-a/shop/web-0/eth0', description: 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=db-0;k8s.capture=cap' }))], /not as this node's pod web-0 in this capture/);
  await refused('a packet on an undeclared interface', [streamOf('node-a', handmade({ ifName: 'node-a/shop/web-0/eth0', description: 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap', packetInterface: 3 }))], /interface 3, which no interface block declared/);
  await refused('a name that is not a pod name', [streamOf('node-a', handmade({ ifName: 'node-a/shop/web-0/eth0', description: 'k8s.node=node-a;k8s.namespace=shop;k8s.pod=web-0;k8s.capture=cap', names: ['evil\u202ename'] }))], /not a pod name/);
  await refused('not pcapng', [streamOf('node-a', Buffer.from('{"kind":"Status"}'.padEnd(64, ' ')))], /little-endian Section Header Block/);
  // Cut after the header: the merge has started, and the error comes from the packets.
  const cut = good.subarray(0, good.length - 10);
  await refused('a stream cut inside a block', [streamOf('node-a', cut)], /ends inside a block/);
});
