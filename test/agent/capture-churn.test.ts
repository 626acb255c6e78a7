// Pods come and go: a pod created after the capture started is captured within 2 s of
// getting its IP; a pod deleted and recreated under the same labels is captured again;
// a pod whose labels change stops and starts being captured.
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { queryCounts, startDnsSender } from '../harness/dns-sender.js';
import { createPodObject, deletePodObject } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c);
const node1 = w.nodes[0]!;
await w.addPod(node1, 'logging-a', { app: 'logging' });
await w.applyCapture('dns', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
await w.waitForState('dns', 'node-1', 'WaitingForTraffic');
const dir = w.captureDir('node-1', 'dns');

t.test('a pod created after the capture started is captured within 2 s of getting its IP', async (t) => {
  // The pod's network exists and it is already sending before the API server knows its IP,
  // as when a kubelet reports the IP after the CNI has run.
  const pod = await w.topo.addPod(node1, w.ns, 'logging-scaled');
  startDnsSender(t, pod, w.dns.ip, 'scaled', 0, 50, w.logDir);
  const ipKnownAt = Date.now() / 1000;
  await createPodObject(c, { namespace: w.ns, name: pod.name, node: w.nodeName('node-1'), ip: pod.ip, labels: { app: 'logging' } });
  const file = `logging-scaled_${pod.hostIface}.pcap`;
  await waitFor(async () => (await captureFiles(dir)).includes(file), { what: 'the new pod\'s file', timeoutMs: 10_000 });
  const first = await waitFor(async () => {
    const packets = (await readCaptureDir(dir)).get(file) ?? [];
    return packets[0];
  }, { what: 'a captured packet of the new pod', timeoutMs: 10_000 });
  const delay = first.time - ipKnownAt;
  t.ok(delay <= 2, `first packet captured ${(delay * 1000).toFixed(0)} ms after the pod got its IP (at most 2000 ms)`);
});

t.test('a pod deleted and recreated (new IP) under the same labels is captured again', async (t) => {
  const old = await w.addPod(node1, 'logging-crashy', { app: 'logging' });
  await waitFor(async () => {
    await dig(old, w.dns.ip, 'before-crash.storefront.example');
    return allPackets(await readCaptureDir(dir)).some((p) => p.query === 'before-crash.storefront.example');
  }, { what: 'the first incarnation\'s query to be captured', timeoutMs: 10_000, intervalMs: 300 });
  await deletePodObject(c, w.ns, 'logging-crashy');
  await w.topo.removePod(old);
  const again = await w.addPod(node1, 'logging-crashy', { app: 'logging' });
  t.not(again.ip, old.ip, `a new IP (${old.ip} -> ${again.ip})`);
  await waitFor(async () => {
    await dig(again, w.dns.ip, 'after-crash.storefront.example');
    return allPackets(await readCaptureDir(dir)).some((p) => p.query === 'after-crash.storefront.example' && p.src === again.ip);
  }, { what: 'the recreated pod\'s queries to be captured', timeoutMs: 15_000, intervalMs: 300 });
  const files = await captureFiles(dir);
  t.ok(files.some((f) => f.startsWith(`logging-crashy_${again.hostIface}-`)), 'the first incarnation\'s file was rotated, kept and still readable');
  t.ok(allPackets(await readCaptureDir(dir)).some((p) => p.query === 'before-crash.storefront.example'), 'its packets are still there');
});

t.test('a pod whose labels change stops, then starts again, being captured', async (t) => {
  const pod = await w.addPod(node1, 'logging-relabel', { app: 'logging' });
  const sender = startDnsSender(t, pod, w.dns.ip, 'relabel', 0, 50, w.logDir);
  const lastSeq = async () => Math.max(-1, ...(queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'relabel')).keys());
  await waitFor(async () => (await lastSeq()) >= 0, { what: 'the pod to be captured', timeoutMs: 10_000 });
  const pods = async () => (await w.waitForState('dns', 'node-1', 'Capturing')).pods ?? 0;
  const before = await pods();
  const relabel = async (app: string) => await (await c.rest()).request({ method: 'PATCH', path: `/api/v1/namespaces/${w.ns}/pods/logging-relabel`, contentType: 'application/merge-patch+json', body: { metadata: { labels: { app } } } });
  await relabel('web');
  await waitFor(async () => (await pods()) === before - 1, { what: 'the agent to stop capturing the relabelled pod', timeoutMs: 10_000 });
  const stopped = await lastSeq();
  await dig(pod, w.dns.ip, 'while-web.storefront.example');
  await waitFor(async () => (await dig(pod, w.dns.ip, 'while-web-2.storefront.example')).includes('203.0.113.10'), { what: 'the pod to keep talking', timeoutMs: 5000 });
  t.notOk(allPackets(await readCaptureDir(dir)).some((p) => p.query.startsWith('while-web')), 'nothing is captured while the pod is not selected');
  t.equal(await lastSeq(), stopped, 'the file stopped growing');
  await relabel('logging');
  await waitFor(async () => (await lastSeq()) > stopped, { what: 'the pod to be captured again', timeoutMs: 10_000 });
  await sender.stop();
  t.pass('captured again once its label came back');
});
