// The status architecture end to end (docs/status.md), on a private API server with real
// agents, real node reports and two real gateway replicas sharing one Lease:
//  - the aggregator alone writes status.files and status.summary, folded from the reports;
//  - one writer: the replica that holds the Lease writes, the other never does, and when
//    the leader stops the other takes over and keeps the status current;
//  - a Node that is deleted loses its report and entry within seconds, after which the
//    download answers with the remaining nodes and DELETE works once they have stopped;
//  - while Nodes cannot be listed, nothing is pruned.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { getPacketCapture, type PacketCapture } from '../../src/kube/packetcapture.js';
import { privateCluster, uniqueName } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, zipEntries } from '../harness/http.js';
import { gatewayMetric, scratchDir, startGateway, type GatewayHandle } from '../harness/kube-pcap.js';
import { captureReports, deleteNode } from '../harness/node-reports.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const c = await privateCluster(t);
const LEASE_TIMING = ['--leader-election-lease-duration-seconds=6', '--leader-election-renew-deadline-seconds=4', '--leader-election-retry-period-seconds=1'];
const w = await storefrontWorld(t, c, { nodes: ['node-1', 'node-2', 'node-3'], gatewayArgs: LEASE_TIMING });
await w.grantFiles();
const ca = w.pki.ca.certFile;
const second = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: LEASE_TIMING, name: uniqueName('gateway-b') });
const gateways = [w.gateway, second];
/** The replica still running after the handover test. */
let serving: GatewayHandle = w.gateway;
const downloadUrl = (): string => `${serving.url}/packet-capture/download/${w.ns}/${CAPTURE}/files.zip`;
const filesUrl = (): string => `${serving.url}/packet-capture/files/${w.ns}/${CAPTURE}`;

async function metric(g: GatewayHandle, name: string): Promise<number> {
  return await gatewayMetric(g, w.pki, name);
}

async function leaseHolder(): Promise<string> {
  const lease = await w.kube.request<{ spec?: { holderIdentity?: string } }>({ path: '/apis/coordination.k8s.io/v1/namespaces/kube-pcap/leases/kube-pcap-status-aggregator' });
  return lease.spec?.holderIdentity ?? '';
}

async function leader(among: GatewayHandle[]): Promise<GatewayHandle> {
  return await waitFor(async () => {
    const leading = [];
    for (const g of among) if ((await metric(g, 'kube_pcap_gateway_status_aggregator_leader')) === 1) leading.push(g);
    return leading.length === 1 ? leading[0] : undefined;
  }, { what: 'exactly one leading replica', timeoutMs: 20_000, intervalMs: 200 });
}

/** Waits until status.files says exactly `expect` (node → state and files) and returns the capture. */
async function statusSays(expect: Record<string, { state: string; files: string[] }>, timeoutMs = 20_000): Promise<PacketCapture> {
  return await waitFor(async () => {
    const pc = await getPacketCapture(w.kube, w.ns, CAPTURE);
    const got = Object.fromEntries((pc?.status?.files ?? []).map((f) => [f.node, { state: f.state, files: f.fileNames ?? [] }]));
    if (JSON.stringify(got) !== JSON.stringify(expect)) throw new Error(`status.files: ${JSON.stringify(got)}`);
    return pc;
  }, { what: `status.files to be ${JSON.stringify(expect)}`, timeoutMs, intervalMs: 100 });
}

function expected(state: string, files: Record<string, string[]> = w.filesWith('', '')): Record<string, { state: string; files: string[] }> {
  const out: Record<string, { state: string; files: string[] }> = {};
  for (const [node, names] of Object.entries(files)) if (node !== '') out[node] = { state, files: names.filter((n) => n !== '') };
  return out;
}

const n1 = w.nodeName('node-1');
const n2 = w.nodeName('node-2');
const n3 = w.nodeName('node-3');

