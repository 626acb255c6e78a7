// Reviews are cached and coalesced: a burst of requests with one token costs the API server
// one TokenReview and one SubjectAccessReview (counted by the API server itself), and the
// answers are asked again once their TTL is over.
import t from 'tap';
import { connect } from '../../src/kube/config.js';
import { TokenReviewAuthenticator } from '../../src/auth/authentication/token-review.js';
import { decodeJwt } from '../../src/auth/authentication/bearer.js';
import type { CacheOutcome } from '../../src/auth/review-cache.js';
import { apiServerRequests } from '../harness/apiserver-metrics.js';
import { privateCluster } from '../harness/cluster.js';
import { storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { gatewayMetricsText } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

// Its own API server, so that its request counters see only this test's reviews.
const c = await privateCluster(t);
// One user's burst: without the per-user limit of downloads (per-user-limits.test.ts), which
// would turn most of it away before any review.
const w = await storefrontWorld(t, c, { gatewayArgs: ['--authn-cache-ttl-seconds=2', '--authz-allow-ttl-seconds=2', '--authz-deny-ttl-seconds=2', '--max-downloads-per-user=0', '--max-requests-per-user=0'] });
await w.grantFiles();
const ca = w.pki.ca.certFile;
// A capture without files: the request is authenticated, authorized and answered 404
// without any agent call (agents review the gateway's token, which would muddle the count).
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: empty, namespace: ${w.ns}}\nspec: {selector: all()}\n`);
const url = `${w.gateway.url}/packet-capture/download/${w.ns}/empty/files.zip`;

t.test('100 concurrent requests with one token: one TokenReview, one SubjectAccessReview', async (t) => {
  await waitFor(async () => (await https(url, { caFile: ca, token: w.devopsToken })).status === 404, { what: 'the grant', timeoutMs: 15_000 });
  const token = await c.tokenFor(w.ns, 'devops-sa');
  const [tr0, sar0] = [await apiServerRequests(c, 'tokenreviews'), await apiServerRequests(c, 'subjectaccessreviews')];
  const answers = await Promise.all(Array.from({ length: 100 }, () => https(url, { caFile: ca, token })));
  t.same([...new Set(answers.map((a) => a.status))], [404], 'every request was authorized (404 NoFiles)');
  t.equal(await apiServerRequests(c, 'tokenreviews') - tr0, 1, 'one TokenReview');
  t.equal(await apiServerRequests(c, 'subjectaccessreviews') - sar0, 1, 'one SubjectAccessReview');
  // Whether a given request waited for the one review in flight (coalesced) or found its
  // answer cached (hit) depends on timing; that none asked again does not.
  const metrics = await gatewayMetricsText(w.gateway, w.pki);
  const lookups = (result: string) => Number(new RegExp(`kube_pcap_review_cache_lookups_total\\{review="tokenreview",result="${result}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
  t.ok(lookups('hit') + lookups('coalesced') >= 99, `the other 99 were served by the cache or the review in flight (${lookups('hit')} hits, ${lookups('coalesced')} coalesced)`);
});

t.test('after the TTL, the next request is reviewed again', async (t) => {
  const token = await c.tokenFor(w.ns, 'devops-sa');
  const tr0 = await apiServerRequests(c, 'tokenreviews');
  await https(url, { caFile: ca, token });
  await https(url, { caFile: ca, token });
  t.equal(await apiServerRequests(c, 'tokenreviews') - tr0, 1, 'the second request used the cache');
  await waitFor(async () => {
    await https(url, { caFile: ca, token });
    return (await apiServerRequests(c, 'tokenreviews')) - tr0 >= 2;
  }, { what: 'a fresh TokenReview once the 2 s TTL is over', timeoutMs: 15_000, intervalMs: 250 });
  t.pass('reviewed again');
});

t.test('a cached identity is never used past the token\'s own expiry', async (t) => {
  // The authenticator in-process against the same API server, with a clock we can move.
  const kube = await connect(c.info.kubeconfig);
  t.teardown(() => kube.close());
  let now = Date.now();
  const outcomes: CacheOutcome[] = [];
  const authn = new TokenReviewAuthenticator(kube, { audiences: [], successTtlMs: 3_600_000, failureTtlMs: 0, maxEntries: 10, timeoutMs: 5000, onLookup: (o) => outcomes.push(o) }, () => now);
  const token = await c.tokenFor(w.ns, 'devops-sa', { expirationSeconds: 600 });
  const jwt = decodeJwt(token)!;
  await authn.authenticate(token, jwt);
  await authn.authenticate(token, jwt);
  t.same(outcomes, ['miss', 'hit'], 'cached for an hour\'s TTL...');
  now = (jwt.claims.exp! * 1000) + 1;
  await authn.authenticate(token, jwt).catch(() => undefined);
  t.same(outcomes, ['miss', 'hit', 'miss'], '...but not past the token\'s exp, even with a longer TTL');
});

t.test('a denial is cached separately and briefly', async (t) => {
  await c.createServiceAccount(w.ns, 'denied');
  const token = await c.tokenFor(w.ns, 'denied');
  const sar0 = await apiServerRequests(c, 'subjectaccessreviews');
  t.equal((await https(url, { caFile: ca, token })).status, 403);
  t.equal((await https(url, { caFile: ca, token })).status, 403);
  t.equal(await apiServerRequests(c, 'subjectaccessreviews') - sar0, 1, 'the second denial came from the cache');
});
