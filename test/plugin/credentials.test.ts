// kubectl pcap uses the user's own credentials, as kubectl would, for the API server and the
// gateway alike: a token, a token file, an exec credential plugin (as EKS, GKE and OIDC login
// helpers are), a client certificate of the cluster's CA. 401 says whether the credential
// expired or is unknown; 502 names the unreachable node and offers --partial.
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { issueCertificate } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { zipEntries } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { runPlugin, writeKubeconfig } from '../harness/plugin.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
// The gateway accepts client certificates of the cluster's CA, as kube-apiserver does.
const w = await storefrontWorld(t, c, { gatewayArgs: [`--client-ca-file=${c.info.caFile}`] });
await w.grantFiles();
const dir = await scratchDir(t, 'plugin-credentials');
const gateway = ['--gateway', w.gateway.url, '--gateway-ca-file', w.pki.ca.certFile, '--trust-gateway-url'];

/** get (the API server) and download (the gateway) with this kubeconfig. */
async function getAndDownload(t: TapTest, kubeconfig: string, out: string): Promise<void> {
  const get = await runPlugin(['get', CAPTURE], { kubeconfig, cwd: dir });
  t.equal(get.code, 0, get.stderr);
  t.match(get.text, new RegExp(`^${CAPTURE} +2 Capturing`, 'm'), 'the API server knows the user');
  const dl = await waitFor(async () => {
    const r = await runPlugin(['download', CAPTURE, '-w', out, ...gateway], { kubeconfig, cwd: dir });
    return r.code === 0 ? r : undefined;
  }, { what: `a download with ${out}`, timeoutMs: 20_000 });
  t.equal(dl.stderr, '');
  t.same((await zipEntries(join(dir, out))).sort(), [...w.files.keys()].sort(), 'the gateway knows the user');
}

t.test('a token', async (t) => {
  await getAndDownload(t, await writeKubeconfig(c, dir, 'token', { token: w.devopsToken }, w.ns), 'token.zip');
});

t.test('a token file (re-read as it rotates)', async (t) => {
  const file = join(dir, 'devops.token');
  await writeFile(file, w.devopsToken, { mode: 0o600 });
  await getAndDownload(t, await writeKubeconfig(c, dir, 'token-file', { tokenFile: file }, w.ns), 'token-file.zip');
});