t.test('the aggregator folds the node reports into status.files and status.summary, and is their only writer', async (t) => {
  const pc = await statusSays(expected('Capturing'));
  t.equal(pc.status?.summary, '3 Capturing');
  const reports = await captureReports(w.kube, w.ns, CAPTURE);
  t.same([...reports.keys()].sort(), [n1, n2, n3], 'one report per node');
  for (const e of pc.status?.files ?? []) t.same(e.fileNames, reports.get(e.node)?.status?.fileNames, `${e.node}: the entry is its report`);
  const full = await w.kube.request<{ metadata: { managedFields?: { manager: string; subresource?: string }[] } }>({ path: `/apis/projectcalico.org/v3/namespaces/${w.ns}/packetcaptures/${CAPTURE}` });
  const statusManagers = (full.metadata.managedFields ?? []).filter((m) => m.subresource === 'status').map((m) => m.manager);
  t.same(statusManagers, ['kube-pcap-aggregator'], 'one field manager for the whole status, whatever the number of nodes');
});

t.test('one writer: the Lease holder writes, the other replica never; the other takes over when it stops', async (t) => {
  const first = await leader(gateways);
  const other = gateways.find((g) => g !== first)!;
  serving = other;
  t.match(await leaseHolder(), new RegExp(`^${first.logFile.split('/').pop()!.replace(/\.log$/, '')}_`), 'the Lease names the leading replica');
  t.ok((await metric(first, 'kube_pcap_gateway_status_writes_total')) > 0, 'the leader wrote the status');
  t.equal(await metric(other, 'kube_pcap_gateway_status_writes_total'), 0, 'the other replica never wrote');

  const stopped = Date.now();
  await first.proc.stop();
  await waitFor(async () => (await metric(other, 'kube_pcap_gateway_status_aggregator_leader')) === 1, { what: 'the other replica to lead', timeoutMs: 20_000, intervalMs: 100 });
  t.comment(`handover after the leader stopped (Lease released): ${Date.now() - stopped} ms`);
  t.match(await leaseHolder(), new RegExp(`^${other.logFile.split('/').pop()!.replace(/\.log$/, '')}_`));

  // A change after the handover reaches the status through the new leader.
  await w.addFileOnFirstNode('logging-0_cali0-1700000000000009.pcap', (p) => writeDnsPcap(p, 3, { src: '192.0.2.10' }));
  await statusSays(expected('Capturing', w.filesWith(n1, 'logging-0_cali0-1700000000000009.pcap')));
  t.ok((await metric(other, 'kube_pcap_gateway_status_writes_total')) > 0, 'the new leader wrote it');
});

t.test('a deleted Node loses its report and entry; then the download and DELETE work with the nodes left', async (t) => {
  const files = w.filesWith(n1, 'logging-0_cali0-1700000000000009.pcap');
  // node-2 goes away: its agent first, then its Node object (as a scale-down does).
  const gone = w.agents.find((a) => a.node === n2)!;
  await gone.proc.stop();
  const before = await https(downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(before.status, 502, 'while the node is listed, its unreachable files are a 502');
  t.match(before.body.toString(), new RegExp(n2));

  const deleted = Date.now();
  await deleteNode(w.kube, n2);
  const { [n2]: _dropped, ...remaining } = files;
  await statusSays(expected('Capturing', remaining), 60_000);
  const prunedMs = Date.now() - deleted;
  t.ok(!(await captureReports(w.kube, w.ns, CAPTURE)).has(n2), 'its report is deleted');
  t.comment(`report and entry of the deleted node gone ${prunedMs} ms after the Node was deleted`);

  const after = await https(downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(after.status, 200, `the download answers with the remaining nodes: ${after.status === 200 ? '' : after.body.toString().slice(0, 300)}`);
  const dir = await scratchDir(t, 'after-node-left');
  await writeFile(join(dir, 'files.zip'), after.body);
  const entries = (await zipEntries(join(dir, 'files.zip'))).sort();
  t.same(entries, Object.entries(remaining).flatMap(([node, names]) => names.map((n) => `${node}/${n}`)).sort(), 'every file of the nodes left, none of the one gone');

  const deleter = await filesDeleter();
  const busy = await waitFor(async () => {
    const r = await https(filesUrl(), { caFile: ca, token: deleter, method: 'DELETE' });
    return r.status === 403 ? undefined : r; // the grant shows within the deny TTL
  }, { what: 'the delete grant to show', timeoutMs: 15_000, intervalMs: 500 });
  t.equal(busy.status, 409, `still capturing on the nodes left: 409 (${busy.body.toString().slice(0, 200)})`);
  // Stop it as `kubectl pcap stop` does (the fixture's stopCapture would wait for node-2 too).
  const pc = (await getPacketCapture(w.kube, w.ns, CAPTURE))!;
  await c.applyManifest(JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: CAPTURE, namespace: w.ns }, spec: { ...pc.spec, endTime: new Date(Date.now() - 1000).toISOString() } }));
  await waitFor(async () => {
    const r = await captureReports(w.kube, w.ns, CAPTURE);
    return [n1, n3].every((n) => r.get(n)?.status?.state === 'Finished');
  }, { what: 'the remaining nodes to finish', timeoutMs: 20_000 });
  const del = await https(filesUrl(), { caFile: ca, token: deleter, method: 'DELETE' });
  t.equal(del.status, 200, `DELETE once every remaining node has stopped: ${del.body.toString().slice(0, 300)}`);
});

