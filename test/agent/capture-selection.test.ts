// What gets captured: only pods the selector matches, only in the capture's namespace,
// only the filtered traffic; both nodes' agents report their own status entry.
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c);
const [node1, node2] = w.nodes as [typeof w.nodes[0], typeof w.nodes[0]];
const logA = await w.addPod(node1, 'logging-a', { app: 'logging' });
const logB = await w.addPod(node2, 'logging-b', { app: 'logging' });
const web = await w.addPod(node1, 'web-1', { app: 'web' });
const otherNs = await c.createNamespace('checkout');
const foreign = await w.addPod(node1, 'logging-x', { app: 'logging' }, { namespace: otherNs });
await w.applyCapture('dns', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');

t.test('both agents report their node, WaitingForTraffic then Capturing', async (t) => {
  for (const n of ['node-1', 'node-2']) {
    const e = await w.waitForState('dns', n, 'WaitingForTraffic');
    t.equal(e.pods, 1, `${n}: one matching pod`);
    t.same(e.fileNames, []);
  }
  for (const [pod, i] of [[logA, 0], [logB, 1]] as const) await dig(pod, w.dns.ip, `first-${i}.storefront.example`);
  for (const n of ['node-1', 'node-2']) {
    const e = await w.waitForState('dns', n, 'Capturing');
    t.equal(e.fileNames?.length, 1, `${n}: one file`);
    t.match(e.directory, new RegExp(`/${w.ns}/dns$`));
  }
});

t.test('only matching pods of the capture\'s namespace, and only UDP port 53', async (t) => {
  for (const pod of [logA, logB, web, foreign]) {
    for (let i = 0; i < 3; i++) await dig(pod, w.dns.ip, `${pod.name}-udp-${i}.storefront.example`);
    await dig(pod, w.dns.ip, `${pod.name}-tcp.storefront.example`, { tcp: true });
    await dig(pod, w.dns.ip, `${pod.name}-5353.storefront.example`, { port: 5353 });
  }
  const dir1 = w.captureDir('node-1', 'dns');
  const dir2 = w.captureDir('node-2', 'dns');
  await waitFor(async () => {
    const p = allPackets(await readCaptureDir(dir1)).concat(allPackets(await readCaptureDir(dir2)));
    return p.filter((x) => x.query.endsWith('-udp-2.storefront.example')).length >= 4; // queries and answers of both
  }, { what: 'the last queries to be written', timeoutMs: 15_000 });
  t.same(await captureFiles(dir1), [`logging-a_${logA.hostIface}.pcap`], 'node-1: only logging-a (not web-1, not the other namespace\'s logging-x)');
  t.same(await captureFiles(dir2), [`logging-b_${logB.hostIface}.pcap`], 'node-2: only logging-b (not coredns)');
  const packets = [...allPackets(await readCaptureDir(dir1)), ...allPackets(await readCaptureDir(dir2))];
  t.ok(packets.length >= 16, `${packets.length} packets`);
  for (const p of packets) {
    t.equal(p.proto, 'DNS', 'DNS only');
    t.ok(p.srcPort === 53 || p.dstPort === 53, 'port 53 only');
    t.ok([logA.ip, logB.ip].includes(p.src) || [logA.ip, logB.ip].includes(p.dst), `to or from a logging pod: ${p.src} -> ${p.dst}`);
  }
  const queries = new Set(packets.map((p) => p.query));
  for (const pod of [logA, logB]) for (let i = 0; i < 3; i++) t.ok(queries.has(`${pod.name}-udp-${i}.storefront.example`), `${pod.name} query ${i} captured`);
  t.notOk([...queries].some((q) => q.includes('-tcp.') || q.includes('-5353.')), 'no TCP and no other UDP port');
  t.notOk([...queries].some((q) => q.startsWith('web-1') || q.startsWith('logging-x')), 'nothing of the other pods');
});

t.test('the files are served through the gateway path layout', async (t) => {
  const entry = await w.waitForState('dns', 'node-1', 'Capturing');
  t.equal(entry.directory, join(w.captureDir('node-1', 'dns')));
  t.ok((entry.packets ?? 0) > 0 && (entry.bytes ?? 0) > 0, `counters: ${entry.packets} packets, ${entry.bytes} bytes`);
});
