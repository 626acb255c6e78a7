// PacketCaptureExport's admission on a real API server (deploy/export/): two users with real
// ServiceAccount tokens, both allowed to create exports (rbac-examples/export-role.yaml), only
// one allowed to download the capture (files-role.yaml). The API server itself refuses the
// other's export (the ValidatingAdmissionPolicy's CEL authorizer), refuses a credentials
// Secret the creator was not given "use" of, and keeps a created export's spec fixed; the
// CRD refuses what could never work (Continuous without files, plain http, a keyPrefix that
// climbs out).
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { installCrd } from '../harness/crd.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
await installCrd(c);
for (const f of ['packetcaptureexports.kube-pcap.io.yaml', 'export-policy.yaml']) await c.applyYaml(join(REPO_ROOT, 'deploy', 'export', f));
const ns = await c.createNamespace('export');
const rename = { renameNamespace: { from: 'storefront', to: ns } };
for (const f of ['devops-serviceaccount.yaml', 'files-role.yaml', 'export-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
await c.createServiceAccount(ns, 'onlooker');
// The onlooker may create exports, as devops-sa may, but may download only the capture "web".
await c.applyManifest([
  'apiVersion: rbac.authorization.k8s.io/v1', 'kind: RoleBinding',
  `metadata: {name: onlooker-exporter, namespace: ${ns}}`,
  'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-exporter}',
  `subjects: [{kind: ServiceAccount, name: onlooker, namespace: ${ns}}]`,
  '---',
  'apiVersion: rbac.authorization.k8s.io/v1', 'kind: Role',
  `metadata: {name: web-files, namespace: ${ns}}`,
  'rules: [{apiGroups: [projectcalico.org], resources: [packetcaptures/files], resourceNames: [web], verbs: [get]}]',
  '---',
  'apiVersion: rbac.authorization.k8s.io/v1', 'kind: RoleBinding',
  `metadata: {name: onlooker-web-files, namespace: ${ns}}`,
  'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web-files}',
  `subjects: [{kind: ServiceAccount, name: onlooker, namespace: ${ns}}]`, '',
].join('\n'));
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: dns, namespace: ${ns}}\nspec: {selector: all()}\n`);
const devops = await c.tokenFor(ns, 'devops-sa');
const onlooker = await c.tokenFor(ns, 'onlooker');

function exportYaml(name: string, s3: string, extra = ''): string {
  return `apiVersion: kube-pcap.io/v1alpha1\nkind: PacketCaptureExport\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  captureName: dns\n  destination:\n    s3: ${s3}\n${extra}`;
}
const PLAIN = '{bucket: captures, endpoint: "https://s3.example.test", forcePathStyle: true}';

async function create(yaml: string, token: string): Promise<{ code: number; stderr: string }> {
  return await c.kubectl(['create', '-f', '-'], { input: yaml, token });
}

// The policy is in force once the API server has loaded it: until then the onlooker's probe
// is admitted, so it is deleted and tried again until refused (the first test says by what).
const refusal = await waitFor(async () => {
  const r = await create(exportYaml('probe', PLAIN), onlooker);
  if (r.code === 0) {
    await c.kubectl(['delete', 'packetcaptureexport', 'probe', '-n', ns, '--wait=false']);
    return undefined;
  }
  return r;
}, { what: 'the export policy to be in force', timeoutMs: 30_000, intervalMs: 250 });

t.test('an export is admitted only for a creator who may download the capture', async (t) => {
  t.match(refusal.stderr, new RegExp(`system:serviceaccount:${ns}:onlooker may not export the PacketCapture dns: exporting needs what downloading needs, "get" on packetcaptures/files`), refusal.stderr);
  t.match(refusal.stderr, /rbac-examples\/files-role\.yaml/);
  t.match(refusal.stderr, /ValidatingAdmissionPolicy 'kube-pcap-exports'/, 'refused by the API server\'s admission, not by us');
  const ok = await create(exportYaml('dns-to-s3', PLAIN), devops);
  t.equal(ok.code, 0, ok.stderr);
  const got = JSON.parse((await c.kubectl(['get', 'packetcaptureexport', 'dns-to-s3', '-n', ns, '-o', 'json'])).stdout) as { spec: Record<string, unknown> };
  t.same({ format: got.spec.format, when: got.spec.when, compression: got.spec.compression, partial: got.spec.partial }, { format: 'zip', when: 'OnFinish', compression: 'none', partial: false }, 'defaults filled in');
  // The right is per capture: the onlooker's Role for the files of "web" admits an export of web.
  const web = await create(exportYaml('web-to-s3', PLAIN).replace('captureName: dns', 'captureName: web'), onlooker);
  t.equal(web.code, 0, `the onlooker may export web, whose files it may get: ${web.stderr}`);
});

t.test('a credentials Secret needs "use" on exportcredentials of that name', async (t) => {
  const named = await create(exportYaml('with-secret', '{bucket: captures, credentials: {secretRef: {name: s3-credentials}}}'), devops);
  t.equal(named.code, 0, `export-role.yaml grants use of s3-credentials: ${named.stderr}`);
  const another = await create(exportYaml('other-secret', '{bucket: captures, credentials: {secretRef: {name: payments-s3}}}'), devops);
  t.not(another.code, 0);
  t.match(another.stderr, /may not export with the credentials Secret payments-s3: that needs "use" on exportcredentials \(kube-pcap\.io\) named payments-s3/);
  const can = await c.kubectl(['auth', 'can-i', 'get', 'secret/s3-credentials', '-n', ns], { token: devops });
  t.equal(can.stdout.trim(), 'no', '"use" grants no read of the Secret itself');
});

t.test('the spec is fixed once created, even for a cluster admin; an exporter may not patch at all', async (t) => {
  const patch = ['patch', 'packetcaptureexport', 'dns-to-s3', '-n', ns, '--type', 'merge', '-p', '{"spec":{"captureName":"elsewhere"}}'];
  const admin = await c.kubectl(patch);
  t.not(admin.code, 0);
  t.match(admin.stderr, /an export's spec cannot change once created/);
  const exporter = await c.kubectl(patch, { token: devops });
  t.match(exporter.stderr, /cannot patch resource "packetcaptureexports"/, 'export-role.yaml grants no update or patch');
});

t.test('the CRD refuses what could never work', async (t) => {
  const cases: [string, string, string, RegExp][] = [
    ['continuous-zip', PLAIN, '  when: Continuous\n', /when: Continuous uploads each rotated file as it closes, so it needs format: files/],
    ['plain-http', '{bucket: captures, endpoint: "http://minio.storage:9000"}', '', /the endpoint must be https:\/\//],
    ['climbing', '{bucket: captures, keyPrefix: "a/../../b/"}', '', /keyPrefix must not start with \/, nor hold \/\/ or \.\.\//],
    ['bad-bucket', '{bucket: "Captures_2026"}', '', /spec\.destination\.s3\.bucket/],
    ['bad-format', PLAIN, '  format: tar\n', /spec\.format/],
  ];
  for (const [name, s3, extra, why] of cases) {
    const r = await create(exportYaml(name, s3, extra), devops);
    t.not(r.code, 0, name);
    t.match(r.stderr, why, name);
  }
  const http = await create(exportYaml('inside', '{bucket: captures, endpoint: "http://minio.storage:9000", insecureEndpoint: true, forcePathStyle: true}', '  format: files\n  when: Continuous\n'), devops);
  t.equal(http.code, 0, `http:// when said so, Continuous with files: ${http.stderr}`);
});