t.test('while Nodes cannot be listed, nothing is pruned; once they can, the gone node is', async (t) => {
  const roleFile = join(REPO_ROOT, 'deploy', 'gateway', 'rbac.yaml');
  const docs = (await readFile(roleFile, 'utf8')).split(/^---$/m).map((d) => parse(d) as { kind: string; rules?: { resources: string[] }[] });
  const role = docs.find((d) => d.kind === 'ClusterRole')!;
  const withoutNodes = { ...role, rules: role.rules!.filter((r) => !r.resources.includes('nodes')) };
  await c.applyManifest(JSON.stringify(withoutNodes));
  t.teardown(() => c.applyManifest(JSON.stringify(role)).then(() => undefined));
  // A replica that starts now cannot list Nodes.
  await serving.proc.stop();
  const blind = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: LEASE_TIMING, name: uniqueName('gateway-c') });
  await leader([blind]);
  await waitFor(async () => /"watch":"nodes".*list\/watch failed/.test(await readFile(blind.logFile, 'utf8')), { what: 'the Node list to be refused', timeoutMs: 20_000 });

  const agent3 = w.agents.find((a) => a.node === n3)!;
  await agent3.proc.stop();
  await deleteNode(w.kube, n3);
  // Proof the aggregator worked on this capture after the Node went: a change on node-1
  // reaches the status, and node-3's entry is still there beside it.
  const extra = 'logging-0_cali0-1700000000000011.pcap';
  // (The files were deleted above: the directory is made again, as the agent would.)
  await mkdir(join(w.agents[0]!.captureDir, w.ns, CAPTURE), { recursive: true });
  await writeDnsPcap(join(w.agents[0]!.captureDir, w.ns, CAPTURE, extra), 2, { src: '192.0.2.10' });
  const r = await c.kubectl(['annotate', '--overwrite', '-n', w.ns, 'packetcaptures.projectcalico.org', CAPTURE, `kube-pcap-test/poke=${Date.now()}`]);
  t.equal(r.code, 0, r.stderr);
  const pc = await waitFor(async () => {
    const p = await getPacketCapture(w.kube, w.ns, CAPTURE);
    const e1 = p?.status?.files?.find((f) => f.node === n1);
    return e1?.fileNames?.includes(extra) ? p : undefined;
  }, { what: 'the aggregator to write node-1\'s new file', timeoutMs: 20_000 });
  t.ok(pc.status?.files?.some((f) => f.node === n3), 'node-3\'s entry is kept: its absence cannot be confirmed');
  t.ok((await captureReports(w.kube, w.ns, CAPTURE)).has(n3), 'and its report');

  await c.applyManifest(JSON.stringify(role));
  await waitFor(async () => {
    const p = await getPacketCapture(w.kube, w.ns, CAPTURE);
    return p?.status?.files?.some((f) => f.node === n3) === false;
  }, { what: 'node-3 to be pruned once Nodes can be listed', timeoutMs: 60_000 });
  t.notOk((await captureReports(w.kube, w.ns, CAPTURE)).has(n3));
});

/** A token allowed to delete the files (rbac-examples/files-delete-role.yaml, renamed into this namespace). */
async function filesDeleter(): Promise<string> {
  await c.applyYaml(join(REPO_ROOT, 'rbac-examples', 'files-delete-role.yaml'), { renameNamespace: { from: 'storefront', to: w.ns } });
  return w.devopsToken;
}
