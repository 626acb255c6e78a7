// Many users at once (docs/status.md is about the API side; this is the gateway's): a
// replica streams at most --max-concurrent-downloads zips, queues --download-queue more,
// and answers 429 with Retry-After beyond; a place is held until the response closes and
// passes to the next in the queue.
import { request as httpsRequest } from 'node:https';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { gatewayMetric } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c, { gatewayArgs: ['--max-concurrent-downloads=1', '--download-queue=1'] });
await w.grantFiles();
// A file big enough that a client that does not read keeps its download open.
await w.addFileOnFirstNode('logging-0_cali0-1700000000000050.pcap', (p) => writeDnsPcap(p, 200_000, { src: '192.0.2.10' }));
const ca = await readFile(w.pki.ca.certFile);

/** Starts a download whose body is not read: it holds its place until destroyed. */
async function stalledDownload(): Promise<IncomingMessage> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(w.downloadUrl(), { ca, headers: { authorization: `Bearer ${w.devopsToken}` } }, (res) => {
      res.pause();
      resolve(res);
    });
    req.on('error', reject);
    req.end();
  });
}

async function gauge(name: string): Promise<number> {
  return await gatewayMetric(w.gateway, w.pki, name);
}

t.test('one streaming, one queued, the next one 429 with Retry-After; the queued one goes when the first closes', async (t) => {
  const first = await stalledDownload();
  t.equal(first.statusCode, 200, 'the first download streams');
  await waitFor(async () => (await gauge('kube_pcap_gateway_downloads_in_flight')) === 1, { what: 'one download in flight', timeoutMs: 5000 });

  const queued = https(w.downloadUrl(), { caFile: w.pki.ca.certFile, token: w.devopsToken, timeoutMs: 60_000 });
  await waitFor(async () => (await gauge('kube_pcap_gateway_downloads_queued')) === 1, { what: 'the second download to queue', timeoutMs: 5000 });

  const refused = await https(w.downloadUrl(), { caFile: w.pki.ca.certFile, token: w.devopsToken });
  t.equal(refused.status, 429, 'beyond the queue: 429');
  t.equal(refused.headers['retry-after'], '5');
  const status = refused.json<{ reason: string; message: string; details: { retryAfterSeconds: number } }>();
  t.equal(status.reason, 'TooManyRequests');
  t.match(status.message, /too many downloads in progress/);
  t.equal(status.details.retryAfterSeconds, 5);
  await checkResponse('GET', '/packet-capture/download/{namespace}/{name}/files.zip', refused.status, refused.headers['content-type'] as string, refused.body);

  first.destroy();
  const second = await queued;
  t.equal(second.status, 200, 'the queued download got the place when the first closed');
  t.equal(second.body.subarray(0, 2).toString(), 'PK');
  await waitFor(async () => (await gauge('kube_pcap_gateway_downloads_in_flight')) === 0, { what: 'every place given back', timeoutMs: 5000 });
  t.equal(await gauge('kube_pcap_gateway_downloads_queued'), 0);
});

t.test('a place is given back when the download fails before streaming (404) and when the client leaves while queued', async (t) => {
  const missing = await https(`${w.gateway.url}/packet-capture/download/${w.ns}/no-such-capture/files.zip`, { caFile: w.pki.ca.certFile, token: w.devopsToken });
  t.ok(missing.status === 404 || missing.status === 403, `${missing.status}`);
  const holder = await stalledDownload();
  const leaver = await new Promise<void>((resolve) => {
    const req = httpsRequest(w.downloadUrl(), { ca, headers: { authorization: `Bearer ${w.devopsToken}` } }, () => undefined);
    req.on('error', () => resolve());
    req.end();
    void waitFor(async () => (await gauge('kube_pcap_gateway_downloads_queued')) === 1, { what: 'the leaver to queue', timeoutMs: 5000 }).then(() => req.destroy());
  });
  void leaver;
  holder.destroy();
  await waitFor(async () => (await gauge('kube_pcap_gateway_downloads_in_flight')) === 0 && (await gauge('kube_pcap_gateway_downloads_queued')) === 0, { what: 'no place kept by a client that left', timeoutMs: 10_000 });
  const after = await https(w.downloadUrl(), { caFile: w.pki.ca.certFile, token: w.devopsToken, timeoutMs: 60_000 });
  t.equal(after.status, 200, 'the next download streams');
});
