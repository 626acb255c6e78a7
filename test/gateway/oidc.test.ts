// OIDC ID tokens verified locally (no TokenReview) with @fastify/jwt against the issuer's
// JWKS, mapped to users with a prefix like the API server's --oidc-* flags. The issuer here
// is real: the API server itself publishes OIDC discovery and keys for the ServiceAccount
// tokens it signs, so these are genuine, independently verifiable ID tokens.
import { createSign } from 'node:crypto';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { oidcUser } from '../../src/auth/authentication/oidc.js';
import { createCertificateAuthority } from '../../src/tls/certificates.js';
import { apiServerRequests } from '../harness/apiserver-metrics.js';
import { privateCluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await privateCluster(t);
// Let anyone read the issuer's discovery document and keys, as for an external verifier.
await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: oidc-discovery-anonymous}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:service-account-issuer-discovery}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:unauthenticated}]
`);
const w = await storefrontWorld(t, c, {
  gatewayArgs: [`--oidc-issuer-url=${c.info.issuer}`, '--oidc-client-id=kube-pcap-gateway', '--oidc-username-prefix=oidc:', `--oidc-ca-file=${c.info.caFile}`],
});
const ca = w.pki.ca.certFile;
const oidcUserName = `oidc:system:serviceaccount:${w.ns}:devops-sa`;

async function mint(claims: Record<string, unknown>): Promise<string> {
  const key = await readFile(c.info.saKeyFile, 'utf8');
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${enc({ alg: 'RS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${unsigned}.${createSign('RSA-SHA256').update(unsigned).sign(key).toString('base64url')}`;
}

