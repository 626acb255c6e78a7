// One user cannot take every place (docs/security.md, "One user and the others"): each
// identity holds at most --max-downloads-per-user downloads, --max-live-streams-per-user
// live streams and --max-requests-per-user requests in flight on a replica; beyond, 429 with
// Retry-After, while another user with the same permission still gets theirs.
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { startGateway } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c, { gatewayArgs: ['--max-downloads-per-user=1', '--max-live-streams-per-user=1'] });
await w.grantFiles();
// A second engineer of the namespace with the same files permission.
await c.createServiceAccount(w.ns, 'analyst');
await c.applyManifest(JSON.stringify({
  apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'analyst-files', namespace: w.ns },
  roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'packetcapture-files-reader' },
  subjects: [{ kind: 'ServiceAccount', name: 'analyst', namespace: w.ns }],
}));
const analyst = await c.tokenFor(w.ns, 'analyst');
await w.addFileOnFirstNode('logging-0_cali0-1700000000000050.pcap', (p) => writeDnsPcap(p, 200_000, { src: '192.0.2.10' }));
const ca = await readFile(w.pki.ca.certFile);

/** A response whose body is not read: it holds its place until destroyed. */
async function held(url: string, token: string): Promise<IncomingMessage> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.pause();
      resolve(res);
    });
    req.on('error', reject);
    req.end();
  });
}

for (const [what, url] of [['download', w.downloadUrl()], ['live stream', `${w.gateway.url}/packet-capture/stream/${w.ns}/${CAPTURE}`]] as const) {
  t.test(`a second ${what} of the same user is 429 with Retry-After; another user's is served`, async (t) => {
    const first = await held(url, w.devopsToken);
    t.equal(first.statusCode, 200, `the first ${what}`);
    const second = await https(url, { caFile: w.pki.ca.certFile, token: w.devopsToken });
    t.equal(second.status, 429);
    t.equal(second.headers['retry-after'], '5');
    t.match(second.json<{ message: string }>().message, /you already have 1 .* open on this gateway replica \(--max-(downloads|live-streams)-per-user=1\)/);
    const other = await held(url, analyst);
    t.equal(other.statusCode, 200, 'another user is not locked out');
    other.destroy();
    first.destroy();
    // The place is the user's again once the first response closed.
    const again = await waitFor(async () => {
      const r = await held(url, w.devopsToken);
      if (r.statusCode === 200) return r;
      r.destroy();
      return undefined;
    }, { what: `the user's ${what} place to be free again`, timeoutMs: 10_000, intervalMs: 100 });
    again.destroy();
  });
}

t.test('requests in flight per identity: beyond --max-requests-per-user, 429 with Retry-After; another user is served', async (t) => {
  const gw = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-per-user-requests', extraArgs: ['--max-requests-per-user=2', '--max-downloads-per-user=0'] });
  const download = `${gw.url}/packet-capture/download/${w.ns}/${CAPTURE}/files.zip`;
  const listing = `${gw.url}/packet-capture/files/${w.ns}/${CAPTURE}`;
  const holding = [await held(download, w.devopsToken), await held(download, w.devopsToken)];
  t.teardown(() => holding.forEach((r) => r.destroy()));
  t.same(holding.map((r) => r.statusCode), [200, 200], 'two downloads in flight');
  const third = await https(listing, { caFile: w.pki.ca.certFile, token: w.devopsToken });
  t.equal(third.status, 429, 'a third request of the same user, even a listing');
  t.equal(third.headers['retry-after'], '1');
  t.match(third.json<{ message: string }>().message, /you already have 2 requests open on this gateway replica \(--max-requests-per-user=2\)/);
  await checkResponse('GET', '/packet-capture/files/{namespace}/{name}', third.status, third.headers['content-type'] as string, third.body);
  t.equal((await https(listing, { caFile: w.pki.ca.certFile, token: analyst })).status, 200, 'another user is served meanwhile');
  holding.forEach((r) => r.destroy());
  await waitFor(async () => (await https(listing, { caFile: w.pki.ca.certFile, token: w.devopsToken })).status === 200, { what: 'the user\'s places to be free again', timeoutMs: 10_000, intervalMs: 100 });
  t.pass('served again once the downloads closed');
});
