// Authentication options, counted at the API server: --audience-bound-tokens-only accepts
// only tokens bound to --token-audiences (and so shuts out users' full API credentials and
// tokens that carry no audience of their own, such as static tokens); only an expired JWT
// is refused without an API call.
import t from 'tap';
import { apiServerRequests } from '../harness/apiserver-metrics.js';
import { privateCluster } from '../harness/cluster.js';
import { storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { startGateway } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await privateCluster(t);
const w = await storefrontWorld(t, c, { gatewayArgs: ['--token-audiences=kube-pcap-gateway', '--audience-bound-tokens-only'] });
await w.grantFiles();
const ca = w.pki.ca.certFile;
const listing = `${w.gateway.url}/packet-capture/files/${w.ns}/pc-storefront-logging-dns`;

t.test('--audience-bound-tokens-only: a token for the gateway\'s audience is accepted, the API server\'s default is not', async (t) => {
  const forGateway = await c.tokenFor(w.ns, 'devops-sa', { audience: 'kube-pcap-gateway' });
  await waitFor(async () => (await https(listing, { caFile: ca, token: forGateway })).status === 200, { what: 'the audience-bound token to be allowed', timeoutMs: 15_000 });
  const res = await https(listing, { caFile: ca, token: w.devopsToken });
  t.equal(res.status, 401, 'a token bound to the API server only');
  t.match(res.json<{ message: string }>().message, /invalid bearer token/);
});

t.test('--audience-bound-tokens-only shuts out tokens without an audience of their own, such as static tokens', async (t) => {
  // The API server accepts an audience-less token only for its own audiences.
  const alice = c.info.staticTokens[0]!;
  const res = await https(listing, { caFile: ca, token: alice.token });
  t.equal(res.status, 401, 'a static token, valid for the API server itself');
  t.match(res.json<{ message: string }>().message, /invalid bearer token/);
});

t.test('opaque tokens go to TokenReview (once: a rejection is remembered); only an expired JWT is refused locally', async (t) => {
  const before = await apiServerRequests(c, 'tokenreviews');
  const opaque = ['abcdef.0123456789abcdef', 'opaque-static-token', 'a.b.c', `x.${Buffer.from('{}').toString('base64url')}.y`];
  for (const token of opaque) {
    t.equal((await https(listing, { caFile: ca, token })).status, 401, token);
    t.equal((await https(listing, { caFile: ca, token })).status, 401, `${token} again`);
  }
  t.equal(await apiServerRequests(c, 'tokenreviews') - before, opaque.length, 'one TokenReview per distinct token');
  const now = Math.floor(Date.now() / 1000);
  const expired = [{ alg: 'RS256' }, { sub: 'x', exp: now - 10 }].map((p) => Buffer.from(JSON.stringify(p)).toString('base64url')).join('.') + '.c2ln';
  const mid = await apiServerRequests(c, 'tokenreviews');
  const res = await https(listing, { caFile: ca, token: expired });
  t.equal(res.status, 401);
  t.match(res.json<{ message: string }>().message, /expired/);
  t.equal(await apiServerRequests(c, 'tokenreviews') - mid, 0, 'no TokenReview for a JWT that has expired');
});

t.test('by default a token minted for the gateway (audience kube-pcap) is accepted beside API credentials, and is useless against the API server', async (t) => {
  const gw = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-default-audiences' });
  const url = `${gw.url}/packet-capture/files/${w.ns}/pc-storefront-logging-dns`;
  const bound = await c.tokenFor(w.ns, 'devops-sa', { audience: 'kube-pcap', expirationSeconds: 600 });
  t.equal((await https(url, { caFile: ca, token: bound })).status, 200, 'the kube-pcap token at the gateway');
  t.equal((await https(url, { caFile: ca, token: w.devopsToken })).status, 200, 'the API credential too (--audience-bound-tokens-only is off)');
  const other = await c.tokenFor(w.ns, 'devops-sa', { audience: 'someone-else', expirationSeconds: 600 });
  t.equal((await https(url, { caFile: ca, token: other })).status, 401, 'a token for another audience');
  const atApi = await https(`${c.info.server}/api/v1/namespaces/${w.ns}/pods`, { caFile: c.info.caFile, token: bound });
  t.equal(atApi.status, 401, 'the kube-pcap token opens nothing at the API server');
});
