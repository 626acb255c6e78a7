// The user's story on real nodes: kube-pcap from its chart and our images, real pods of a
// Deployment sending real DNS queries through kube-proxy to the cluster DNS, the README's
// curl through a real `kubectl port-forward` with a token from `kubectl create token`.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { allPackets, type Packet } from '../harness/capture-fixture.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';
import { ClusterStory, clientOf, NAME, NS } from './cluster-story.js';
import { realCluster } from './handle.js';
import { AGENTS_NS } from './install.js';

const c = await realCluster(t);
// The cluster outlives this file: what the story made goes with it.
t.teardown(async () => {
  await c.kubectl(['delete', 'packetcapture', NAME, '-n', NS]);
  await c.kubectl(['delete', 'namespace', NS, '--wait=false']);
  await c.kubectl(['delete', '-f', join(REPO_ROOT, 'rbac-examples', 'gateway-access.yaml')]);
});
const story = await ClusterStory.setup(t, c, await scratchDir(t, 'seed-story'));
const nodes = c.nodeNames;

t.test('devops-sa applies the seed PacketCapture; the agent pod of every node captures', async (t) => {
  t.match(await story.applyCapture(), new RegExp(`packetcapture.projectcalico.org/${NAME} created`));
  const states = await waitFor(async () => {
    const s = await story.nodeStates();
    return nodes.every((n) => s.get(n) === 'Capturing') ? s : undefined;
  }, { what: 'every node to be Capturing', timeoutMs: 60_000, intervalMs: 500 });
  t.same([...states.keys()].sort(), nodes, 'one status entry per node');
});

t.test('with only the capture Role, the README\'s curl through kubectl port-forward gets 403', async (t) => {
  const d = await story.download(story.devopsToken, 'forbidden');
  t.equal(d.curlExit, 0);
  t.equal(d.status?.code, 403);
  t.match(d.status?.message, `system:serviceaccount:${NS}:devops-sa" cannot get packetcaptures/files`);
});

let zip: Map<string, Packet[]>;
t.test('after the files Role is bound, the zip holds every node\'s files: UDP 53 of the logging pods only', async (t) => {
  await story.grantFiles();
  await story.otherTraffic();
  const logging = await c.pods(NS, 'app=logging');
  const web = await c.pods(NS, 'app=web');
  const d = await waitFor(async () => {
    const r = await story.download(story.devopsToken, 'allowed');
    return r.status === undefined && r.curlExit === 0 ? r : undefined;
  }, { what: 'the download to be allowed', timeoutMs: 30_000, intervalMs: 1000 });
  zip = await story.unpack(d.body, 'allowed');
  const byNode = new Set([...zip.keys()].map((k) => k.split('/')[0]));
  t.same([...byNode].sort(), nodes, 'files from every node');
  for (const p of logging) t.ok([...zip.keys()].some((k) => k.startsWith(`${p.node}/${p.name}_`)), `a file of ${p.name} under ${p.node}/`);
  const packets = allPackets(zip);
  t.ok(packets.length > 20, `${packets.length} packets, every one read by tshark`);
  t.ok(packets.every((p) => p.proto === 'DNS' && (p.srcPort === 53 || p.dstPort === 53)), 'every packet is DNS on UDP port 53');
  const ips = new Set(logging.map((p) => p.ip));
  t.ok(packets.every((p) => ips.has(clientOf(p))), 'every packet is to or from a logging pod');
  t.ok(logging.every((p) => packets.some((q) => q.query.startsWith(`${p.name}-`))), 'each logging pod\'s own numbered queries');
  t.notOk(packets.some((p) => p.query.includes('over-tcp') || p.query.includes('port-5353')), 'no DNS over TCP, no other UDP port');
  t.notOk(packets.some((p) => web.some((w) => p.query.startsWith(w.name) || clientOf(p) === w.ip)), 'nothing of the web pod');
});

t.test('files.pcapng names each packet\'s node, namespace and pod', async (t) => {
  const d = await story.download(story.devopsToken, 'pcapng', 'files.pcapng');
  t.equal(d.status, undefined, 'not an error');
  const file = join(story.work, 'merged.pcapng');
  await writeFile(file, d.body);
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.dstport', '-e', 'dns.qry.name']);
  t.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => l.split('|'));
  t.ok(rows.length > 20, `${rows.length} packets`);
  const logging = await c.pods(NS, 'app=logging');
  let checked = 0;
  for (const [iface, src, dst, dport, query] of rows) {
    const [node, ns, pod] = (iface ?? '').split('/');
    const ip = dport === '53' ? src : dst;
    const owner = logging.find((p) => p.ip === ip);
    if (!owner) continue;
    checked++;
    if (node !== owner.node || ns !== NS || pod !== owner.name) {
      t.fail(`packet ${src} -> ${dst} (${query}) on interface ${iface}, from ${owner.node}/${owner.name}`);
      return;
    }
  }
  t.ok(checked > 20, `${checked} packets of live logging pods each name their node, namespace and pod`);
});

t.test('the gateway reached every node\'s agent pod, found through the agents\' EndpointSlices', async (t) => {
  const slices = await c.kubectlOk(['get', 'endpointslices', '-n', AGENTS_NS, '-l', 'kubernetes.io/service-name=kube-pcap-agent', '-o', 'jsonpath={range .items[*].endpoints[*]}{.nodeName}={.addresses[0]} {end}']);
  const pairs = new Map(slices.trim().split(' ').map((p) => p.split('=') as [string, string]));
  t.same([...pairs.keys()].sort(), nodes, 'an endpoint per node');
  for (const n of nodes) t.equal(pairs.get(n), c.node(n).ip, `${n}'s agent at the node's address (hostNetwork)`);
});
