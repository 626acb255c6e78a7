// Trust and identity files are re-read when they change, like the serving certificate:
// the agents' CA and the gateway's client certificate for them, and the users' client CA.
// (The OIDC CA bundle: oidc.test.ts, which has an issuer.) No restart in between.
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { createCertificateAuthority, issueCertificate } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const dir = await scratchDir(t, 'reload');
const other = await createCertificateAuthority(join(dir, 'other'), 'ca', 'some other CA');
const clusterCa = { certFile: c.info.caFile, keyFile: c.info.caKeyFile };
const carol = await issueCertificate(join(dir, 'users'), 'carol', clusterCa, { commonName: 'cert-carol', usage: 'client' });
const wrongName = await issueCertificate(join(dir, 'wrong'), 'client', w.pki.ca, { commonName: 'not-the-gateway', usage: 'client' });

// The files the gateway is given; the test rewrites them as a Secret update would.
const agentCa = join(dir, 'agent-ca.crt');
const clientCert = join(dir, 'client.crt');
const clientKey = join(dir, 'client.key');
const usersCa = join(dir, 'users-ca.crt');
await copyFile(other.certFile, agentCa);
await copyFile(w.pki.gatewayClient.certFile, clientCert);
await copyFile(w.pki.gatewayClient.keyFile, clientKey);
await copyFile(other.certFile, usersCa);
const gw = await startGateway(t, c, {
  pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-reload',
  extraArgs: [`--agent-ca-file=${agentCa}`, `--agent-client-cert-file=${clientCert}`, `--agent-client-key-file=${clientKey}`, `--client-ca-file=${usersCa}`],
});
const download = w.downloadUrl().replace(w.gateway.url, gw.url);

async function status(opts: { token?: string; clientCert?: { certFile: string; keyFile: string } }): Promise<number> {
  // A new connection each time: a reloaded CA applies to handshakes after the change.
  return (await https(download, { caFile: ca, headers: { connection: 'close' }, ...opts })).status;
}

async function becomes(code: number, opts: Parameters<typeof status>[0], what: string): Promise<void> {
  await waitFor(async () => (await status(opts)) === code, { what, timeoutMs: 15_000, intervalMs: 250 });
}

t.test('--agent-ca-file: a new CA in the file is trusted without a restart', async (t) => {
  t.equal(await status({ token: w.devopsToken }), 502, 'the agents\' certificates are not from the CA in the file');
  await copyFile(w.pki.ca.certFile, agentCa);
  await becomes(200, { token: w.devopsToken }, 'the download to work with the agents\' real CA');
  t.pass('200 once the file holds the agents\' CA');
});

t.test('--agent-client-cert-file: a changed certificate is presented to the agents', async (t) => {
  await copyFile(wrongName.keyFile, clientKey);
  await copyFile(wrongName.certFile, clientCert);
  await becomes(502, { token: w.devopsToken }, 'the agents to refuse a certificate for another name');
  await copyFile(w.pki.gatewayClient.keyFile, clientKey);
  await copyFile(w.pki.gatewayClient.certFile, clientCert);
  await becomes(200, { token: w.devopsToken }, 'the gateway\'s own certificate again');
  t.pass('followed both changes');
});

t.test('--client-ca-file: users\' certificates are verified against the CA now in the file', async (t) => {
  t.equal(await status({ clientCert: carol }), 401, 'not yet the cluster\'s CA');
  await copyFile(c.info.caFile, usersCa);
  await becomes(403, { clientCert: carol }, 'the certificate to be verified (and RBAC to say no)');
  t.pass('403: authenticated as cert-carol, who has no binding');
});
