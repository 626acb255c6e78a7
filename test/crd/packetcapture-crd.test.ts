// The PacketCapture CRD on a real API server: what it accepts, what it rejects (with the
// API server's own message), defaults, printer columns, and status owned per node.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { getPacketCapture, summarizeStates } from '../../src/kube/packetcapture.js';
import { applyNodeStatus } from '../harness/node-reports.js';
import { privateCluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { installCrd } from '../harness/crd.js';

const examples = join(REPO_ROOT, 'deploy', 'examples');

function manifest(ns: string, name: string, spec: string): string {
  return `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n`;
}

// Its own API server: it writes status.files as the aggregator would, and the aggregator of
// any gateway another test file runs on the shared one would rewrite it from the reports.
const c = await privateCluster(t);
await installCrd(c);
const ns = await c.createNamespace('crd');
const client = await connect(c.info.kubeconfig);
t.teardown(() => client.close());

t.test('the seed manifests are accepted', async (t) => {
  for (const file of ['pc-storefront-logging-dns.yaml', 'pc-nginx-http.yaml', 'pc-all-pods.yaml']) {
    const text = await readFile(join(examples, file), 'utf8');
    const res = await c.kubectl(['apply', '-f', '-'], { input: text.replace(/namespace: storefront/, `namespace: ${ns}`) });
    t.equal(res.code, 0, `${file}: ${res.stderr}`);
  }
  const dns = await c.custom.getNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: ns, plural: 'packetcaptures', name: 'pc-storefront-logging-dns' }) as { spec: unknown };
  t.same(dns.spec, { selector: 'app == "logging"', filters: [{ protocol: 'UDP', ports: [53] }] });
});

t.test('the limits kube-pcap adds are kept as written; a Calico manifest has none', async (t) => {
  await c.applyManifest(manifest(ns, 'limited', '  selector: all()\n  snapLen: 96\n  maxPackets: 1000\n  maxBytes: 9007199254740991'));
  const pc = await getPacketCapture(client, ns, 'limited');
  t.same(pc?.spec, { selector: 'all()', snapLen: 96, maxPackets: 1000, maxBytes: 9007199254740991 });
  const plain = await getPacketCapture(client, ns, 'no-selector').catch(() => undefined);
  t.notOk(plain && ('snapLen' in (plain.spec ?? {}) || 'maxPackets' in (plain.spec ?? {}) || 'maxBytes' in (plain.spec ?? {})), 'no defaults are added to Calico\'s fields');
});

t.test('selector defaults to all()', async (t) => {
  await c.applyManifest(manifest(ns, 'no-selector', '  filters: [{protocol: 1}]'));
  const pc = await c.custom.getNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: ns, plural: 'packetcaptures', name: 'no-selector' }) as { spec: { selector: string } };
  t.equal(pc.spec.selector, 'all()');
});

