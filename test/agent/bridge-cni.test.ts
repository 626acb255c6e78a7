// Bridge CNIs: a pod's route leads to the node's bridge, not to its veth; the agent finds
// the veth through the bridge's forwarding table once the pod has sent a frame, and
// captures it like any other pod.
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { createPodObject } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c);
const node1 = w.nodes[0]!;

t.test('a pod on a bridge is captured on its bridge port', async (t) => {
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
});
