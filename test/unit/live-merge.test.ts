// The gateway's live merge (src/gateway/live-merge.ts) over node streams written block by
// block as the agents write them: a packet waits only for nodes whose watermark has not
// passed it, a quiet node stops holding the others back, a late packet is still delivered
// (out of order, never dropped), a broken node stream is said so and asked again without a
// second interface block, and the stream ends when the capture is gone.
import { PassThrough, Readable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { liveMerge, type LiveNode } from '../../src/gateway/live-merge.js';
import { interfaceDescriptionBlock, PacketEncoder, sectionHeaderBlock, watermarkBlock } from '../../src/pcap/pcapng.js';
import { BlockType, parseInterfaceBlock, PcapngBlockReader } from '../../src/pcap/pcapng-reader.js';
import { dnsQueryFrame } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const BASE = 1_700_000_000_000_000;
const UID = '00000000-0000-4000-8000-000000000001';

/** A node's live stream that the test writes into: its section and one pod interface first. */
class FakeAgentStream {
  readonly body = new PassThrough();
  constructor(readonly node: string) {
    this.body.write(sectionHeaderBlock({ application: 'agent' }));
    this.body.write(interfaceDescriptionBlock({ linkType: 1, snapLen: 65535, tsresol: 6, name: `${node}/shop/web-${node}/eth0`, description: `k8s.node=${node};k8s.namespace=shop;k8s.pod=web-${node};k8s.capture=cap;k8s.pod.uid=${UID}` }));
  }
  /** A packet at BASE + ms milliseconds; its DNS id is ms. */
  packet(ms: number): void {
    const enc = new PacketEncoder(4096);
    const frame = dnsQueryFrame('192.0.2.10', '192.0.2.53', 40000, ms, 'x.example');
    const us = BASE + ms * 1000;
    enc.packet(0, Math.floor(us / 4294967296), us % 4294967296, frame, frame.length);
    this.body.write(enc.take());
  }
  watermark(ms: number): void {
    this.body.write(watermarkBlock(BigInt(BASE + ms * 1000)));
  }
}

interface Out { packets: { node: string; ms: number }[]; idbs: string[]; comments: string[]; ended: boolean }

function run(nodes: () => { nodes: LiveNode[]; finished: boolean } | undefined, o: { staleMs?: number } = {}): { out: Out; stop(): void } {
  const abort = new AbortController();
  const out: Out = { packets: [], idbs: [], comments: [], ended: false };
  const gen = liveMerge({
    namespace: 'shop', capture: 'cap', application: 'kube-pcap test', comment: 'live', sinceMicros: BASE,
    nodes: async () => nodes(), signal: abort.signal, log: pino({ level: 'silent' }),
    refreshMs: 50, staleMs: o.staleMs ?? 10_000, keepAliveMs: 60_000,
  });
  void (async () => {
    const r = new PcapngBlockReader(Readable.from(gen), 'merged');
    while (await r.next()) {
      const b = r.block();
      if (r.type === BlockType.IDB) out.idbs.push(parseInterfaceBlock(b, 'x').name);
      if (r.type === BlockType.EPB) out.packets.push({ node: out.idbs[b.readUInt32LE(8)]!.split('/')[0]!, ms: b.readUInt16BE(28 + 14 + 20 + 8) });
      if (r.type === BlockType.ISB) out.comments.push(b.toString('latin1'));
    }
    out.ended = true;
  })().catch(() => undefined);
  return { out, stop: () => abort.abort() };
}

const until = (what: string, cond: () => boolean): Promise<unknown> => waitFor(async () => (cond() ? true : undefined), { what, timeoutMs: 5000, intervalMs: 10 });

t.test('a packet waits only for nodes whose watermark has not passed it; a late one is still delivered', async (t) => {
  const a = new FakeAgentStream('node-a');
  const b = new FakeAgentStream('node-b');
  const nodes: LiveNode[] = [a, b].map((s) => ({ node: s.node, open: async () => s.body }));
  const m = run(() => ({ nodes, finished: false }));
  t.teardown(m.stop);
  a.packet(10);
  a.packet(20);
  b.watermark(15);
  await until('node-a\'s packet at 10', () => m.out.packets.length === 1);
  a.watermark(30);
  // node-b has said nothing past 15: node-a's packet at 20 must wait for it, so that node-b's
  // packet at 18, sent only now, still comes before it.
  b.packet(18);
  b.watermark(25);
  await until('the packets up to 20', () => m.out.packets.length === 3);
  t.same(m.out.packets, [{ node: 'node-a', ms: 10 }, { node: 'node-b', ms: 18 }, { node: 'node-a', ms: 20 }], 'in time order across nodes');
  // Behind what has been sent: out of order, but never dropped.
  b.packet(12);
  await until('the late packet', () => m.out.packets.length === 4);
  t.same(m.out.packets[3], { node: 'node-b', ms: 12 });
});

t.test('a node that has gone quiet does not hold the others back', async (t) => {
  const a = new FakeAgentStream('node-a');
  const b = new FakeAgentStream('node-b');
  const nodes: LiveNode[] = [a, b].map((s) => ({ node: s.node, open: async () => s.body }));
  const m = run(() => ({ nodes, finished: false }), { staleMs: 300 });
  t.teardown(m.stop);
  b.watermark(5);
  a.packet(10);
  a.watermark(20);
  await until('node-a\'s packet, once node-b has been quiet for the stale time', () => m.out.packets.length === 1);
  t.same(m.out.packets, [{ node: 'node-a', ms: 10 }]);
});

t.test('a broken node stream is said so and asked again from its last packet, without a second interface block', async (t) => {
  const first = new FakeAgentStream('node-a');
  const second = new FakeAgentStream('node-a');
  const asked: number[] = [];
  const nodes: LiveNode[] = [{ node: 'node-a', open: async (since) => (asked.push(since), asked.length === 1 ? first.body : second.body) }];
  const m = run(() => ({ nodes, finished: false }));
  t.teardown(m.stop);
  first.packet(10);
  first.watermark(10);
  await until('the first packet', () => m.out.packets.length === 1);
  first.body.end(); // the agent went away
  await until('the node to be asked again', () => asked.length === 2);
  t.equal(asked[1], BASE + 10_000 + 1, 'from just after its last packet');
  second.packet(11);
  second.watermark(11);
  await until('the packet after the reconnection', () => m.out.packets.length === 2);
  t.same(m.out.idbs, ['node-a/shop/web-node-a/eth0'], 'the same interface, announced once');
  t.ok(m.out.comments.some((c) => /node node-a: its live stream broke/.test(c)), 'the break is said on the node\'s interface');
});

t.test('the stream ends when the capture is gone', async (t) => {
  const a = new FakeAgentStream('node-a');
  let present = true;
  const m = run(() => (present ? { nodes: [{ node: 'node-a', open: async () => a.body }], finished: false } : undefined));
  t.teardown(m.stop);
  a.packet(1);
  a.watermark(1);
  await until('the packet', () => m.out.packets.length === 1);
  present = false;
  await until('the end of the stream', () => m.out.ended);
  t.pass('ended');
});

t.test('a capture already finished when the stream begins still delivers what its nodes hold (?since)', async (t) => {
  const a = new FakeAgentStream('node-a');
  a.packet(1);
  a.packet(2);
  // The agent's watermark is its clock (less a lag): past the moment the capture was seen finished.
  a.body.write(watermarkBlock(BigInt((Date.now() + 1000) * 1000)));
  let opened = false;
  const m = run(() => ({ nodes: [{ node: 'node-a', open: async () => {
    // The node answers after the merge has already learnt that the capture finished.
    await new Promise((r) => setTimeout(r, 300));
    opened = true;
    return a.body;
  } }], finished: true }));
  t.teardown(m.stop);
  await until('the end of the stream', () => m.out.ended);
  t.ok(opened, 'the node was heard');
  t.same(m.out.packets, [{ node: 'node-a', ms: 1 }, { node: 'node-a', ms: 2 }], 'every packet it held, then the end');
});
