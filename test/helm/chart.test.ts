// charts/kube-pcap with a real helm (Helm 4, built from the Go module proxy by
// test/helm/build-helm.sh): linted; its default render is deploy/ object for object, with
// the differences that are normalized away named below; its options render what they
// promise; and it installs on a bare API server, as a server-side dry run and for real.
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { privateCluster } from '../harness/cluster.js';
import { controlPlaneBinDir, REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';

const helmBin = process.env.KUBE_PCAP_HELM ?? execFileSync('bash', [join(REPO_ROOT, 'test', 'helm', 'build-helm.sh')], { encoding: 'utf8' }).trim();
const chart = join(REPO_ROOT, 'charts', 'kube-pcap');
const home = await scratchDir(t, 'helm-home');
const helm = async (...args: string[]) => await run(helmBin, args, { timeoutMs: 180_000, env: { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') } });

interface K8sObject { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: unknown }

const objects = (text: string): K8sObject[] => parseAllDocuments(text).map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
const key = (o: K8sObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

/**
 * What is normalized away between the chart's render and deploy/'s:
 * - Helm's own labels (helm.sh/chart, app.kubernetes.io/managed-by, instance, version);
 * - on the CRDs, kustomize's part-of label: Helm installs crds/ as they are, untemplated;
 * - deploy/'s Namespaces: Helm installs into existing namespaces (README, "Helm").
 */
function normalize(o: K8sObject): K8sObject {
  const copy = structuredClone(o);
  const labels = { ...copy.metadata.labels };
  for (const l of ['helm.sh/chart', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/instance', 'app.kubernetes.io/version']) delete labels[l];
  if (copy.kind === 'CustomResourceDefinition') delete labels['app.kubernetes.io/part-of'];
  if (Object.keys(labels).length) copy.metadata.labels = labels;
  else delete copy.metadata.labels;
  return copy;
}

async function render(...set: string[]): Promise<K8sObject[]> {
  const r = await helm('template', 'kube-pcap', chart, '--namespace', 'kube-pcap', '--include-crds', ...set.flatMap((s) => ['--set', s]));
  if (r.code !== 0) throw new Error(`helm template: ${r.stderr}`);
  return objects(r.stdout);
}

t.test('helm lint passes', async (t) => {
  const r = await helm('lint', chart, '--strict');
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
});

t.test('the default render is deploy/, object for object', async (t) => {
  const kubectl = join(controlPlaneBinDir(), 'kubectl');
  const kustomized = await run(kubectl, ['kustomize', join(REPO_ROOT, 'deploy')]);
  t.equal(kustomized.code, 0, kustomized.stderr);
  const deploy = objects(kustomized.stdout).filter((o) => o.kind !== 'Namespace');
  const chartObjects = await render();
  t.same(chartObjects.map(key).sort(), deploy.map(key).sort(), 'the same objects');
  const byKey = new Map(chartObjects.map((o) => [key(o), normalize(o)]));
  for (const o of deploy) t.same(byKey.get(key(o)), normalize(o), key(o));
  const helmLabels = chartObjects.filter((o) => o.kind !== 'CustomResourceDefinition').every((o) => o.metadata.labels?.['app.kubernetes.io/managed-by'] === 'Helm');
  t.ok(helmLabels, 'every templated object carries Helm\'s labels');
});

t.test('the options render what they promise; the ones that need CRDs are off by default', async (t) => {
  const kinds = (os: K8sObject[]) => os.map((o) => o.kind);
  t.notOk(kinds(await render()).some((k) => k === 'Certificate' || k === 'ServiceMonitor' || k === 'Ingress'), 'nothing optional by default');

  const capture = (await render('agent.capture.maxSizeBytes=50000000', 'agent.capture.maxFiles=0', 'images.agent.tag=0.2.0', 'gateway.replicas=3')).filter((o) => o.kind === 'DaemonSet' || o.kind === 'Deployment');
  const ds = capture.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { containers: { args: string[]; image: string }[] } } } };
  t.ok(ds.spec.template.spec.containers[0]!.args.includes('--capture-max-size-bytes=50000000'), 'capture defaults become agent flags');
  t.ok(ds.spec.template.spec.containers[0]!.args.includes('--capture-max-files=0'), 'zero is a value, not an absence');
  t.equal(ds.spec.template.spec.containers[0]!.image, 'ghcr.io/kube-pcap/agent:0.2.0');
  t.equal((capture.find((o) => o.kind === 'Deployment') as unknown as { spec: { replicas: number } }).spec.replicas, 3);

  const certs = (await render('certManager.enabled=true', 'certManager.gatewayIssuerRef.name=corp-ca', 'certManager.gatewayIssuerRef.kind=ClusterIssuer', 'certManager.agentIssuerRef.name=kube-pcap-ca', 'certManager.gatewayDnsNames[0]=pcap.example.com')).filter((o) => o.kind === 'Certificate');
  t.same(certs.map((o) => (o as unknown as { spec: { secretName: string } }).spec.secretName).sort(), ['kube-pcap-agent-tls', 'kube-pcap-gateway-agent-client', 'kube-pcap-gateway-tls'], 'one Certificate per Secret the workloads mount');
  const missing = await helm('template', 'kube-pcap', chart, '-n', 'kube-pcap', '--set', 'certManager.enabled=true');
  t.not(missing.code, 0);
  t.match(missing.stderr, /certManager.gatewayIssuerRef.name is required/);
  const together = await helm('template', 'kube-pcap', chart, '-n', 'kube-pcap', '--set', 'agent.namespace=kube-pcap');
  t.not(together.code, 0, 'the agents never share the gateway\'s namespace');
  t.match(together.stderr, /agent.namespace must name a namespace of its own/);
  const elsewhere = await render('agent.namespace=pcap-nodes', 'agent.tolerations[0].operator=Exists');
  const agentDs = elsewhere.find((o) => o.kind === 'DaemonSet') as unknown as { metadata: { namespace: string }; spec: { template: { spec: { tolerations: unknown[] } } } };
  t.equal(agentDs.metadata.namespace, 'pcap-nodes');
  t.same(agentDs.spec.template.spec.tolerations, [{ operator: 'Exists' }], 'tolerations are what the user configures');
  const proxied = (await render('gateway.trustedProxies[0]=10.0.0.0/8', 'gateway.trustedProxies[1]=192.0.2.7')).find((o) => o.kind === 'Deployment') as unknown as { spec: { template: { spec: { containers: { args: string[] }[] } } } };
  t.ok(proxied.spec.template.spec.containers[0]!.args.includes('--trusted-proxies=10.0.0.0/8,192.0.2.7'), 'trusted proxies become the gateway\'s flag');
  const policy = JSON.stringify(elsewhere.find((o) => o.kind === 'ValidatingAdmissionPolicy'));
  t.match(policy, /system:serviceaccount:pcap-nodes:kube-pcap-agent/, 'the report policy follows the agents\' namespace');

  const monitor = (await render('serviceMonitor.enabled=true')).find((o) => o.kind === 'ServiceMonitor');
  t.ok(monitor, 'a ServiceMonitor');

  const ingress = (await render('ingress.enabled=true')).find((o) => o.kind === 'Ingress')!;
  const example = objects(await readFile(join(REPO_ROOT, 'deploy', 'examples', 'ingress.yaml'), 'utf8'))[0]!;
  const { labels: _chartLabels, ...ingressMeta } = ingress.metadata;
  t.same({ ...ingress, metadata: ingressMeta }, example, 'the chart\'s Ingress is deploy/examples/ingress.yaml (which the ingress-nginx test runs)');
});

t.test('the gateway\'s NetworkPolicy is on by default and admits exactly the ports its pod declares', async (t) => {
  type Port = { port: string | number; protocol: string };
  type Policy = { spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: { from?: unknown[]; ports: Port[] }[]; egress: { ports: Port[] }[] } };
  const objs = await render();
  const np = objs.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'kube-pcap-gateway') as unknown as Policy | undefined;
  t.ok(np, 'rendered by default');
  const deployment = objs.find((o) => o.kind === 'Deployment') as unknown as { spec: { template: { metadata: { labels: Record<string, string> }; spec: { containers: { ports: { name: string; containerPort: number }[]; args: string[] }[] } } } };
  const pod = deployment.spec.template;
  t.match(pod.metadata.labels, np!.spec.podSelector.matchLabels, 'it selects the gateway\'s pods');
  t.same(np!.spec.policyTypes, ['Ingress', 'Egress']);
  const declared = pod.spec.containers[0]!.ports.map((p) => p.name);
  t.same(np!.spec.ingress.flatMap((r) => r.ports.map((p) => p.port)), ['https'], 'ingress: the API port only (the operations port is the node\'s: probes)');
  t.ok(declared.includes('https') && declared.includes('ops'), `the pod declares https and ops (${declared.join(', ')})`);
  const agentPort = (objs.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { containers: { ports: { containerPort: number }[] }[] } } } }).spec.template.spec.containers[0]!.ports[0]!.containerPort;
  t.same(np!.spec.egress.flatMap((r) => r.ports.map((p) => `${p.port}/${p.protocol}`)).sort(), ['443/TCP', '53/TCP', '53/UDP', '6443/TCP', `${agentPort}/TCP`].sort(), 'egress: the API server, the agents\' port, DNS');

  const scraped = (await render('networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring')).find((o) => o.kind === 'NetworkPolicy') as unknown as Policy;
  t.same(scraped.spec.ingress[1], { from: [{ namespaceSelector: { matchLabels: { team: 'monitoring' } } }], ports: [{ port: 'ops', protocol: 'TCP' }] }, 'metricsFrom admits a Prometheus to the operations port');
  t.notOk((await render('networkPolicy.enabled=false')).some((o) => o.kind === 'NetworkPolicy'), 'networkPolicy.enabled=false renders none');
});

