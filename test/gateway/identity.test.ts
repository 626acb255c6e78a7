// Every credential a kubeconfig can hold gets a user in, and nothing else does: opaque
// bearer tokens (static, bootstrap, cloud and webhook tokens are not JWTs) go to
// TokenReview like ServiceAccount tokens, and the same SubjectAccessReview decides.
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
const ca = w.pki.ca.certFile;
const [alice, bob] = c.info.staticTokens as [typeof c.info.staticTokens[0], typeof c.info.staticTokens[0]];

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