const rejected: [string, string, RegExp][] = [
  ['a protocol that does not exist', '  filters: [{protocol: HTTP}]', /protocol must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite, or a number from 1 to 255/],
  ['protocol number 256', '  filters: [{protocol: 256}]', /protocol must be one of .* or a number from 1 to 255/],
  ['port 70000', '  filters: [{protocol: TCP, ports: [70000]}]', /spec\.filters\[0\]\.ports\[0\]: Invalid value.*a port must be a number from 1 to 65535/],
  ['port range upside down', '  filters: [{protocol: TCP, ports: ["90:80"]}]', /a port must be a number from 1 to 65535 or a range "from:to"/],
  ['port range beyond 65535', '  filters: [{protocol: TCP, ports: ["1:70000"]}]', /a port must be a number from 1 to 65535 or a range/],
  ['endTime before startTime', '  startTime: "2026-01-01T12:00:00Z"\n  endTime: "2026-01-01T11:00:00Z"', /spec\.endTime: Invalid value.*endTime must be after startTime/],
  ['a startTime that is not RFC 3339', '  startTime: "yesterday"', /spec\.startTime: Invalid value: "yesterday"/],
  // kube-pcap's extensions (docs/agent.md, "Capture limits").
  ['snapLen 0', '  snapLen: 0', /spec\.snapLen: Invalid value.*snapLen must be a number of bytes from 1 to 262144 \(tcpdump's largest\); leave it out to keep whole packets/],
  ['snapLen beyond tcpdump\'s largest', '  snapLen: 262145', /snapLen must be a number of bytes from 1 to 262144/],
  ['snapLen as a string', '  snapLen: "96"', /spec\.snapLen: Invalid value: "string": spec\.snapLen in body must be of type integer/],
  ['maxPackets 0', '  maxPackets: 0', /spec\.maxPackets: Invalid value.*maxPackets must be a whole number from 1 to 9007199254740991; leave it out for no limit/],
  ['maxPackets negative', '  maxPackets: -5', /maxPackets must be a whole number from 1/],
  ['maxPackets past what a JSON number holds exactly', '  maxPackets: 9007199254740993', /maxPackets must be a whole number from 1 to 9007199254740991/],
  ['maxBytes 0', '  maxBytes: 0', /spec\.maxBytes: Invalid value.*maxBytes must be a whole number of bytes from 1 to 9007199254740991/],
  ['maxBytes as a quantity', '  maxBytes: 10Mi', /spec\.maxBytes in body must be of type integer/],
];
for (const [what, spec, message] of rejected) {
  t.test(`rejected: ${what}`, async (t) => {
    const res = await c.kubectl(['apply', '-f', '-'], { input: manifest(ns, 'bad', spec) });
    t.not(res.code, 0, 'kubectl apply fails');
    t.match(res.stderr, message, 'with the API server\'s validation message');
    t.match(res.stderr, /is invalid/);
  });
}

t.test('status.files is one atomic list: its writer replaces it whole, and managedFields do not grow with the nodes', async (t) => {
  await c.applyManifest(manifest(ns, 'ssa', '  selector: all()'));
  const ref = { namespace: ns, name: 'ssa' };
  const entries = Array.from({ length: 50 }, (_, i) => ({ node: `node-${i}`, directory: '/var/lib/kube-pcap/x', fileNames: [`p-${i}.pcap`], state: 'Capturing' as const }));
  await client.request({ method: 'PATCH', path: `/apis/projectcalico.org/v3/namespaces/${ns}/packetcaptures/ssa/status`, query: { fieldManager: 'kube-pcap-aggregator' }, contentType: 'application/merge-patch+json', body: { status: { files: entries, summary: '50 Capturing' } } });
  let pc = await getPacketCapture(client, ns, 'ssa');
  t.equal(pc?.status?.files?.length, 50);
  const full = await client.request<{ metadata: { managedFields: { manager: string; subresource?: string; fieldsV1: unknown }[] } }>({ path: `/apis/projectcalico.org/v3/namespaces/${ns}/packetcaptures/ssa` });
  const owned = full.metadata.managedFields.find((m) => m.manager === 'kube-pcap-aggregator');
  t.same(owned?.fieldsV1, { 'f:status': { '.': {}, 'f:files': {}, 'f:summary': {} } }, 'one line for the whole list, whatever the number of nodes');
  // A node leaves: the writer's next list is the whole truth.
  await client.request({ method: 'PATCH', path: `/apis/projectcalico.org/v3/namespaces/${ns}/packetcaptures/ssa/status`, query: { fieldManager: 'kube-pcap-aggregator' }, contentType: 'application/merge-patch+json', body: { status: { files: entries.slice(1), summary: '49 Capturing' } } });
  pc = await getPacketCapture(client, ns, 'ssa');
  t.same(pc?.status?.files?.map((f) => f.node), entries.slice(1).map((e) => e.node));

  // A node name that is not one (it would become a zip directory) is refused by the schema too.
  for (const node of ['../../x', 'a/b', 'Node-A']) {
    await t.rejects(applyNodeStatus(client, ref, 'kube-pcap-agent/hostile', { node, state: 'Capturing' }), /should match|must match|Invalid value/, `node ${node}`);
  }
  // A state outside the enum is refused by the schema.
  await t.rejects(applyNodeStatus(client, ref, 'kube-pcap-agent/node-c', { node: 'node-c', state: 'Sleeping' as never }), /Unsupported value: "Sleeping"/);

  const gone = await applyNodeStatus(client, { namespace: ns, name: 'does-not-exist' }, 'kube-pcap-agent/node-a', { node: 'node-a', state: 'Capturing' });
  t.equal(gone, false, 'applying to a deleted capture reports false rather than throwing');
});

t.test('kubectl get packetcaptures shows selector, state summary and age', async (t) => {
  await c.applyManifest(manifest(ns, 'cols', '  selector: app == "web"'));
  const n1 = { node: 'n1', state: 'Capturing' } as const;
  const n2 = { node: 'n2', state: 'WaitingForTraffic' } as const;
  await applyNodeStatus(client, { namespace: ns, name: 'cols' }, 'kube-pcap-agent/n1', n1, summarizeStates([n1]));
  await applyNodeStatus(client, { namespace: ns, name: 'cols' }, 'kube-pcap-agent/n2', n2, summarizeStates([n1, n2]));
  const res = await c.kubectl(['get', 'packetcaptures', '-n', ns, 'cols']);
  t.equal(res.code, 0, res.stderr);
  const [header, row] = res.stdout.trim().split('\n');
  t.match(header, /^NAME\s+SELECTOR\s+STATE\s+AGE$/);
  t.match(row, /^cols\s+app == "web"\s+1 WaitingForTraffic, 1 Capturing\s+\d+s$/);
  const wide = await c.kubectl(['get', 'packetcaptures', '-n', ns, 'cols', '-o', 'wide']);
  t.match(wide.stdout.split('\n')[0], /STATE\s+START\s+END\s+AGE/, '-o wide adds the schedule');
});

t.test('summarizeStates counts nodes per state in a fixed order', async (t) => {
  t.equal(summarizeStates([]), '');
  t.equal(summarizeStates([{ node: 'a', state: 'Error' }, { node: 'b', state: 'Capturing' }, { node: 'c', state: 'Capturing' }]), '2 Capturing, 1 Error');
  t.equal(summarizeStates([{ node: 'a' }]), '1 Unknown');
});