t.test('it installs on a bare API server: a server-side dry run, then for real', async (t) => {
  const c = await privateCluster(t);
  const kubeconfig = c.info.kubeconfig;
  // The namespace, labelled as deploy/namespace.yaml labels it (README, "Helm").
  await c.applyYaml(join(REPO_ROOT, 'deploy', 'namespace.yaml'));
  const dry = await helm('install', 'kube-pcap', chart, '-n', 'kube-pcap', '--kubeconfig', kubeconfig, '--dry-run=server');
  t.equal(dry.code, 0, dry.stderr);
  const none = await c.kubectl(['get', 'deployments', '-n', 'kube-pcap', '-o', 'name']);
  t.equal(none.stdout.trim(), '', 'a dry run creates nothing');
  const monitor = await helm('install', 'kube-pcap', chart, '-n', 'kube-pcap', '--kubeconfig', kubeconfig, '--dry-run=server', '--set', 'serviceMonitor.enabled=true');
  t.not(monitor.code, 0, 'the ServiceMonitor needs prometheus-operator\'s CRDs: off by default for that reason');
  t.match(monitor.stderr, /ServiceMonitor/);

  const install = await helm('install', 'kube-pcap', chart, '-n', 'kube-pcap', '--kubeconfig', kubeconfig);
  t.equal(install.code, 0, install.stderr);
  for (const [kind, name, ns] of [['deployment', 'kube-pcap-gateway', 'kube-pcap'], ['daemonset', 'kube-pcap-agent', 'kube-pcap-agents'], ['service', 'kube-pcap-gateway', 'kube-pcap'], ['crd', 'packetcaptures.projectcalico.org', ''], ['crd', 'packetcapturenodereports.kube-pcap.io', ''], ['clusterrole', 'kube-pcap-gateway', ''], ['validatingadmissionpolicy', 'kube-pcap-agent-reports', '']]) {
    const r = await c.kubectl(['get', kind!, name!, ...(ns ? ['-n', ns] : []), '-o', 'name']);
    t.equal(r.code, 0, `${kind}/${name} exists: ${r.stderr}`);
  }
  const status = await helm('status', 'kube-pcap', '-n', 'kube-pcap', '--kubeconfig', kubeconfig);
  t.match(status.stdout, /STATUS: deployed/);
  const upgrade = await helm('upgrade', 'kube-pcap', chart, '-n', 'kube-pcap', '--kubeconfig', kubeconfig, '--set', 'gateway.replicas=3');
  t.equal(upgrade.code, 0, upgrade.stderr);
  const replicas = await c.kubectl(['get', 'deployment', 'kube-pcap-gateway', '-n', 'kube-pcap', '-o', 'jsonpath={.spec.replicas}']);
  t.equal(replicas.stdout, '3', 'an upgrade changes what it says');
});
