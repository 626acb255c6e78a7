// Every credential a kubeconfig can hold gets a user in, and nothing else does: opaque
// bearer tokens (static, bootstrap, cloud and webhook tokens are not JWTs) go to
// TokenReview like ServiceAccount tokens; client certificates of the cluster's client CA
// are users by CN and O; and the same SubjectAccessReview decides.
import { join } from 'node:path';
import t from 'tap';
import { createCertificateAuthority, issueCertificate } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
const ca = w.pki.ca.certFile;
const [alice, bob] = c.info.staticTokens as [typeof c.info.staticTokens[0], typeof c.info.staticTokens[0]];

// Client certificates: a second gateway in front of the same agents, with the cluster's
// client CA (the one kube-apiserver itself trusts), as kind and kubeadm kubeconfigs need.
const clusterCa = { certFile: c.info.caFile, keyFile: c.info.caKeyFile };
const certDir = await scratchDir(t, 'user-certs');
const certGateway = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-client-ca', extraArgs: [`--client-ca-file=${c.info.caFile}`] });
const carol = await issueCertificate(certDir, 'carol', clusterCa, { commonName: 'cert-carol', organizations: ['storefront-sre'], usage: 'client' });
const dave = await issueCertificate(certDir, 'dave', clusterCa, { commonName: 'cert-dave', usage: 'client' });
const otherCa = await createCertificateAuthority(join(certDir, 'other'), 'ca', 'not the cluster CA');
const mallory = await issueCertificate(join(certDir, 'other'), 'mallory', otherCa, { commonName: 'cert-carol', organizations: ['system:masters'], usage: 'client' });
const certDownload = `${certGateway.url}/packet-capture/download/${w.ns}/${CAPTURE}/files.zip`;

/** Binds the files Role of rbac-examples/ to a user of the API server (not a ServiceAccount). */
async function bindFilesToUser(user: string): Promise<void> {
  await w.grantFiles();
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: files-${user}, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-files-reader}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ${user}}]\n`);
}

t.test('a static token (not a JWT) of a user bound to the files Role downloads; another user\'s gets 403', async (t) => {
  t.notMatch(alice.token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'the token is opaque, not a JWT');
  await bindFilesToUser(alice.username);
  const ok = await waitFor(async () => {
    const r = await https(w.downloadUrl(), { caFile: ca, token: alice.token });
    return r.status === 200 ? r : undefined;
  }, { what: 'the static user\'s binding', timeoutMs: 15_000 });
  t.equal(ok.body.subarray(0, 2).toString(), 'PK', 'a zip');
  const denied = await https(w.downloadUrl(), { caFile: ca, token: bob.token });
  t.equal(denied.status, 403, 'authenticated by the API server, refused by RBAC');
  t.match(denied.json<{ message: string }>().message, `user "${bob.username}" cannot get packetcaptures/files`);
  const listing = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: alice.token });
  t.equal(listing.status, 200, 'the listing too');
});

t.test('an opaque token the API server does not know is 401, after asking it', async (t) => {
  const res = await https(w.downloadUrl(), { caFile: ca, token: 'k8s-aws-v1.aHR0cHM6Ly9zdHMuYW1hem9uYXdzLmNvbS8_QWN0aW9uPUdldENhbGxlcklkZW50aXR5' });
  t.equal(res.status, 401);
  t.match(res.json<{ message: string }>().message, /invalid bearer token/);
  t.match(res.headers['www-authenticate'], /^Bearer/);
});

t.test('--client-ca-file: a client certificate of the cluster\'s CA is the user CN with groups O', async (t) => {
  // Bound through its group, so both the CN and the O of the certificate are what RBAC sees.
  await w.grantFiles();
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: files-sre, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-files-reader}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: storefront-sre}]\n`);
  const ok = await waitFor(async () => {
    const r = await https(certDownload, { caFile: ca, clientCert: carol });
    return r.status === 200 ? r : undefined;
  }, { what: 'the group binding', timeoutMs: 15_000 });
  t.equal(ok.body.subarray(0, 2).toString(), 'PK', 'a zip, with no token at all');
  const denied = await https(certDownload, { caFile: ca, clientCert: dave });
  t.equal(denied.status, 403, 'a certificate of a user without the binding');
  t.match(denied.json<{ message: string }>().message, 'user "cert-dave" cannot get packetcaptures/files');
});

t.test('a certificate from another CA is 401, whatever it claims', async (t) => {
  const res = await https(certDownload, { caFile: ca, clientCert: mallory });
  t.equal(res.status, 401);
  t.match(res.json<{ message: string }>().message, /invalid client certificate: not signed by a trusted client CA/);
  t.match(res.headers['www-authenticate'], /^Bearer/);
});

t.test('precedence: a verified certificate, then OIDC, then TokenReview', async (t) => {
  const withBadToken = await https(certDownload, { caFile: ca, clientCert: carol, token: 'not-a-valid-token' });
  t.equal(withBadToken.status, 200, 'a verified certificate wins over a token beside it, as in kube-apiserver');
  const foreignCertGoodToken = await https(certDownload, { caFile: ca, clientCert: mallory, token: alice.token });
  t.equal(foreignCertGoodToken.status, 200, 'an unverified certificate does not stop a valid token');
});

t.test('without --client-ca-file, client certificates are ignored', async (t) => {
  const res = await https(w.downloadUrl(), { caFile: ca, clientCert: carol });
  t.equal(res.status, 401);
  t.match(res.json<{ message: string }>().message, /no bearer token/);
});
