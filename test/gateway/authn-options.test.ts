// Authentication options, counted at the API server: --token-audiences binds accepted
// tokens to an audience (and so shuts out tokens that carry none of their own, such as
// static tokens); only an expired JWT is refused without an API call.
import t from 'tap';
import { apiServerRequests } from '../harness/apiserver-metrics.js';
import { privateCluster } from '../harness/cluster.js';
import { storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

const c = await privateCluster(t);
const w = await storefrontWorld(t, c, { gatewayArgs: ['--token-audiences=kube-pcap-gateway'] });
await w.grantFiles();
const ca = w.pki.ca.certFile;
const listing = `${w.gateway.url}/packet-capture/files/${w.ns}/pc-storefront-logging-dns`;

t.test('--token-audiences: a token for the gateway\'s audience is accepted, the API server\'s default is not', async (t) => {
  const forGateway = await c.tokenFor(w.ns, 'devops-sa', { audience: 'kube-pcap-gateway' });
  await waitFor(async () => (await https(listing, { caFile: ca, token: forGateway })).status === 200, { what: 'the audience-bound token to be allowed', timeoutMs: 15_000 });
  const res = await https(listing, { caFile: ca, token: w.devopsToken });
  t.equal(res.status, 401, 'a token bound to the API server only');
  t.match(res.json<{ message: string }>().message, /invalid bearer token/);
});

t.test('--token-audiences shuts out tokens without an audience of their own, such as static tokens', async (t) => {
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
