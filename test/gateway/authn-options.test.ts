// Authentication options, counted at the API server: --token-audiences binds accepted
// tokens to an audience, and tokens that are not JWTs are refused without any API call.
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

t.test('tokens that are not JWTs never cost a TokenReview', async (t) => {
  const before = await apiServerRequests(c, 'tokenreviews');
  for (const token of ['abcdef.0123456789abcdef', 'opaque-static-token', 'a.b.c', `x.${Buffer.from('{}').toString('base64url')}.y`]) {
    t.equal((await https(listing, { caFile: ca, token })).status, 401, token);
  }
  t.equal(await apiServerRequests(c, 'tokenreviews') - before, 0, 'no TokenReview was sent');
});
