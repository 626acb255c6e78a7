// What bad credentials may cost, counted at a real API server of this file's own (it is
// paused in one test): a per-client limit of failed authentications (429, no review), the
// forwarded address only from a trusted proxy, a bounded lane of reviews for tokens never
// seen valid (503 beyond its queue) that known-valid tokens never wait in, and connection
// limits (a handshake timeout, a maximum of connections).
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { apiServerRequests } from '../harness/apiserver-metrics.js';
import { privateCluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, type Response } from '../harness/http.js';
import { checkResponse } from '../harness/openapi.js';
import { gatewayMetricsText, startGateway, type GatewayHandle } from '../harness/kube-pcap.js';
import { unissuedJwt } from '../harness/tokens.js';
import { waitFor } from '../harness/wait.js';

const c = await privateCluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const garbage = unissuedJwt;

async function gateway(name: string, args: string[]): Promise<GatewayHandle> {
  return await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name, extraArgs: args });
}
const listing = (gw: GatewayHandle): string => `${gw.url}/packet-capture/files/${w.ns}/${CAPTURE}`;

async function metric(gw: GatewayHandle, name: string): Promise<number> {
  const text = await gatewayMetricsText(gw, w.pki);
  return text.split('\n').filter((l) => l.startsWith(name)).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

// Loopback is a client of its own here (--shared-client-addresses=), as an attacker's
// address is; network-peers.test.ts shows why it is not by default.
const limited = await gateway('gateway-limited', ['--authn-failure-limit=5', '--authn-failure-window-seconds=600', '--shared-client-addresses=']);
const proxied = await gateway('gateway-proxied', ['--authn-failure-limit=3', '--authn-failure-window-seconds=600', '--trusted-proxies=127.0.0.1']);
const laned = await gateway('gateway-laned', ['--authn-failure-limit=0', '--authn-unverified-max-inflight=2', '--authn-unverified-queue=4', '--authn-cache-ttl-seconds=0', '--api-timeout-seconds=60']);
const tight = await gateway('gateway-tight', ['--max-connections=3', '--tls-handshake-timeout-seconds=1']);

t.test('failed authentications are limited per client: 429 with Retry-After and no review; a known-valid token never is', async (t) => {
  const ok = await waitFor(async () => {
    const r = await https(listing(limited), { caFile: ca, token: w.devopsToken });
    return r.status === 200 ? r : undefined;
  }, { what: 'devops-sa to be allowed', timeoutMs: 15_000 });
  t.equal(ok.status, 200, 'devops-sa\'s token is now known valid');
  const before = await apiServerRequests(c, 'tokenreviews');
  for (let i = 0; i < 5; i++) t.equal((await https(listing(limited), { caFile: ca, token: garbage() })).status, 401, `failure ${i + 1}`);
  t.equal(await apiServerRequests(c, 'tokenreviews') - before, 5, 'five reviews');
  const over: Response = await https(listing(limited), { caFile: ca, token: garbage() });
  t.equal(over.status, 429);
  t.match(over.json<{ reason: string; message: string }>(), { reason: 'TooManyRequests', message: /too many failed authentications/ });
  t.ok(Number(over.headers['retry-after']) >= 1, `Retry-After ${over.headers['retry-after']}`);
  await checkResponse('GET', '/packet-capture/files/{namespace}/{name}', over.status, over.headers['content-type'] as string, over.body);
  t.equal((await https(listing(limited), { caFile: ca, headers: { authorization: 'Basic x' } })).status, 429, 'a malformed header too');
  t.equal(await apiServerRequests(c, 'tokenreviews') - before, 5, 'no review once limited');
  t.equal((await https(listing(limited), { caFile: ca, token: w.devopsToken })).status, 200, 'the known-valid token of the same client is served');
  t.equal(await metric(limited, 'kube_pcap_gateway_authn_refused_total{reason="rate_limited"}'), 2);
});

t.test('the forwarded address counts only from a trusted proxy', async (t) => {
  const from = (ip: string) => ({ caFile: ca, token: garbage(), headers: { 'x-forwarded-for': ip } });
  for (let i = 0; i < 3; i++) t.equal((await https(listing(proxied), from('203.0.113.5'))).status, 401);
  t.equal((await https(listing(proxied), from('203.0.113.5'))).status, 429, 'the client behind the proxy is limited');
  t.equal((await https(listing(proxied), from('203.0.113.6'))).status, 401, 'another client behind the same proxy is not');
  // The limited gateway trusts no proxy: the header changes nothing there.
  t.equal((await https(listing(limited), from('203.0.113.7'))).status, 429, 'an untrusted X-Forwarded-For is ignored');
});

t.test('tokens never seen valid share a bounded lane; known-valid tokens never wait in it', async (t) => {
  t.equal((await https(listing(laned), { caFile: ca, token: w.devopsToken })).status, 200, 'devops-sa known valid here too');
  // Read once now: the scraper's reviews are cached (a minute) and answer while the API server is paused.
  await metric(laned, 'kube_pcap_gateway_unverified_tokenreviews_in_flight ');
  const before = await apiServerRequests(c, 'tokenreviews');
  c.controlPlane!.pauseApiServer();
  let resumed = false;
  t.teardown(() => {
    if (!resumed) c.controlPlane!.resumeApiServer();
  });
  // Ten at once while the API server cannot answer: two reviews in flight, four queued,
  // four turned away at once.
  const flood = Array.from({ length: 10 }, () => https(listing(laned), { caFile: ca, token: garbage() }));
  const settled: Response[] = [];
  for (const p of flood) void p.then((r) => settled.push(r));
  await waitFor(async () => settled.length >= 4, { what: 'the requests beyond the queue to be answered', timeoutMs: 15_000 });
  t.same(settled.map((r) => r.status), [503, 503, 503, 503], 'four answered 503 without waiting');
  t.ok(settled.every((r) => Number(r.headers['retry-after']) >= 1), 'with Retry-After');
  t.match(settled[0]!.json<{ message: string }>().message, /too many unverified credentials/);
  await checkResponse('GET', '/packet-capture/files/{namespace}/{name}', settled[0]!.status, settled[0]!.headers['content-type'] as string, settled[0]!.body);
  // A known-valid token needs a review too (cache TTL 0 here), but not a place in that lane.
  let knownAnswer: Response | undefined;
  const known = https(listing(laned), { caFile: ca, token: w.devopsToken }).then((r) => {
    knownAnswer = r;
  });
  t.equal(await metric(laned, 'kube_pcap_gateway_unverified_tokenreviews_in_flight '), 2, 'two unknown reviews in flight');
  t.equal(knownAnswer, undefined, 'the known token is waiting for the API server, not refused for a full queue');
  c.controlPlane!.resumeApiServer();
  resumed = true;
  await known;
  t.equal(knownAnswer?.status, 200, 'and is served once the API server answers');
  const rest = await Promise.all(flood);
  t.same(rest.map((r) => r.status).sort(), [401, 401, 401, 401, 401, 401, 503, 503, 503, 503], 'the queued six were reviewed and refused');
  t.equal(await metric(laned, 'kube_pcap_gateway_unverified_tokenreviews_in_flight_peak'), 2, 'never more than two unknown reviews at once');
  t.equal(await metric(laned, 'kube_pcap_gateway_authn_refused_total{reason="queue_full"}'), 4);
  t.equal(await apiServerRequests(c, 'tokenreviews') - before, 7, 'six unknown reviews and the known one; none for the four refused');
});

t.test('a connection that does not finish its TLS handshake is closed', async (t) => {
  let closed = false;
  const s = tcpConnect({ host: '127.0.0.1', port: tight.port });
  s.on('close', () => {
    closed = true;
  });
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  // Node's default would keep it for 120 s; the deadline is far below that.
  await waitFor(async () => closed, { what: 'the gateway to close a connection without a handshake', timeoutMs: 10_000, intervalMs: 100 });
  t.ok(closed, 'closed by the gateway (--tls-handshake-timeout-seconds=1), not by the test');
});

t.test('beyond --max-connections a connection is closed on arrival; below it, served again', async (t) => {
  // Connections are opened one by one and held; the harness may still hold an idle one
  // of its own, so the first refusal comes at the fourth connection or before.
  const held: ReturnType<typeof tlsConnect>[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  let refusedAt: number | undefined;
  for (let i = 1; i <= 4 && refusedAt === undefined; i++) {
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: tight.port, rejectUnauthorized: false }, () => {
        held.push(s);
        resolve('served');
      });
      s.on('error', (e) => resolve(`refused: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      s.on('close', () => resolve('refused: closed'));
    });
    if (outcome !== 'served') refusedAt = i;
  }
  t.ok(refusedAt !== undefined && refusedAt <= 4, `a connection beyond three is refused (the ${refusedAt}th)`);
  for (const s of held) s.destroy();
  await waitFor(async () => (await https(`${tight.url}/openapi.yaml`, { caFile: ca, headers: { connection: 'close' } }).catch(() => undefined))?.status === 200, { what: 'the gateway to accept again', timeoutMs: 10_000 });
  t.pass('served again once connections closed');
});
