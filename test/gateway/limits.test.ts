// The gateway against slow and greedy clients: size limits on headers and bodies, a time
// limit on receiving a request, and back-pressure: a slow reader is not served from a
// buffer the gateway fills at network speed.
import { connect } from 'node:tls';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { gatewayMetricsText, scratchDir } from '../harness/kube-pcap.js';
import { writeLargePcap } from '../harness/pcap-fixtures.js';
import { OwnedProcess, rssBytes } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const big = 'logging-0_cali0-1699999999999999.pcap';
await w.addFileOnFirstNode(big, (path) => writeLargePcap(path, 256 << 20));

t.test('headers beyond 32 KiB are refused with 431', async (t) => {
  const res = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken, headers: { 'x-padding': 'x'.repeat(40 * 1024) } });
  t.equal(res.status, 431);
});

t.test('a body beyond 16 KiB is refused with 413', async (t) => {
  const res = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken, method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pad: 'x'.repeat(20 * 1024) }) });
  t.equal(res.status, 413);
  t.equal(res.json<{ reason: string }>().reason, 'RequestEntityTooLarge');
});

t.test('a client that never finishes its request is disconnected', async (t) => {
  const started = Date.now();
  const closed = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: w.gateway.port, rejectUnauthorized: false }, () => {
      // A request line and one header, then silence (slow loris).
      s.write('GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n');
    });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    setTimeout(() => reject(new Error('still connected after 40 s')), 40_000).unref();
  });
  t.ok(Date.now() - started < 40_000, `the gateway closed the connection after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  t.match(closed, /^$|HTTP\/1\.1 408/, 'with nothing or 408, never a response to half a request');
});

t.test('back-pressure: a slow client does not make the gateway read the files ahead into memory', async (t) => {
  await waitFor(async () => (await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken })).status === 200, { what: 'the grant', timeoutMs: 15_000 });
  const before = await rssBytes(w.gateway.proc.pid);
  const dir = await scratchDir(t, 'slow');
  const curl = new OwnedProcess('curl', ['-sS', '--limit-rate', '2M', '-k', '-o', join(dir, 'f.zip'), '-H', `Authorization: Bearer ${w.devopsToken}`, w.downloadUrl()], { name: 'slow curl', logFile: join(dir, 'curl.log') });
  t.teardown(() => curl.kill());
  // While 256 MiB wait at the agent, the client has taken a few MiB.
  let peak = before;
  await waitFor(async () => {
    peak = Math.max(peak, await rssBytes(w.gateway.proc.pid));
    const streamed = /kube_pcap_gateway_bytes_streamed_total (\d+)/.exec(await gatewayMetricsText(w.gateway, w.pki));
    return streamed && Number(streamed[1]) > 6 << 20;
  }, { what: '6 MiB to reach the slow client', timeoutMs: 30_000, intervalMs: 200 });
  t.ok(peak - before < 64 << 20, `the gateway grew by ${((peak - before) / 2 ** 20).toFixed(0)} MiB while a 256 MiB file waited (less than 64 MiB)`);
  await curl.kill();
});
