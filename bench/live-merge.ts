// npm run bench:live-merge — the gateway's live merge alone (src/gateway/live-merge.ts), in
// one process, no network: N nodes' live pcapng streams, written in advance with interleaved
// timestamps and a final watermark, merged until every packet has gone. It prints packets per
// second of merge for 2 nodes (the ratio's baseline, in the same run) and for many: the cost a
// packet pays for the number of nodes.
//
//   npm run bench:live-merge [-- --packets 200000 --nodes 2,100,1000]
import { PassThrough, Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { liveMerge, type LiveNode } from '../src/gateway/live-merge.js';
import { interfaceDescriptionBlock, PacketEncoder, sectionHeaderBlock, watermarkBlock } from '../src/pcap/pcapng.js';
import { BlockType, PcapngBlockReader } from '../src/pcap/pcapng-reader.js';
import { dnsQueryFrame } from '../test/harness/pcap-fixtures.js';
import { runBench } from './lib.js';

const { values: args } = parseArgs({
  options: {
    packets: { type: 'string', default: '200000' },
    nodes: { type: 'string', default: '2,100,1000' },
  },
});
const PACKETS = Number(args.packets);
const NODE_COUNTS = args.nodes.split(',').map(Number);
const BASE = 1_700_000_000_000_000;
const UID = '00000000-0000-4000-8000-000000000001';
const FRAME = dnsQueryFrame('192.0.2.10', '192.0.2.53', 40000, 1, 'x.example');

/** One node's whole live stream: its section, one interface, its packets (every n-th µs from `offset`), a final watermark. */
function nodeStream(node: string, packets: number, offset: number, step: number): Buffer {
  const enc = new PacketEncoder(1 << 20);
  const parts: Buffer[] = [sectionHeaderBlock({ application: 'agent' }), interfaceDescriptionBlock({ linkType: 1, snapLen: 65535, tsresol: 6, name: `${node}/shop/web-${node}/eth0`, description: `k8s.node=${node};k8s.namespace=shop;k8s.pod=web-${node};k8s.capture=cap;k8s.pod.uid=${UID}` })];
  for (let i = 0; i < packets; i++) {
    const us = BASE + offset + i * step;
    const full = enc.packet(0, Math.floor(us / 4294967296), us % 4294967296, FRAME, FRAME.length);
    if (full) parts.push(Buffer.from(full));
  }
  const rest = enc.take();
  if (rest) parts.push(Buffer.from(rest));
  parts.push(watermarkBlock(BigInt(BASE + offset + packets * step)));
  return Buffer.concat(parts);
}

async function mergeOnce(nodeCount: number): Promise<{ packets: number; seconds: number }> {
  const per = Math.floor(PACKETS / nodeCount);
  const streams = Array.from({ length: nodeCount }, (_, i) => nodeStream(`node-${i}`, per, i, nodeCount));
  const nodes: LiveNode[] = streams.map((bytes, i) => ({
    node: `node-${i}`,
    // The stream stays open after its bytes, as an agent's does; the merge ends on `finished`.
    open: async () => {
      const body = new PassThrough();
      body.write(bytes);
      return body;
    },
  }));
  const abort = new AbortController();
  const started = process.hrtime.bigint();
  const gen = liveMerge({
    namespace: 'shop', capture: 'cap', application: 'bench', comment: 'bench', sinceMicros: BASE,
    nodes: async () => ({ nodes, finished: true }), signal: abort.signal, log: pino({ level: 'silent' }),
    refreshMs: 60_000, staleMs: 60_000, keepAliveMs: 60_000, maxQueuedBytes: 64 * 1024 * 1024,
  });
  let packets = 0;
  const r = new PcapngBlockReader(Readable.from(gen), 'merged');
  while (await r.next()) {
    if (r.type === BlockType.EPB && ++packets === per * nodeCount) abort.abort();
  }
  return { packets, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

async function main(): Promise<void> {
  const results: { nodes: number; rate: number }[] = [];
  for (const n of NODE_COUNTS) {
    await mergeOnce(n); // warm-up
    const { packets, seconds } = await mergeOnce(n);
    results.push({ nodes: n, rate: packets / seconds });
    process.stdout.write(`${n} nodes: ${packets} packets merged in ${seconds.toFixed(2)} s, ${(packets / seconds / 1000).toFixed(0)} k packets/s\n`);
  }
  const base = results[0]!;
  process.stdout.write(`\nrate against ${base.nodes} nodes (same run): ${results.map((r) => `${r.nodes} nodes ${(r.rate / base.rate).toFixed(2)}`).join(', ')}\n`);
}

runBench(main);
