// rbac-examples/ on a real API server: who can do what, checked by the API server's own
// authorizer, with the ServiceAccount's real token where a token is involved.
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { installCrd } from '../harness/crd.js';

const dir = join(REPO_ROOT, 'rbac-examples');
const files = (verb: string, namespace: string) => ({ group: 'projectcalico.org', resource: 'packetcaptures', subresource: 'files', verb, namespace });
const captures = (verb: string, namespace: string) => ({ group: 'projectcalico.org', resource: 'packetcaptures', verb, namespace });

const c = await cluster(t);
await installCrd(c);
// The examples name storefront; this is the only test file that uses it on the shared
// control plane (others rename the namespace when they apply the examples).
const storefront = await c.createNamespace('storefront', 'storefront');
const other = await c.createNamespace('checkout');
await c.applyYaml(join(dir, 'devops-serviceaccount.yaml'));
await c.applyYaml(join(dir, 'capture-role.yaml'));
const token = await c.tokenFor(storefront, 'devops-sa');

t.test('with the capture Role, devops-sa can create captures with its own token', async (t) => {
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', captures('create', storefront)), 'SubjectAccessReview: create packetcaptures');
  for (const verb of ['get', 'list', 'watch', 'update', 'patch', 'delete']) {
    t.ok(await c.serviceAccountCan(storefront, 'devops-sa', captures(verb, storefront)), `${verb} packetcaptures`);
  }
  const res = await c.kubectl(['apply', '-f', join(REPO_ROOT, 'deploy', 'examples', 'pc-storefront-logging-dns.yaml')], { token });
  t.equal(res.code, 0, `kubectl apply as devops-sa: ${res.stderr}`);
  const can = await c.kubectl(['auth', 'can-i', 'create', 'packetcaptures.projectcalico.org', '-n', storefront], { token });
  t.equal(can.stdout.trim(), 'yes');
});

t.test('with only the capture Role, devops-sa cannot read or delete captured files', async (t) => {
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', files('get', storefront)), 'get packetcaptures/files denied');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', files('delete', storefront)), 'delete packetcaptures/files denied');
  const can = await c.kubectl(['auth', 'can-i', 'get', 'packetcaptures.projectcalico.org', '--subresource', 'files', '-n', storefront], { token });
  t.equal(can.stdout.trim(), 'no', 'the SA\'s own SelfSubjectAccessReview agrees');
});

t.test('the files Role grants get on packetcaptures/files, and only that', async (t) => {
  await c.applyYaml(join(dir, 'files-role.yaml'));
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', files('get', storefront)), 'get packetcaptures/files allowed');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', files('delete', storefront)), 'delete still denied');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', { group: '', resource: 'pods', verb: 'get', namespace: storefront }), 'nothing else (pods)');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', { group: 'projectcalico.org', resource: 'packetcaptures', subresource: 'status', verb: 'patch', namespace: storefront }), 'nor status');
});

t.test('the delete variant adds delete', async (t) => {
  await c.applyYaml(join(dir, 'files-delete-role.yaml'));
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', files('delete', storefront)));
});

t.test('devops-sa can never do any of it in another namespace', async (t) => {
  for (const verb of ['get', 'delete']) t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', files(verb, other)), `${verb} files in ${other}`);
  for (const verb of ['create', 'get', 'list']) t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', captures(verb, other)), `${verb} captures in ${other}`);
  const res = await c.kubectl(['auth', 'can-i', 'get', 'packetcaptures.projectcalico.org', '--subresource', 'files', '-n', other], { token });
  t.equal(res.stdout.trim(), 'no');
});

t.test('namespace owners (a group) get both, in their namespace only', async (t) => {
  await c.applyYaml(join(dir, 'namespace-owner.yaml'));
  const as = async (user: string, groups: string[], attrs: Record<string, string>) =>
    (await c.authz.createSubjectAccessReview({ body: { spec: { user, groups: [...groups, 'system:authenticated'], resourceAttributes: attrs } } })).status?.allowed === true;
  t.ok(await as('alice', ['storefront-owners'], files('get', storefront)));
  t.ok(await as('alice', ['storefront-owners'], files('delete', storefront)));
  t.ok(await as('alice', ['storefront-owners'], captures('create', storefront)));
  t.notOk(await as('alice', ['storefront-owners'], files('get', other)), 'not in another namespace');
  t.notOk(await as('bob', ['payments-owners'], files('get', storefront)), 'not for another group');
});

t.test('gateway-access.yaml opens the port-forward to the gateway, and nothing else in kube-pcap', async (t) => {
  await c.applyYaml(join(REPO_ROOT, 'deploy', 'namespace.yaml'));
  await c.applyYaml(join(dir, 'gateway-access.yaml'));
  const core = (verb: string, resource: string, o: { name?: string; subresource?: string } = {}) => ({ group: '', resource, verb, namespace: 'kube-pcap', ...o });
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', core('get', 'services', { name: 'kube-pcap-gateway' })), 'get the gateway Service');
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', core('list', 'pods')), 'find its pods');
  t.ok(await c.serviceAccountCan(storefront, 'devops-sa', core('create', 'pods', { subresource: 'portforward' })), 'port-forward');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', core('get', 'services', { name: 'kube-pcap-agent' })), 'not another Service');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', core('create', 'pods', { subresource: 'exec' })), 'no exec');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', core('get', 'secrets')), 'no Secrets');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', core('delete', 'pods')), 'no deleting pods');
  // The agents share their node's network namespace: a port-forward there would reach the
  // node's loopback (docs/security.md, "Trust boundaries").
  const agents = { group: '', resource: 'pods', namespace: 'kube-pcap-agents' };
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', { ...agents, verb: 'create', subresource: 'portforward' }), 'no port-forward to an agent pod');
  t.notOk(await c.serviceAccountCan(storefront, 'devops-sa', { ...agents, verb: 'list' }), 'nor finding the agents\' pods');
});

t.test('no example and no shipped role uses a wildcard: a "*" would give packetcaptures/files by accident', async (t) => {
  const { readdir, readFile } = await import('node:fs/promises');
  const { parseAllDocuments } = await import('yaml');
  const sources = [
    ...(await readdir(dir)).filter((f) => f.endsWith('.yaml')).map((f) => join(dir, f)),
    join(REPO_ROOT, 'deploy', 'gateway', 'rbac.yaml'), join(REPO_ROOT, 'deploy', 'gateway', 'ca-reader-rbac.yaml'), join(REPO_ROOT, 'deploy', 'agent', 'rbac.yaml'),
  ];
  let rules = 0;
  for (const file of sources) {
    for (const doc of parseAllDocuments(await readFile(file, 'utf8'))) {
      const o = doc.toJS() as { kind?: string; rules?: { apiGroups?: string[]; resources?: string[]; verbs?: string[]; nonResourceURLs?: string[] }[] } | null;
      for (const r of o?.rules ?? []) {
        rules++;
        for (const field of ['apiGroups', 'resources', 'verbs', 'nonResourceURLs'] as const) {
          t.notOk((r[field] ?? []).some((v) => v.includes('*')), `${file.slice(REPO_ROOT.length + 1)}: no "*" in ${field} (${JSON.stringify(r[field])})`);
        }
      }
    }
  }
  t.ok(rules > 10, `${rules} rules read`);
});