t.test('an ID token for the gateway is verified locally and mapped with the prefix', async (t) => {
  const token = await c.tokenFor(w.ns, 'devops-sa', { audience: 'kube-pcap-gateway' });
  const tr0 = await apiServerRequests(c, 'tokenreviews');
  const denied = await https(w.downloadUrl(), { caFile: ca, token });
  t.equal(denied.status, 403);
  t.match(denied.json<{ message: string }>().message, `user "${oidcUserName}" cannot get`, 'the SubjectAccessReview is for the OIDC user name');
  t.equal(await apiServerRequests(c, 'tokenreviews') - tr0, 0, 'no TokenReview was needed');

  await w.grantFiles(); // creates the files Role (bound to devops-sa's own identity, not the OIDC user)
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: oidc-files, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-files-reader}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "${oidcUserName}"}]\n`);
  const ok = await waitFor(async () => {
    const r = await https(w.downloadUrl(), { caFile: ca, token });
    return r.status === 200 ? r : undefined;
  }, { what: 'the RoleBinding for the OIDC user', timeoutMs: 15_000 });
  t.equal(ok.body.subarray(0, 2).toString(), 'PK');
});

t.test('a token from the same issuer for another audience falls back to TokenReview, like the API server', async (t) => {
  // devops-sa's ordinary token: OIDC refuses the audience, the API server accepts the token.
  const res = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken });
  t.equal(res.status, 200);
});

t.test('forged, expired or foreign-audience ID tokens are refused', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const base = { iss: c.info.issuer, sub: `system:serviceaccount:${w.ns}:devops-sa`, aud: 'kube-pcap-gateway', iat: now, nbf: now };
  const good = await mint({ ...base, exp: now + 600 });
  const [h, p] = good.split('.');
  const cases: [string, string][] = [
    ['bad signature', `${h}.${p}.${Buffer.from('forged').toString('base64url')}`],
    ['expired', await mint({ ...base, exp: now - 60 })],
    ['another audience', await mint({ ...base, aud: 'someone-else', exp: now + 600 })],
    ['no subject', await mint({ iss: c.info.issuer, aud: 'kube-pcap-gateway', iat: now, exp: now + 600 })],
    ['no audience', await mint({ iss: c.info.issuer, sub: base.sub, iat: now, nbf: now, exp: now + 600 })],
    ['no expiry', await mint({ ...base })],
  ];
  for (const [what, token] of cases) {
    const res = await https(w.downloadUrl(), { caFile: ca, token });
    t.equal(res.status, 401, `${what}: ${res.json<{ message: string }>().message}`);
    t.match(res.headers['www-authenticate'], /^Bearer/);
  }
});

t.test('--oidc-username-claim=email with no prefix: system: names and unverified emails are refused', async (t) => {
  const byEmail = await storefrontWorld(t, c, {
    gatewayArgs: [`--oidc-issuer-url=${c.info.issuer}`, '--oidc-client-id=kube-pcap-gateway', '--oidc-username-claim=email', '--oidc-username-prefix=-', '--oidc-groups-claim=groups', `--oidc-ca-file=${c.info.caFile}`],
  });
  const now = Math.floor(Date.now() / 1000);
  const base = { iss: c.info.issuer, sub: 'ana', aud: ['kube-pcap-gateway'], iat: now, nbf: now, exp: now + 600 };
  const ask = async (claims: Record<string, unknown>) => {
    const res = await https(byEmail.downloadUrl(), { caFile: byEmail.pki.ca.certFile, token: await mint({ ...base, ...claims }) });
    return { status: res.status, message: res.json<{ message: string }>().message };
  };
  const fine = await ask({ email: 'ana@example.com', email_verified: true, groups: ['sre'] });
  t.equal(fine.status, 403, 'a verified email is a user (whom RBAC does not know)');
  t.match(fine.message, 'user "ana@example.com" cannot get');
  t.equal((await ask({ email: 'ana@example.com' })).status, 403, 'no email_verified claim: accepted, like the API server');
  const refused: [string, Record<string, unknown>, RegExp][] = [
    ['email_verified "false" (a string)', { email: 'ana@example.com', email_verified: 'false' }, /email not verified/],
    ['email_verified false', { email: 'ana@example.com', email_verified: false }, /email not verified/],
    ['email_verified "true" (a string)', { email: 'ana@example.com', email_verified: 'true' }, /email not verified/],
    ['a system: user name', { email: 'system:serviceaccount:kube-system:default', email_verified: true }, /reserved "system:" space/],
    ['a system: group', { email: 'ana@example.com', email_verified: true, groups: ['sre', 'system:masters'] }, /OIDC group "system:masters" is in the reserved/],
    ['no email claim', {}, /no "email" claim/],
  ];
  for (const [what, claims, message] of refused) {
    const r = await ask(claims);
    t.equal(r.status, 401, what);
    t.match(r.message, message, what);
  }
});

t.test('claims map to users and groups like the API server\'s OIDC flags', async (t) => {
  const cfg = { issuerUrl: 'https://idp.example', clientId: 'x', usernameClaim: 'email', usernamePrefix: '', groupsClaim: 'groups', groupsPrefix: 'idp:', caFile: undefined };
  t.same(oidcUser(cfg, { email: 'ana@example.com', groups: ['storefront-owners', 'sre'] }), { username: 'ana@example.com', groups: ['idp:storefront-owners', 'idp:sre', 'system:authenticated'], via: 'oidc' });
  t.same(oidcUser(cfg, { email: 'ana@example.com', groups: 'sre' }).groups, ['idp:sre', 'system:authenticated'], 'a single group as a string');
  t.throws(() => oidcUser(cfg, { email: 'ana@example.com', email_verified: false }), /email not verified/);
  t.throws(() => oidcUser(cfg, { email: 'ana@example.com', email_verified: 'false' }), /email not verified/);
  t.throws(() => oidcUser({ ...cfg, usernameClaim: 'sub', usernamePrefix: 'system:' }, { sub: 'x' }), /reserved "system:" space/, 'a prefix that makes a system: name');
  t.throws(() => oidcUser({ ...cfg, groupsPrefix: 'system:' }, { email: 'a@b', groups: ['masters'] }), /OIDC group "system:masters"/, 'a group prefix that makes a system: group');
  t.throws(() => oidcUser(cfg, { email: 'ana@example.com', groups: [1, 2] }), /not a string or a list of strings/);
  t.throws(() => oidcUser({ ...cfg, usernameClaim: 'sub' }, { email: 'x' }), /no "sub" claim/);
});

t.test('--oidc-ca-file is re-read when it changes', async (t) => {
  const dir = await scratchDir(t, 'oidc-ca');
  const other = await createCertificateAuthority(dir, 'other', 'not the issuer\'s CA');
  const caFile = join(dir, 'oidc-ca.crt');
  await copyFile(other.certFile, caFile);
  const gw = await startGateway(t, c, {
    pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-oidc-ca',
    extraArgs: [`--oidc-issuer-url=${c.info.issuer}`, '--oidc-client-id=kube-pcap-gateway', '--oidc-username-prefix=oidc:', `--oidc-ca-file=${caFile}`],
  });
  const token = await c.tokenFor(w.ns, 'devops-sa', { audience: 'kube-pcap-gateway' });
  const url = w.downloadUrl().replace(w.gateway.url, gw.url);
  const before = await https(url, { caFile: ca, token });
  t.equal(before.status, 503, 'the issuer\'s certificate is not from the CA in the file');
  t.match(before.json<{ message: string }>().message, /fetching the issuer's keys failed/);
  await copyFile(c.info.caFile, caFile);
  const after = await waitFor(async () => {
    const r = await https(url, { caFile: ca, token });
    return r.status === 200 ? r : undefined;
  }, { what: 'the issuer\'s keys, through the new CA', timeoutMs: 15_000, intervalMs: 250 });
  t.equal(after.body.subarray(0, 2).toString(), 'PK', 'verified locally and allowed, without a restart');
});

t.test('an issuer whose keys cannot be fetched fails closed with 503', async (t) => {
  const broken = await storefrontWorld(t, c, { gatewayArgs: ['--oidc-issuer-url=https://127.0.0.1:1', '--oidc-client-id=kube-pcap-gateway', '--api-timeout-seconds=2'] });
  const now = Math.floor(Date.now() / 1000);
  const token = await mint({ iss: 'https://127.0.0.1:1', sub: 'someone', aud: 'kube-pcap-gateway', iat: now, exp: now + 600 });
  const res = await https(broken.downloadUrl(), { caFile: broken.pki.ca.certFile, token });
  t.equal(res.status, 503);
  t.match(res.json<{ message: string }>().message, /fetching the issuer's keys failed/);
});
