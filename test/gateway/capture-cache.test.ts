// The gateway reads PacketCaptures and their node reports from its watch cache
// (src/gateway/capture-cache.ts): an authorized request costs the API server nothing once
// its reviews are cached, with the same answers as a GET: the files of every node that
// reports, a capture created a moment ago found (a GET when the cache has not seen it yet),
// and 404 for one that does not exist or was deleted.
import pino from 'pino';
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { CaptureCache } from '../../src/gateway/capture-cache.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { gatewayMetric } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const listing = (name: string) => https(`${w.gateway.url}/packet-capture/files/${w.ns}/${name}`, { caFile: ca, token: w.devopsToken });
const reads = async (source: 'cache' | 'api') => gatewayMetric(w.gateway, w.pki, 'kube_pcap_gateway_capture_reads_total', `source="${source}"`);
const expected = [...w.files.keys()].sort();
const filesOf = (body: { files: { node: string; file: string }[] }) => body.files.map((f) => `${f.node}/${f.file}`).sort();

t.test('listings come from the watch cache: every node\'s files, and no read of the API server per request', async (t) => {
  await waitFor(async () => {
    const r = await listing(CAPTURE);
    return r.status === 200 && (await reads('cache')) > 0 ? true : undefined;
  }, { what: 'a listing answered from the synced cache', timeoutMs: 20_000 });
  const [cache0, api0] = [await reads('cache'), await reads('api')];
  for (let i = 0; i < 20; i++) {
    const r = await listing(CAPTURE);
    t.equal(r.status, 200);
    t.same(filesOf(r.json()), expected, 'the files of both nodes, from their cached reports');
  }
  t.equal((await reads('cache')) - cache0, 20, 'each request read the cache');
  t.equal((await reads('api')) - api0, 0, 'and none read the API server');
});

t.test('a capture created a moment ago is found; one never created, or deleted, is 404', async (t) => {
  for (let i = 0; i < 10; i++) {
    const name = `fresh-${i}`;
    await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${name}, namespace: ${w.ns}}\nspec: {selector: 'app == "none"'}\n`, { token: w.devopsToken });
    const r = await listing(name);
    t.equal(r.status, 200, `${name} found at once: ${r.body.toString().slice(0, 200)}`);
    t.same(r.json<{ files: unknown[] }>().files, []);
  }
  const missing = await listing('never-created');
  t.equal(missing.status, 404);
  t.equal(missing.json<{ reason: string }>().reason, 'NotFound');
  const del = await c.kubectl(['delete', 'packetcapture', 'fresh-0', '-n', w.ns]);
  t.equal(del.code, 0, del.stderr);
  const gone = await listing('fresh-0');
  t.equal(gone.status, 404, 'deleted: 404 (the cache forgot it, or had not yet and the GET says so)');
});

t.test('a cache that has not synced reads the API server, with the same answer', async (t) => {
  const kube = await connect(c.info.kubeconfig);
  t.teardown(() => kube.close());
  const sources: string[] = [];
  const cold = new CaptureCache(kube, { log: pino({ level: 'silent' }), apiTimeoutMs: 5_000, metrics: { read: (s) => sources.push(s) } });
  const read = await cold.read(w.ns, CAPTURE);
  t.equal(read.capture?.metadata.name, CAPTURE);
  t.same(read.reports.map((r) => r.spec.nodeName).sort(), [w.nodeName('node-1'), w.nodeName('node-2')].sort(), 'its reports, listed');
  t.same((await cold.read(w.ns, 'never-created')).capture, undefined);
  t.same(sources, ['api', 'api']);

  cold.start();
  t.teardown(() => cold.stop());
  await waitFor(async () => (cold.synced ? true : undefined), { what: 'the cache to sync', timeoutMs: 10_000 });
  const warm = await cold.read(w.ns, CAPTURE);
  t.same(warm.reports.map((r) => r.metadata.name).sort(), read.reports.map((r) => r.metadata.name).sort(), 'the same reports from memory');
  t.equal(warm.capture?.metadata.uid, read.capture?.metadata.uid);
  t.equal(sources.at(-1), 'cache');
});
