// deploy/ against a real API server: the kustomize base applies (server-side dry run and
// for real), its workloads carry the security settings we promise, and the components'
// RBAC is least privilege, as the API server's authorizer sees it.
import { join } from 'node:path';
import t from 'tap';
import { loadAllYaml } from '@kubernetes/client-node';
import { agentConfig, agentOptions } from '../../src/config/agent.js';
import { gatewayConfig, gatewayOptions } from '../../src/config/gateway.js';
import { parseOptions } from '../../src/config/options.js';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';

const deploy = join(REPO_ROOT, 'deploy');
const c = await cluster(t);

// Manifests are free-form YAML; the test walks them by path and fails loudly on a wrong one.
type Json = any;
interface Obj { kind: string; metadata: { name: string; namespace?: string }; spec?: Json }

t.test('kubectl apply --dry-run=server -k deploy/ passes', async (t) => {
  // A server-side dry run cannot create the namespace its other objects go into; with the
  // namespace present, everything else is checked by the API server for real.
  await c.applyYaml(join(deploy, 'namespace.yaml'));
  const res = await c.kubectl(['apply', '--dry-run=server', '-k', deploy]);
  t.equal(res.code, 0, res.stderr);
  for (const obj of ['customresourcedefinition.apiextensions.k8s.io/packetcaptures.projectcalico.org', 'customresourcedefinition.apiextensions.k8s.io/packetcapturenodereports.kube-pcap.io', 'deployment.apps/kube-pcap-gateway', 'daemonset.apps/kube-pcap-agent', 'service/kube-pcap-agent', 'clusterrole.rbac.authorization.k8s.io/kube-pcap-gateway']) {
    t.match(res.stdout, new RegExp(`${obj.replace(/\./g, '\\.')} (created|configured|unchanged) \\(server dry run\\)`), obj);
  }
});

