// The PacketCaptureNodeReport CRD and the RBAC around it (docs/status.md), on a real API
// server with deploy/'s ClusterRoles: the agent writes reports (and no longer the
// PacketCapture's status), they are owned by their capture, their node and capture never
// change, an agent lists its own by field selector, and the gateway may write status,
// delete reports and hold only its own Lease.
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { KubeApiError } from '../../src/kube/client.js';
import { applyNodeReport, CAPTURE_UID_LABEL, reportName, reportsPath, type NodeReport } from '../../src/kube/node-report.js';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { cluster } from '../harness/cluster.js';
import { installKubePcap, scratchDir, serviceAccountKubeconfig, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';

const c = await cluster(t);
await installKubePcap(c);
const ns = await c.createNamespace('reports');
const admin = await connect(c.info.kubeconfig);
t.teardown(() => admin.close());
const dir = await scratchDir(t, 'report-crd');
const agent = await connect(await serviceAccountKubeconfig(c, dir, SYSTEM_NAMESPACE, 'kube-pcap-agent'));
t.teardown(() => agent.close());
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: dns, namespace: ${ns}}\nspec: {selector: all()}\n`);
const pc = (await getPacketCapture(admin, ns, 'dns'))!;
const ref = { namespace: ns, name: 'dns', uid: pc.metadata.uid! };
// Test files share the API server: node names of this file alone.
const suffix = ns.split('-').pop()!;
const nodeA = `node-a-${suffix}`;
const nodeB = `node-b-${suffix}`;

t.test('the agent writes its report, owned by the capture and labelled with its uid', async (t) => {
  const written = await applyNodeReport(agent, ref, nodeA, { state: 'Capturing', directory: '/var/lib/kube-pcap/x', fileNames: ['a.pcap'], pods: 1, packets: 3, bytes: 300, kernelDrops: 0, countersTime: new Date().toISOString() }, 'kube-pcap-agent');
  t.equal(written.metadata.name, `dns.${nodeA}`);
  t.same(written.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]), [['PacketCapture', 'dns', pc.metadata.uid]], 'garbage collection removes it with the capture');
  t.equal(written.metadata.labels?.[CAPTURE_UID_LABEL], pc.metadata.uid);
  t.equal(written.status?.packets, 3);
  // Re-applying is how the agent updates it.
  const again = await applyNodeReport(agent, ref, nodeA, { state: 'Finished', fileNames: ['a.pcap'] }, 'kube-pcap-agent');
  t.equal(again.status?.state, 'Finished');
  t.equal(again.status?.packets, undefined, 'fields not applied any more are dropped (one field manager owns the object)');
});

t.test('a report\'s node and capture never change; node names and states are validated', async (t) => {
  await applyNodeReport(agent, ref, nodeB, { state: 'Capturing' }, 'kube-pcap-agent');
  const moved = { ...(await admin.request<NodeReport>({ path: `${reportsPath(ns)}/${reportName('dns', nodeB)}` })) };
  moved.spec = { ...moved.spec, nodeName: 'node-z' };
  await t.rejects(admin.request({ method: 'PUT', path: `${reportsPath(ns)}/${reportName('dns', nodeB)}`, body: moved }), /never change/);
  for (const node of ['../x', 'Node-A', 'a/b']) {
    await t.rejects(admin.request({ method: 'POST', path: reportsPath(ns), body: { apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureNodeReport', metadata: { name: `bad-${Math.random().toString(36).slice(2, 8)}` }, spec: { nodeName: node, captureName: 'dns', captureUID: 'u' } } }), KubeApiError, `node ${node} refused`);
  }
  await t.rejects(applyNodeReport(agent, ref, 'node-c', { state: 'Sleeping' as never }, 'kube-pcap-agent'), /Unsupported value: "Sleeping"/);
});

t.test('an agent lists its own reports by field selector, across namespaces', async (t) => {
  const list = await agent.request<{ items: NodeReport[] }>({ path: reportsPath(), query: { fieldSelector: `spec.nodeName=${nodeA}` } });
  t.same(list.items.map((r) => r.spec.nodeName), [nodeA]);
  const byCapture = await agent.request<{ items: NodeReport[] }>({ path: reportsPath(ns), query: { fieldSelector: 'spec.captureName=dns' } });
  t.same(byCapture.items.map((r) => r.spec.nodeName).sort(), [nodeA, nodeB]);
});

t.test('kubectl get pcnr shows capture, node, state, pods and packets', async (t) => {
  const res = await c.kubectl(['get', 'pcnr', '-n', ns, `dns.${nodeB}`]);
  t.equal(res.code, 0, res.stderr);
  const [header, row] = res.stdout.trim().split('\n');
  t.match(header, /^NAME\s+CAPTURE\s+NODE\s+STATE\s+PODS\s+PACKETS\s+AGE$/);
  t.match(row, new RegExp(`^dns\\.${nodeB}\\s+dns\\s+${nodeB}\\s+Capturing\\s+`));
});

t.test('deploy/ RBAC: the agent writes reports, not status; the gateway aggregates and holds only its Lease', async (t) => {
  const can = async (sa: string, attrs: Parameters<typeof c.serviceAccountCan>[2]): Promise<boolean> => await c.serviceAccountCan(SYSTEM_NAMESPACE, sa, attrs);
  const reports = { group: 'kube-pcap.io', resource: 'packetcapturenodereports', namespace: ns };
  for (const verb of ['create', 'patch', 'list', 'watch', 'delete']) t.ok(await can('kube-pcap-agent', { ...reports, verb }), `agent may ${verb} reports`);
  t.notOk(await can('kube-pcap-agent', { group: 'projectcalico.org', resource: 'packetcaptures', subresource: 'status', verb: 'patch', namespace: ns }), 'agent may not write PacketCapture status any more');
  t.notOk(await can('kube-pcap-agent', { resource: 'nodes', verb: 'list' }), 'agent may not list nodes');

  t.ok(await can('kube-pcap-gateway', { group: 'projectcalico.org', resource: 'packetcaptures', subresource: 'status', verb: 'patch', namespace: ns }), 'gateway writes status');
  for (const verb of ['list', 'watch', 'delete']) t.ok(await can('kube-pcap-gateway', { ...reports, verb }), `gateway may ${verb} reports`);
  t.notOk(await can('kube-pcap-gateway', { ...reports, verb: 'create' }), 'gateway never writes a report');
  t.notOk(await can('kube-pcap-gateway', { ...reports, verb: 'patch' }), 'gateway never edits a report');
  t.ok(await can('kube-pcap-gateway', { resource: 'nodes', verb: 'watch' }), 'gateway watches Nodes');
  t.notOk(await can('kube-pcap-gateway', { resource: 'nodes', verb: 'delete' }));
  const lease = { group: 'coordination.k8s.io', resource: 'leases', namespace: SYSTEM_NAMESPACE };
  t.ok(await can('kube-pcap-gateway', { ...lease, verb: 'update', name: 'kube-pcap-status-aggregator' }), 'gateway renews its Lease');
  t.notOk(await can('kube-pcap-gateway', { ...lease, verb: 'update', name: 'kube-controller-manager' }), 'and no other Lease');
  t.notOk(await can('kube-pcap-gateway', { ...lease, verb: 'update', namespace: 'kube-system', name: 'kube-pcap-status-aggregator' }), 'nor one in another namespace');
});
