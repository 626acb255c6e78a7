// The PacketCaptureNodeReport CRD and the RBAC around it (docs/status.md), on a real API
// server with deploy/'s ClusterRoles: the agent writes reports (and no longer the
// PacketCapture's status), they are owned by their capture, their node and capture never
// change, an agent lists its own by field selector, and the gateway may write status,
// delete reports and hold only its own Lease. Each agent writes only its own node's reports
// (deploy/agent/report-policy.yaml, enforced by the API server's admission), and a report is
// bounded (REPORT_LIMITS).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { KubeApiError } from '../../src/kube/client.js';
import { applyNodeReport, CAPTURE_UID_LABEL, deleteNodeReport, REPORT_LIMITS, reportName, reportsPath, type NodeReport } from '../../src/kube/node-report.js';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { CAPTURE_FILE_NAME_PATTERN } from '../../src/pcap/file-names.js';
import { parse } from 'yaml';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { AGENTS_NAMESPACE, installKubePcap, scratchDir, serviceAccountKubeconfig, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { ensureNode } from '../harness/node-reports.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
await installKubePcap(c);
const ns = await c.createNamespace('reports');
const admin = await connect(c.info.kubeconfig);
t.teardown(() => admin.close());
const dir = await scratchDir(t, 'report-crd');
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: dns, namespace: ${ns}}\nspec: {selector: all()}\n`);
const pc = (await getPacketCapture(admin, ns, 'dns'))!;
const ref = { namespace: ns, name: 'dns', uid: pc.metadata.uid! };
// Test files share the API server: node names of this file alone.
const suffix = ns.split('-').pop()!;
const nodeA = `node-a-${suffix}`;
const nodeB = `node-b-${suffix}`;
for (const n of [nodeA, nodeB]) await ensureNode(admin, n);
/** The agents' ServiceAccount with a token bound to `node`, as the kubelet gives a DaemonSet pod. */
const agentOf = async (node?: string) => {
  const client = await connect(await serviceAccountKubeconfig(c, dir, AGENTS_NAMESPACE, 'kube-pcap-agent', undefined, node));
  t.teardown(() => client.close());
  return client;
};
const agent = await agentOf(nodeA);
const agentB = await agentOf(nodeB);

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
  await applyNodeReport(agentB, ref, nodeB, { state: 'Capturing' }, 'kube-pcap-agent');
  const moved = { ...(await admin.request<NodeReport>({ path: `${reportsPath(ns)}/${reportName('dns', nodeB)}` })) };
  moved.spec = { ...moved.spec, nodeName: 'node-z' };
  await t.rejects(admin.request({ method: 'PUT', path: `${reportsPath(ns)}/${reportName('dns', nodeB)}`, body: moved }), /never change/);
  for (const node of ['../x', 'Node-A', 'a/b']) {
    await t.rejects(admin.request({ method: 'POST', path: reportsPath(ns), body: { apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureNodeReport', metadata: { name: `bad-${Math.random().toString(36).slice(2, 8)}` }, spec: { nodeName: node, captureName: 'dns', captureUID: 'u' } } }), KubeApiError, `node ${node} refused`);
  }
  await t.rejects(applyNodeReport(agent, ref, nodeA, { state: 'Sleeping' as never }, 'kube-pcap-agent'), /Unsupported value: "Sleeping"/);
});

t.test('an agent writes only its own node\'s reports: the API server refuses node A\'s token on node B\'s report', async (t) => {
  const nodeC = `node-c-${suffix}`;
  // A policy takes effect once the API server has loaded it: wait for the first refusal.
  const err = await waitFor(async () => await applyNodeReport(agent, ref, nodeC, { state: 'Capturing' }, 'kube-pcap-agent').then(() => undefined, (e: unknown) => e), { what: 'the report policy to be in force', timeoutMs: 20_000, intervalMs: 200 });
  t.ok(err instanceof KubeApiError && err.status === 403, 'creating another node\'s report: 403');
  t.match((err as Error).message, new RegExp(`the agent of node ${nodeA} may not write the report of node ${nodeC}`));
  t.notOk((await admin.request<{ items: NodeReport[] }>({ path: reportsPath(ns), query: { fieldSelector: `spec.nodeName=${nodeC}` } })).items.length, 'nothing was written');

  const name = reportName('dns', nodeB);
  await t.rejects(applyNodeReport(agent, ref, nodeB, { state: 'Finished', fileNames: ['forged.pcap'] }, 'kube-pcap-agent'), /may not write the report of node/, 'changing another node\'s report (server-side apply)');
  await t.rejects(agent.request({ method: 'PATCH', path: `${reportsPath(ns)}/${name}`, contentType: 'application/merge-patch+json', body: { status: { fileNames: ['forged.pcap'] } } }), /may not write the report of node/, 'a merge patch of it');
  await t.rejects(deleteNodeReport(agent, ns, name), /may not write the report of node/, 'deleting it');
  const still = await admin.request<NodeReport>({ path: `${reportsPath(ns)}/${name}` });
  t.equal(still.status?.state, 'Capturing', 'node B\'s report is as node B wrote it');
  t.notOk(still.status?.fileNames, 'with no forged file');

  const unbound = await agentOf(undefined);
  await t.rejects(applyNodeReport(unbound, ref, nodeA, { state: 'Capturing' }, 'kube-pcap-agent'), /must be bound to its node/, 'a token bound to no node writes nothing, not even its "own" report');

  t.equal((await applyNodeReport(agentB, ref, nodeB, { state: 'Capturing', pods: 2 }, 'kube-pcap-agent')).status?.pods, 2, 'node B\'s agent still writes its own');
  const gateway = await connect(await serviceAccountKubeconfig(c, dir, SYSTEM_NAMESPACE, 'kube-pcap-gateway'));
  t.teardown(() => gateway.close());
  const scratch = `node-d-${suffix}`;
  await ensureNode(admin, scratch);
  await applyNodeReport(await agentOf(scratch), ref, scratch, { state: 'Capturing' }, 'kube-pcap-agent');
  t.ok(await deleteNodeReport(gateway, ns, reportName('dns', scratch)), 'the gateway (pruning gone nodes) is not bound by it');
});

t.test('a report is bounded: the CRD refuses more names or longer strings than REPORT_LIMITS', async (t) => {
  const crd = parse(await readFile(join(REPO_ROOT, 'deploy', 'crd', 'packetcapturenodereports.kube-pcap.io.yaml'), 'utf8'));
  const status = crd.spec.versions[0].schema.openAPIV3Schema.properties.status.properties;
  t.equal(status.fileNames.maxItems, REPORT_LIMITS.fileNames);
  t.equal(status.fileNames.items.maxLength, REPORT_LIMITS.fileNameLength);
  t.equal(status.fileNames.items.pattern, CAPTURE_FILE_NAME_PATTERN, 'the agents\' file-name rule');
  t.equal(status.message.maxLength, REPORT_LIMITS.messageLength);
  t.equal(status.directory.maxLength, REPORT_LIMITS.directoryLength);

  const names = (n: number): string[] => Array.from({ length: n }, (_, i) => `${'p'.repeat(240)}-${String(i).padStart(6, '0')}.pcap`);
  const full = await applyNodeReport(agent, ref, nodeA, { state: 'Capturing', fileNames: names(REPORT_LIMITS.fileNames), message: 'm'.repeat(REPORT_LIMITS.messageLength) }, 'kube-pcap-agent');
  t.equal(full.status?.fileNames?.length, REPORT_LIMITS.fileNames, `a report at every limit is accepted (${(JSON.stringify(full).length / 1024 / 1024).toFixed(2)} MiB)`);
  await t.rejects(applyNodeReport(agent, ref, nodeA, { state: 'Capturing', fileNames: names(REPORT_LIMITS.fileNames + 1) }, 'kube-pcap-agent'), /must have at most 4096 items|Too many/, 'one name more is refused');
  await t.rejects(applyNodeReport(agent, ref, nodeA, { state: 'Capturing', fileNames: ['../../etc/shadow.pcap'] }, 'kube-pcap-agent'), /should match/, 'a name that is not a capture file\'s');
  await t.rejects(applyNodeReport(agent, ref, nodeA, { state: 'Capturing', message: 'm'.repeat(REPORT_LIMITS.messageLength + 1) }, 'kube-pcap-agent'), /Too long|at most 1024/, 'a longer message');
  await applyNodeReport(agent, ref, nodeA, { state: 'Capturing' }, 'kube-pcap-agent');
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
  const can = async (sa: string, attrs: Parameters<typeof c.serviceAccountCan>[2]): Promise<boolean> => await c.serviceAccountCan(sa === 'kube-pcap-agent' ? AGENTS_NAMESPACE : SYSTEM_NAMESPACE, sa, attrs);
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
