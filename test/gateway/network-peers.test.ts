// What a network peer can do to the gateway before it authenticates (docs/security.md,
// "A network peer"): probes and /metrics live on the operations listener, so a flood that
// fills the API listener does not fail the probes; /metrics asks who reads it; one source
// address holds at most --max-connections-per-address connections; and loopback, where every
// `kubectl port-forward` user arrives, is not one client, so one user's failed
// authentications do not lock the others out.
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { gatewayMetric, startGateway, type GatewayHandle } from '../harness/kube-pcap.js';
import { unissuedJwt } from '../harness/tokens.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const garbage = unissuedJwt;
const listing = (gw: GatewayHandle): string => `${gw.url}/packet-capture/files/${w.ns}/${CAPTURE}`;

async function gateway(name: string, args: string[]): Promise<GatewayHandle> {
  return await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name, extraArgs: args });
}

/** A TLS connection from `localAddress`: 'held' once its handshake is done, or why it was refused. */
async function open(gw: GatewayHandle, localAddress: string, held: TLSSocket[]): Promise<string> {
  return await new Promise<string>((resolve) => {
    const tcp = tcpConnect({ host: '127.0.0.1', port: gw.port, localAddress });
    tcp.on('error', () => undefined);
    const s = tlsConnect({ socket: tcp, rejectUnauthorized: false }, () => {
      held.push(s);
      resolve('held');
    });
    s.on('error', (e) => resolve(`refused: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    s.on('close', () => resolve('refused: closed'));
  });
}

/** A ServiceAccount of the namespace with the files permission, whose token no gateway has seen. */
async function freshEngineer(name: string): Promise<string> {
  await c.createServiceAccount(w.ns, name);
  await c.applyManifest(JSON.stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${name}-files`, namespace: w.ns },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'packetcapture-files-reader' },
    subjects: [{ kind: 'ServiceAccount', name, namespace: w.ns }],
  }));
  return await c.tokenFor(w.ns, name);
}

t.test('probes and /metrics answer on the operations listener while the API listener is full', async (t) => {
  const gw = await gateway('gateway-ops', ['--max-connections=3']);
  const api = await https(`${gw.url}/healthz`, { caFile: ca });
  t.equal(api.status, 404, 'the API listener serves no probes');
  t.equal((await https(`${gw.url}/metrics`, { caFile: ca })).status, 404, 'nor /metrics');
  const held: TLSSocket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  let refused = false;
  for (let i = 0; i < 4 && !refused; i++) refused = (await open(gw, '127.0.0.1', held)) !== 'held';
  t.ok(refused, `the API listener is full after ${held.length} connections`);
  t.equal((await https(`${gw.opsUrl}/readyz`, { caFile: ca })).status, 200, '/readyz still answers');
  t.equal((await https(`${gw.opsUrl}/healthz`, { caFile: ca })).status, 200, '/healthz too');
  const anonymous = await https(`${gw.opsUrl}/metrics`, { caFile: ca });
  t.equal(anonymous.status, 401, '/metrics without a token');
  t.match(anonymous.headers['www-authenticate'], /^Bearer/);
  t.equal((await https(`${gw.opsUrl}/metrics`, { caFile: ca, token: w.devopsToken })).status, 403, '/metrics with a token not allowed get /metrics');
  const scraped = await https(`${gw.opsUrl}/metrics`, { caFile: ca, token: gw.metricsToken });
  t.equal(scraped.status, 200, 'a scraper allowed get on /metrics reads them');
  t.match(scraped.body.toString(), /kube_pcap_gateway_http_requests_total\{route="\/metrics"|kube_pcap_gateway_http_requests_total/);
  held.forEach((s) => s.destroy());
});

t.test('one source address holds at most --max-connections-per-address; another address is served', async (t) => {
  // Loopback is one client per address here: only ::1 stands for many.
  const gw = await gateway('gateway-per-address', ['--max-connections-per-address=3', '--shared-client-addresses=::1']);
  const held: TLSSocket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  const outcomes: string[] = [];
  for (let i = 0; i < 4; i++) outcomes.push(await open(gw, '127.0.0.2', held));
  t.same(outcomes.slice(0, 3), ['held', 'held', 'held'], 'three connections from 127.0.0.2');
  t.match(outcomes[3], /^refused/, 'the fourth is closed on arrival');
  t.equal(await open(gw, '127.0.0.3', held), 'held', 'a connection from 127.0.0.3 is served');
  t.equal(await gatewayMetric(gw, w.pki, 'kube_pcap_gateway_connections_refused_total'), 1, 'counted');
  held.forEach((s) => s.destroy());
  await waitFor(async () => (await open(gw, '127.0.0.2', held)) === 'held', { what: '127.0.0.2 to be served once its connections closed', timeoutMs: 10_000, intervalMs: 100 });
});

t.test('failed authentications through loopback (port-forward) do not lock out other users', async (t) => {
  const shared = await gateway('gateway-shared-loopback', ['--authn-failure-limit=3', '--authn-failure-window-seconds=600']);
  const oneClient = await gateway('gateway-loopback-one-client', ['--authn-failure-limit=3', '--authn-failure-window-seconds=600', '--shared-client-addresses=']);
  for (let i = 0; i < 5; i++) t.equal((await https(listing(shared), { caFile: ca, token: garbage() })).status, 401, `failure ${i + 1} through loopback: 401, never 429`);
  t.equal((await https(listing(shared), { caFile: ca, token: await freshEngineer('newcomer') })).status, 200, 'a user never seen before is served after them');
  // The same failures where loopback counts as one client: the next user is locked out.
  for (let i = 0; i < 3; i++) t.equal((await https(listing(oneClient), { caFile: ca, token: garbage() })).status, 401);
  const locked = await https(listing(oneClient), { caFile: ca, token: await freshEngineer('latecomer') });
  t.equal(locked.status, 429, 'with --shared-client-addresses= the next user of that address is refused (why loopback is shared by default)');
});