t.test('the rendered workloads carry the promised security settings', async (t) => {
  const res = await c.kubectl(['kustomize', deploy]);
  t.equal(res.code, 0, res.stderr);
  const objs = loadAllYaml(res.stdout) as Obj[];
  const find = (kind: string, name: string): Json => objs.find((o) => o.kind === kind && o.metadata.name === name);
  // The gateway alone in kube-pcap (where users may port-forward), the agents in their own
  // namespace (docs/security.md, "Trust boundaries").
  const namespaced = objs.filter((o) => o.kind !== 'Namespace' && o.kind !== 'CustomResourceDefinition' && !o.kind.startsWith('Cluster') && !o.kind.startsWith('ValidatingAdmissionPolicy'));
  const agentSide = (o: Obj): boolean => o.metadata.name === 'kube-pcap-agent' || o.metadata.name === 'kube-pcap-gateway-endpoints';
  for (const o of namespaced) t.equal(o.metadata.namespace, agentSide(o) ? 'kube-pcap-agents' : 'kube-pcap', `${o.kind}/${o.metadata.name}`);
  const pss = (name: string): string | undefined => (objs.find((o) => o.kind === 'Namespace' && o.metadata.name === name) as Json)?.metadata.labels['pod-security.kubernetes.io/enforce'];
  t.equal(pss('kube-pcap'), 'restricted', 'the gateway\'s namespace enforces the restricted profile');
  t.equal(pss('kube-pcap-agents'), 'privileged', 'the agents\' namespace allows hostNetwork and NET_RAW');

  const gw = find('Deployment', 'kube-pcap-gateway');
  t.equal(gw.spec.replicas, 2);
  const gwPod = gw.spec.template.spec;
  const gwc = gwPod.containers[0];
  t.equal(gwPod.securityContext.runAsNonRoot, true);
  t.equal(gwc.securityContext.readOnlyRootFilesystem, true);
  t.equal(gwc.securityContext.allowPrivilegeEscalation, false);
  t.same(gwc.securityContext.capabilities.drop, ['ALL']);
  t.ok(gwc.readinessProbe?.httpGet && gwc.livenessProbe?.httpGet, 'probes');
  t.same([gwc.readinessProbe.httpGet.port, gwc.livenessProbe.httpGet.port], ['ops', 'ops'], 'on the operations port, apart from the API\'s connections');
  t.ok(gwc.resources.requests.cpu && gwc.resources.requests.memory && gwc.resources.limits.memory, 'requests and limits');
  t.match(gwc.image, /^ghcr\.io\/kube-pcap\/gateway:\d+\.\d+\.\d+$/);
  t.same(gwc.ports.map((p: Json) => ({ ...p })), [{ name: 'https', containerPort: 9443, protocol: 'TCP' }, { name: 'ops', containerPort: 9445, protocol: 'TCP' }]);
  t.ok((gwc.args as string[]).includes('--ops-listen=0.0.0.0:9445'), 'the operations listener where the port says');
  // V8's heap is sized under the container's limit (bench:scale measured the pair), and the
  // replica has a Lease identity.
  const env = Object.fromEntries((gwc.env as Json[]).map((e: Json) => [e.name, e]));
  const heapMiB = Number(/--max-old-space-size=(\d+)/.exec(env.NODE_OPTIONS?.value ?? '')?.[1]);
  const limitMiB = Number(/^(\d+)Mi$/.exec(gwc.resources.limits.memory)?.[1]);
  t.ok(heapMiB > 0 && heapMiB <= limitMiB / 2, `heap ${heapMiB} MiB for a ${limitMiB} MiB limit`);
  t.same(env.POD_NAME?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  const token = gwPod.volumes.find((v: Json) => v.name === 'agent-token');
  t.equal(token.projected.sources[0].serviceAccountToken.audience, 'kube-pcap-agent');
  const secrets = (gwPod.volumes as Json[]).filter((v) => v.secret).map((v) => v.secret.secretName);
  t.notOk(secrets.includes('kube-pcap-agent-tls'), 'the gateway mounts nothing of the agents\' Secret (their key stays in their namespace)');
  t.ok(gwc.args.includes('--agent-ca-file=/etc/kube-pcap/agent-client/ca.crt'), 'the agents\' CA comes with the gateway\'s client certificate');

  const ds = find('DaemonSet', 'kube-pcap-agent');
  const agPod = ds.spec.template.spec;
  const agc = agPod.containers[0];
  t.equal(agPod.hostNetwork, true);
  t.equal(agPod.tolerations, undefined, 'no tolerations: no agent on tainted (control-plane) nodes unless configured');
  t.same(agc.securityContext.capabilities, { drop: ['ALL'], add: ['NET_RAW', 'SETGID'] }, 'what agent-privileges.test.ts captures with');
  t.equal(agc.securityContext.privileged, undefined, 'not privileged');
  t.equal(agc.securityContext.readOnlyRootFilesystem, true);
  t.equal(agPod.volumes.find((v: Json) => v.name === 'captures').hostPath.path, '/var/lib/kube-pcap');
  t.match(agc.image, /^ghcr\.io\/kube-pcap\/agent:\d+\.\d+\.\d+$/);

  const svc = find('Service', 'kube-pcap-agent');
  t.equal(svc.spec.clusterIP, 'None', 'the agent Service is headless');
  t.equal(find('Service', 'kube-pcap-gateway').spec.ports[0].port, 9443);
});

t.test('the workloads\' arguments are ones the kube-pcap CLI accepts', async (t) => {
  const res = await c.kubectl(['kustomize', deploy]);
  const objs = loadAllYaml(res.stdout) as Obj[];
  const args = (kind: string, name: string): string[] => (objs.find((o) => o.kind === kind && o.metadata.name === name)!.spec.template.spec.containers[0].args as string[])
    // The kubelet expands $(VAR) from the container's env; any value will do here.
    .map((a) => a.replace('$(NODE_NAME)', 'node-a').replace('$(POD_IP)', '192.0.2.1'));
  const [gwCommand, ...gwArgs] = args('Deployment', 'kube-pcap-gateway');
  t.equal(gwCommand, 'gateway');
  const gw = gatewayConfig(parseOptions('kube-pcap gateway', gatewayOptions, gwArgs, {}).values);
  t.same(gw.listen, { host: '0.0.0.0', port: 9443 });
  t.same(gw.agents.service, { namespace: 'kube-pcap-agents', name: 'kube-pcap-agent' });
  const [agCommand, ...agArgs] = args('DaemonSet', 'kube-pcap-agent');
  t.equal(agCommand, 'agent');
  const ag = agentConfig(parseOptions('kube-pcap agent', agentOptions, agArgs, {}).values);
  t.equal(ag.nodeName, 'node-a');
  t.same(ag.listen, { host: '192.0.2.1', port: 9444 });
  t.equal(ag.captureDir, '/var/lib/kube-pcap');
});

t.test('applied for real, each component can do its job and nothing more', async (t) => {
  const res = await c.kubectl(['apply', '--server-side', '--force-conflicts', '-k', deploy]);
  t.equal(res.code, 0, res.stderr);
  const can = async (sa: string, attrs: Record<string, string>) => {
    const ns = sa === 'kube-pcap-agent' ? 'kube-pcap-agents' : 'kube-pcap';
    return (await c.authz.createSubjectAccessReview({ body: { spec: { user: `system:serviceaccount:${ns}:${sa}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'], resourceAttributes: attrs } } })).status?.allowed === true;
  };
  const pc = { group: 'projectcalico.org', resource: 'packetcaptures' };

  const gatewayMay: Record<string, string>[] = [
    { ...pc, verb: 'get', namespace: 'storefront' },
    { ...pc, subresource: 'files', verb: 'get', namespace: 'storefront' },
    { ...pc, subresource: 'files', verb: 'delete', namespace: 'storefront' },
    { group: 'authentication.k8s.io', resource: 'tokenreviews', verb: 'create' },
    { group: 'authorization.k8s.io', resource: 'subjectaccessreviews', verb: 'create' },
    { group: 'discovery.k8s.io', resource: 'endpointslices', verb: 'watch', namespace: 'kube-pcap-agents' },
    // The status aggregator (docs/status.md).
    { ...pc, verb: 'watch', namespace: 'storefront' },
    { ...pc, subresource: 'status', verb: 'patch', namespace: 'storefront' },
    { group: 'kube-pcap.io', resource: 'packetcapturenodereports', verb: 'delete', namespace: 'storefront' },
    { group: '', resource: 'nodes', verb: 'watch' },
    { group: 'coordination.k8s.io', resource: 'leases', verb: 'update', namespace: 'kube-pcap', name: 'kube-pcap-status-aggregator' },
  ];
  const gatewayMayNot: Record<string, string>[] = [
    { ...pc, verb: 'create', namespace: 'storefront' },
    { ...pc, verb: 'update', namespace: 'storefront' },
    { group: 'kube-pcap.io', resource: 'packetcapturenodereports', verb: 'patch', namespace: 'storefront' },
    { group: 'coordination.k8s.io', resource: 'leases', verb: 'update', namespace: 'kube-system', name: 'kube-pcap-status-aggregator' },
    { group: '', resource: 'secrets', verb: 'get', namespace: 'kube-pcap' },
    { group: '', resource: 'secrets', verb: 'get', namespace: 'kube-pcap-agents' },
    { group: 'discovery.k8s.io', resource: 'endpointslices', verb: 'list', namespace: 'kube-pcap' },
    { group: '', resource: 'pods', verb: 'list', namespace: 'storefront' },
    { group: 'discovery.k8s.io', resource: 'endpointslices', verb: 'list', namespace: 'default' },
  ];
  for (const a of gatewayMay) t.ok(await can('kube-pcap-gateway', a), `gateway may ${a.verb} ${a.resource}${'subresource' in a ? `/${a.subresource}` : ''}`);
  for (const a of gatewayMayNot) t.notOk(await can('kube-pcap-gateway', a), `gateway may not ${a.verb} ${a.resource}${'subresource' in a ? `/${a.subresource}` : ''} in ${a.namespace}`);

  // Any user (a fresh ServiceAccount in no Role) may read the gateway's CA, and nothing else there.
  const anyone = async (attrs: Record<string, string>) =>
    (await c.authz.createSubjectAccessReview({ body: { spec: { user: 'system:serviceaccount:storefront:nobody', groups: ['system:serviceaccounts', 'system:authenticated'], resourceAttributes: attrs } } })).status?.allowed === true;
  t.ok(await anyone({ group: '', resource: 'configmaps', verb: 'get', namespace: 'kube-pcap', name: 'kube-pcap-gateway-ca' }), 'any authenticated user may read the gateway\'s CA (kubectl pcap verifies the gateway with it)');
  t.notOk(await anyone({ group: '', resource: 'configmaps', verb: 'get', namespace: 'kube-pcap', name: 'other' }), 'but no other ConfigMap');
  t.notOk(await anyone({ group: '', resource: 'configmaps', verb: 'list', namespace: 'kube-pcap' }), 'and may not list them');

  const agentMay = [
    { ...pc, verb: 'watch', namespace: 'storefront' },
    { group: 'kube-pcap.io', resource: 'packetcapturenodereports', verb: 'patch', namespace: 'storefront' },
    { group: '', resource: 'pods', verb: 'watch' },
    { group: 'authentication.k8s.io', resource: 'tokenreviews', verb: 'create' },
  ];
  const agentMayNot = [
    { ...pc, verb: 'update', namespace: 'storefront' },
    { ...pc, verb: 'delete', namespace: 'storefront' },
    { ...pc, subresource: 'files', verb: 'get', namespace: 'storefront' },
    { ...pc, subresource: 'status', verb: 'patch', namespace: 'storefront' },
    { group: '', resource: 'nodes', verb: 'list' },
    { group: '', resource: 'secrets', verb: 'list' },
    { group: '', resource: 'pods', verb: 'delete', namespace: 'storefront' },
  ];
  for (const a of agentMay) t.ok(await can('kube-pcap-agent', a), `agent may ${a.verb} ${a.resource}${'subresource' in a ? `/${a.subresource}` : ''}`);
  for (const a of agentMayNot) t.notOk(await can('kube-pcap-agent', a), `agent may not ${a.verb} ${a.resource}${'subresource' in a ? `/${a.subresource}` : ''}`);
});
