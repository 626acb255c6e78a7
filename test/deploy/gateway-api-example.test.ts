// deploy/examples/gateway-api.yaml against the Gateway API's own CRDs (sigs.k8s.io/gateway-api,
// standard channel, from the Go module proxy), applied for real on the test API server, which
// runs their schemas and CEL rules; and in step with what it points at: the gateway Service's
// port, the CA ConfigMap kubectl pcap reads, the name the gateway's certificate carries, the
// path the Ingress example routes.
import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { GATEWAY_CA_CONFIGMAP } from '../../src/plugin/gateway-access.js';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { installKubePcap } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const crdDir = process.env.KUBE_PCAP_GATEWAY_API_CRDS ?? execFileSync('bash', [join(REPO_ROOT, 'test', 'gateway-api', 'fetch-crds.sh')], { encoding: 'utf8' }).trim();
const example = join(REPO_ROOT, 'deploy', 'examples', 'gateway-api.yaml');
const docs = parseAllDocuments(await readFile(example, 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { name: string; namespace: string }; spec: Record<string, unknown> });
const byKind = (kind: string) => docs.find((d) => d.kind === kind)!;

t.test('the example applies against the Gateway API\'s CRDs', async (t) => {
  const c = await cluster(t);
  await installKubePcap(c);
  const files = (await readdir(crdDir)).filter((f) => /_(gatewayclasses|gateways|httproutes|backendtlspolicies)\.yaml$/.test(f));
  t.equal(files.length, 4, `the CRDs in ${crdDir}`);
  for (const f of files) await c.applyYaml(join(crdDir, f));
  // A CRD serves its kind once Established: apply until it does.
  const applied = await waitFor(async () => {
    try {
      return await c.applyYaml(example);
    } catch (err) {
      if (/404|not found|no matches/i.test(String((err as Error).message))) return undefined;
      throw err;
    }
  }, { what: 'the Gateway API CRDs to be served and the example applied', timeoutMs: 30_000 });
  t.same(applied.map((o) => o.kind), ['Gateway', 'HTTPRoute', 'BackendTLSPolicy']);
  const bad = c.applyManifest(JSON.stringify({ ...byKind('BackendTLSPolicy'), metadata: { name: 'bad', namespace: 'kube-pcap' }, spec: { ...byKind('BackendTLSPolicy').spec, validation: { hostname: 'kube-pcap-gateway.kube-pcap.svc' } } }));
  await t.rejects(bad, /BackendTLSPolicy.gateway.networking.k8s.io .*bad.* is invalid: spec.validation/, 'the CRD\'s rules run: a policy that trusts no CA is refused');
});

t.test('it points at what kube-pcap deploys', async (t) => {
  const service = parseAllDocuments(await readFile(join(REPO_ROOT, 'deploy', 'gateway', 'service.yaml'), 'utf8'))[0]!.toJS() as { metadata: { name: string; namespace: string }; spec: { ports: { name: string; port: number }[] } };
  const route = byKind('HTTPRoute').spec as { rules: { matches: { path: { value: string } }[]; backendRefs: { name: string; port: number }[] }[] };
  const policy = byKind('BackendTLSPolicy').spec as { targetRefs: { name: string; sectionName: string }[]; validation: { hostname: string; caCertificateRefs: { kind: string; name: string }[] } };
  const https = service.spec.ports.find((p) => p.name === 'https')!;
  t.same(route.rules[0]!.backendRefs[0], { name: service.metadata.name, port: https.port }, 'the route sends to the gateway Service\'s https port');
  t.equal(byKind('HTTPRoute').metadata.namespace, service.metadata.namespace);
  t.same(policy.targetRefs[0], { group: '', kind: 'Service', name: service.metadata.name, sectionName: https.name });
  t.equal(policy.validation.hostname, `${service.metadata.name}.${service.metadata.namespace}.svc`, 'the name kubectl pcap verifies too');
  t.same(policy.validation.caCertificateRefs, [{ group: '', kind: 'ConfigMap', name: GATEWAY_CA_CONFIGMAP }], 'the CA ConfigMap kubectl pcap reads');
  const ingress = parseAllDocuments(await readFile(join(REPO_ROOT, 'deploy', 'examples', 'ingress.yaml'), 'utf8'))[0]!.toJS() as { spec: { rules: { http: { paths: { path: string }[] } }[] } };
  t.equal(route.rules[0]!.matches[0]!.path.value, ingress.spec.rules[0]!.http.paths[0]!.path, 'the same path as the Ingress');
});