t.test('an exec credential plugin that prints an ExecCredential', async (t) => {
  const plugin = join(dir, 'credential-helper');
  const calls = join(dir, 'credential-helper.calls');
  await writeFile(plugin, `#!/bin/sh\necho called >> '${calls}'\ncat <<'EOF'\n${JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: w.devopsToken, expirationTimestamp: new Date(Date.now() + 3_600_000).toISOString() } })}\nEOF\n`);
  await chmod(plugin, 0o755);
  const kubeconfig = await writeKubeconfig(c, dir, 'exec', { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' } }, w.ns);
  await getAndDownload(t, kubeconfig, 'exec.zip');
  t.ok((await readFile(calls, 'utf8')).split('\n').filter(Boolean).length >= 1, 'the credential plugin was run');
  const broken = await writeKubeconfig(c, dir, 'exec-broken', { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: join(dir, 'no-such-helper'), interactiveMode: 'Never' } }, w.ns);
  const r = await runPlugin(['download', CAPTURE, '-w', 'x.zip', ...gateway], { kubeconfig: broken, cwd: dir });
  t.equal(r.code, 1);
  t.match(r.stderr, /cannot get credentials for the context "test"/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('a client certificate of the cluster\'s CA', async (t) => {
  const user = 'cert-devops';
  const cert = await issueCertificate(join(dir, 'certs'), user, { certFile: c.info.caFile, keyFile: c.info.caKeyFile }, { commonName: user, usage: 'client' });
  for (const role of ['packetcapture-operator', 'packetcapture-files-reader']) {
    await c.applyManifest(JSON.stringify({
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${user}-${role}`, namespace: w.ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
    }));
  }
  await getAndDownload(t, await writeKubeconfig(c, dir, 'cert', { 'client-certificate': cert.certFile, 'client-key': cert.keyFile }, w.ns), 'cert.zip');
});

t.test('401: an expired credential is said to be expired; an unknown one, unknown', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const expired = [{ alg: 'RS256', typ: 'JWT' }, { iss: c.info.issuer, sub: 'system:serviceaccount:x:y', exp: now - 60 }].map((p) => Buffer.from(JSON.stringify(p)).toString('base64url')).join('.') + '.c2ln';
  const r = await runPlugin(['download', CAPTURE, '-w', 'x.zip', ...gateway], { kubeconfig: await writeKubeconfig(c, dir, 'expired', { token: expired }, w.ns), cwd: dir });
  t.equal(r.code, 1);
  t.match(r.stderr, /the gateway refused your credential because it has expired \(the token expired at \d{4}-.*\): it comes from context "test" \(a token\)\. Log in again/);
  const unknown = await runPlugin(['download', CAPTURE, '-w', 'x.zip', ...gateway], { kubeconfig: await writeKubeconfig(c, dir, 'unknown', { token: 'k8s-aws-v1.bm90LWEtcmVhbC10b2tlbg' }, w.ns), cwd: dir });
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /the gateway does not know your credential from context "test" \(a token\)/);
  const api = await runPlugin(['get', CAPTURE], { kubeconfig: await writeKubeconfig(c, dir, 'unknown-api', { token: 'k8s-aws-v1.bm90LWEtcmVhbC10b2tlbg' }, w.ns), cwd: dir });
  t.equal(api.code, 1);
  t.match(api.stderr, /the API server of context "test" does not know your credential/);
});

t.test('a ServiceAccount that may mint its own tokens sends one for the audience kube-pcap only, never its API credential', async (t) => {
  // A gateway that refuses full API credentials: only an audience-bound token opens it.
  const strict = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-bound-only', extraArgs: ['--audience-bound-tokens-only'] });
  const strictGateway = ['--gateway', strict.url, '--gateway-ca-file', w.pki.ca.certFile, '--trust-gateway-url'];
  const kubeconfig = await writeKubeconfig(c, dir, 'devops-minting', { token: w.devopsToken }, w.ns);
  const refused = await runPlugin(['download', CAPTURE, '-w', 'bound-refused.zip', ...strictGateway], { kubeconfig, cwd: dir });
  t.equal(refused.code, 1, 'not yet allowed to mint: the kubeconfig token goes, and this gateway refuses it');
  t.match(refused.stderr, /the gateway does not know your credential|refused your credential/);
  await c.applyManifest(JSON.stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'devops-sa-own-token', namespace: w.ns },
    rules: [{ apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'], resourceNames: ['devops-sa'] }],
  }));
  await c.applyManifest(JSON.stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'devops-sa-own-token', namespace: w.ns },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'devops-sa-own-token' },
    subjects: [{ kind: 'ServiceAccount', name: 'devops-sa', namespace: w.ns }],
  }));
  const bound = await waitFor(async () => {
    const r = await runPlugin(['download', CAPTURE, '-w', 'bound.zip', ...strictGateway], { kubeconfig, cwd: dir });
    return r.code === 0 ? r : undefined;
  }, { what: 'the plugin to mint a kube-pcap token (RBAC propagated)', timeoutMs: 20_000 });
  t.equal(bound.code, 0, 'the audience-bound token opens the strict gateway');
  t.same((await zipEntries(join(dir, 'bound.zip'))).sort(), [...w.files.keys()].sort());
  const asIs = await runPlugin(['download', CAPTURE, '-w', 'as-is.zip', ...strictGateway, '--token-audience=-'], { kubeconfig, cwd: dir });
  t.equal(asIs.code, 1, '--token-audience=- sends the kubeconfig credential as it is (refused here)');
});

t.test('502 names the node whose agent is gone and offers --partial, which delivers the rest', async (t) => {
  const kubeconfig = await writeKubeconfig(c, dir, 'token-502', { token: w.devopsToken }, w.ns);
  const gone = w.agents[1]!;
  await gone.proc.stop();
  const r = await runPlugin(['download', CAPTURE, '-w', 'gone.zip', ...gateway], { kubeconfig, cwd: dir });
  t.equal(r.code, 1);
  t.match(r.stderr, `the agent of node ${gone.node} (unreachable) could not deliver its files. --partial downloads what the other nodes hold`);
  const partial = await runPlugin(['download', CAPTURE, '-w', 'partial.zip', '--partial', ...gateway], { kubeconfig, cwd: dir });
  t.equal(partial.code, 0, partial.stderr);
  const list = await zipEntries(join(dir, 'partial.zip'));
  t.equal(list[0], 'MISSING.txt', 'the missing node is named in the zip');
  t.ok(list.slice(1).every((e) => e.startsWith(`${w.agents[0]!.node}/`)), 'and the other node\'s files are there');
});
