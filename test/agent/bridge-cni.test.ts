// Bridge CNIs: a pod's route leads to the node's bridge, not to its veth. The pods here are
// wired by the real bridge CNI plugin through cnitool, which leaves the runtime's CNI result
// cache behind; the agent finds a pod's bridge port there, never in the bridge's neighbour
// or forwarding tables, which a pod can forge (docs/agent.md, "Finding a pod's interface").
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { createPodObject, createScheduledPod } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';
import { reportedEntry } from '../harness/node-reports.js';
import { readFile, readdir } from 'node:fs/promises';

const c = await cluster(t);
const w = await captureWorld(t, c);
const node1 = w.nodes[0]!;
const tenantB = await c.createNamespace('tenant-b');

t.test('a pod on a bridge is captured on its bridge port, found in the CNI result cache', async (t) => {
  const pod = await w.topo.addBridgedPod(node1, w.ns, 'logging-bridged');
  t.match(await node1.ns.exec('ip', ['route', 'get', pod.ip]), /dev cni0/, 'the node routes the pod through the bridge');
  await w.applyCapture('bridged', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  startDnsSender(t, pod, w.dns.ip, 'bridged', 0, 50, w.logDir);
  await createPodObject(c, { namespace: w.ns, name: pod.name, node: node1.name, ip: pod.ip, labels: { app: 'logging' } });
  const dir = w.captureDir('node-1', 'bridged');
  await waitFor(async () => allPackets(await readCaptureDir(dir)).some((p) => p.src === pod.ip && p.query.startsWith('bridged-')), { what: 'the bridged pod\'s queries to be captured', timeoutMs: 20_000 });
  t.same(await captureFiles(dir), [`logging-bridged_${pod.hostIface}.pcap`], 'on the pod\'s own veth (the bridge port), not on the bridge');
  const packets = allPackets(await readCaptureDir(dir));
  t.ok(packets.every((p) => p.src === pod.ip || p.dst === pod.ip), 'only the pod\'s traffic');
  const log = await readFile(w.agents.get('node-1')!.logFile, 'utf8');
  t.match(log, new RegExp(`"iface":"${pod.hostIface}","via":"cni-result"`), 'the agent says where it found the interface');
});

t.test('a new pod is captured from the runtime\'s CNI result, before the API server has its address', async (t) => {
  await w.applyCapture('early', '  selector: app == "early"\n  filters: [{protocol: UDP, ports: [53]}]');
  // The Pod as the scheduler leaves it; the runtime then sets up its network (cnitool writes
  // the result, with the pod's uid, as containerd does) and the kubelet never reports it.
  const uid = await createScheduledPod(c, { namespace: w.ns, name: 'early-1', node: node1.name, labels: { app: 'early' } });
  const pod = await w.topo.addBridgedPod(node1, w.ns, 'early-1', { uid });
  startDnsSender(t, pod, w.dns.ip, 'early', 0, 50, w.logDir);
  const dir = w.captureDir('node-1', 'early');
  await waitFor(async () => allPackets(await readCaptureDir(dir)).some((p) => p.src === pod.ip && p.query.startsWith('early-')), { what: 'the new pod\'s queries to be captured', timeoutMs: 20_000 });
  t.same(await captureFiles(dir), [`early-1_${pod.hostIface}.pcap`], 'on its own bridge port');
  const status = await c.core.readNamespacedPodStatus({ namespace: w.ns, name: 'early-1' });
  t.equal(status.status?.podIP, undefined, 'while the API server still has no address for it');
});

t.test('a forged neighbour entry does not turn one tenant\'s capture onto another tenant\'s pod', async (t) => {
  const a = await w.topo.addBridgedPod(node1, w.ns, 'spoofer');
  const b = await w.topo.addBridgedPod(node1, tenantB, 'victim');
  await createPodObject(c, { namespace: tenantB, name: b.name, node: node1.name, ip: b.ip, labels: { app: 'spoofer' } });
  startDnsSender(t, b, w.dns.ip, 'victim', 0, 50, w.logDir);
  // What a pod with NET_RAW can do with one gratuitous ARP: the node now maps A's IP to B's
  // MAC on the bridge (here written directly, the same entry the ARP would leave).
  const [link] = JSON.parse(await b.ns.exec('ip', ['-j', 'link', 'show', 'eth0'])) as { address: string }[];
  await node1.ns.exec('ip', ['neigh', 'replace', a.ip, 'lladdr', link!.address, 'dev', 'cni0', 'nud', 'permanent']);
  t.teardown(() => node1.ns.exec('ip', ['neigh', 'del', a.ip, 'dev', 'cni0']).catch(() => undefined));
  await createPodObject(c, { namespace: w.ns, name: a.name, node: node1.name, ip: a.ip, labels: { app: 'spoofer' } });
  await w.applyCapture('spoofed', '  selector: app == "spoofer"\n  filters: [{protocol: UDP, ports: [53]}]');
  startDnsSender(t, a, w.dns.ip, 'spoofer', 0, 50, w.logDir);
  const dir = w.captureDir('node-1', 'spoofed');
  await waitFor(async () => allPackets(await readCaptureDir(dir)).some((p) => p.query.startsWith('spoofer-')), { what: 'A\'s own queries to be captured', timeoutMs: 20_000 });
  // B keeps sending meanwhile; a second look after more of its traffic went by.
  await waitFor(async () => allPackets(await readCaptureDir(dir)).filter((p) => p.query.startsWith('spoofer-')).length >= 10, { what: 'more of A\'s queries', timeoutMs: 20_000 });
  t.same(await captureFiles(dir), [`spoofer_${a.hostIface}.pcap`], 'captured on A\'s own bridge port');
  const packets = allPackets(await readCaptureDir(dir));
  t.notOk(packets.some((p) => p.src === b.ip || p.dst === b.ip || p.query.startsWith('victim-')), `none of tenant B's traffic (${packets.length} packets)`);
});

t.test('a bridged pod without a CNI result is not captured, and the status says why', async (t) => {
  const pod = await w.topo.addBridgedPod(node1, w.ns, 'unrecorded');
  // As if the runtime kept no cache (or it is not mounted): the agent has no evidence.
  const results = w.topo.cniResultsDir(node1);
  for (const f of await readdir(results)) if ((await readFile(join(results, f), 'utf8')).includes('K8S_POD_NAME","unrecorded"')) await rm(join(results, f));
  await createPodObject(c, { namespace: w.ns, name: pod.name, node: node1.name, ip: pod.ip, labels: { app: 'unrecorded' } });
  await w.applyCapture('unrecorded', '  selector: app == "unrecorded"');
  const entry = await waitFor(async () => {
    const e = await reportedEntry(w.kube, w.ns, 'unrecorded', node1.name);
    return e?.message?.includes('unrecorded') ? e : undefined;
  }, { what: 'a message about the pod', timeoutMs: 15_000 });
  t.match(entry.message, /pod unrecorded: the pod's IP 192\.0\.2\.\d+ is behind bridge cni0 and no CNI result .* names the pod's interface/);
  t.match(entry.message, /neighbour and forwarding tables are not used: a pod can forge them/);
  t.equal(entry.pods, 0, 'nothing captured');
  t.same(await captureFiles(w.captureDir('node-1', 'unrecorded')), []);
});
