// The agent's view of PacketCaptures (docs/status.md, "Watching at scale"), on a real API
// server: whole captures from the list, metadata only from the watch; a status write (the
// aggregator's, as large as the cluster) is neither fetched nor passed on, a spec change is
// fetched once, a metadata change someone acts on (an annotation) is passed on.
import t from 'tap';
import { CaptureSpecs } from '../../src/agent/capture-specs.js';
import { connect } from '../../src/kube/config.js';
import { createLogger } from '../../src/log/logger.js';
import { cluster } from '../harness/cluster.js';
import { installCrd } from '../harness/crd.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
await installCrd(c);
const kube = await connect(c.info.kubeconfig);
t.teardown(() => kube.close());
const ns = await c.createNamespace('specs');
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: listed, namespace: ${ns}}\nspec: {selector: app == "a"}\n`);
// The first list is answered from the API server's watch cache (resourceVersion=0), which can
// lag a write by a moment; a capture it has not seen yet would arrive as a watch event and be
// fetched. Wait until the cache holds it, so the list below is the one that carries it.
await waitFor(async () => {
  const r = await kube.request<{ items: { metadata: { name: string } }[] }>({ path: `/apis/projectcalico.org/v3/namespaces/${ns}/packetcaptures`, query: { resourceVersion: '0' } });
  return r.items.some((i) => i.metadata.name === 'listed');
}, { what: 'the watch cache to hold the listed capture', timeoutMs: 10_000 });
const specs = new CaptureSpecs(kube, { log: createLogger('warn', 'capture-specs-test'), timeoutMs: 10_000 });
const changes: string[] = [];
// The API server is shared with tests running beside this one: only this namespace's events count.
specs.on('change', (type, pc) => {
  if (pc?.metadata.namespace === ns) changes.push(`${type} ${pc.metadata.name}`);
});
specs.start();
t.teardown(() => specs.stop());
await waitFor(() => specs.synced, { what: 'the first list', timeoutMs: 10_000 });

t.test('listed captures are whole, with their spec', async (t) => {
  t.equal(specs.items.get(`${ns}/listed`)?.spec?.selector, 'app == "a"');
  t.equal(specs.fetches, 0, 'no capture fetched one by one');
});

t.test('a capture created later is fetched once; a status write costs nothing; a spec change is fetched', async (t) => {
  const before = specs.fetches;
  await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: later, namespace: ${ns}}\nspec: {selector: app == "b"}\n`);
  await waitFor(() => specs.items.get(`${ns}/later`)?.spec?.selector === 'app == "b"', { what: 'the new capture with its spec', timeoutMs: 10_000 });
  const fetched = specs.fetches;
  t.equal(fetched, before + 1, 'one fetch for the new capture');

  changes.length = 0;
  const files = Array.from({ length: 300 }, (_, i) => ({ node: `node-${i}`, directory: '/var/lib/kube-pcap/x', fileNames: [`p-${i}_cali${i}.pcap`], state: 'Capturing' }));
  await kube.request({ method: 'PATCH', path: `/apis/projectcalico.org/v3/namespaces/${ns}/packetcaptures/later/status`, contentType: 'application/merge-patch+json', body: { status: { files, summary: '300 Capturing' } } });
  // The annotation after it is the marker: once it is seen, the status write was seen first.
  const r = await c.kubectl(['annotate', '-n', ns, 'packetcaptures.projectcalico.org', 'later', 'marker=1']);
  t.equal(r.code, 0, r.stderr);
  await waitFor(() => changes.includes(`MODIFIED later`), { what: 'the annotation to be passed on', timeoutMs: 10_000 });
  t.same(changes, ['MODIFIED later'], 'the status write was not passed on; the annotation was');
  t.equal(specs.fetches, fetched, 'and nothing was fetched for either');
  t.equal(specs.items.get(`${ns}/later`)?.status, undefined, 'the status is not kept');

  await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: later, namespace: ${ns}}\nspec: {selector: app == "c"}\n`);
  await waitFor(() => specs.items.get(`${ns}/later`)?.spec?.selector === 'app == "c"', { what: 'the new spec', timeoutMs: 10_000 });
  t.equal(specs.fetches, fetched + 1, 'a spec change is one fetch');
});

t.test('a deleted capture leaves, with its last known spec in the event', async (t) => {
  changes.length = 0;
  const r = await c.kubectl(['delete', '-n', ns, 'packetcaptures.projectcalico.org', 'listed']);
  t.equal(r.code, 0, r.stderr);
  await waitFor(() => !specs.items.has(`${ns}/listed`), { what: 'the capture to leave', timeoutMs: 10_000 });
  t.same(changes, ['DELETED listed']);
});
