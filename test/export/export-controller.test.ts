// PacketCaptureExports run end to end (docs/export.md): a real API server (the exports are
// created with a DevOps engineer's ServiceAccount token, through the admission policy), real
// agents serving two nodes' capture files, the gateway holding the Lease as the exporter, and
// a real S3 server (SeaweedFS) written with real keys read from a Secret the namespace's owner
// let the gateway read. Objects are read back with the SDK and checked byte for byte, by
// SHA-256 against the status and the manifest, and by tshark. Then the faults: wrong
// credentials and a missing bucket fail once with the S3 error code; a Continuous export
// uploads a rotated file while the capture still runs; the leading replica killed mid-upload
// leaves the next leader to abort the orphan multipart upload and start again; a capture
// deleted mid-upload ends the export with that reason and nothing half-written.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';
import t from 'tap';
import { CreateBucketCommand, GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { writeRealisticPcap } from '../../bench/realistic-traffic.js';
import { s3Client } from '../../src/export/s3-upload.js';
import type { PacketCaptureExport } from '../../src/export/packetcapture-export.js';
import { exportsPath } from '../../src/export/packetcapture-export.js';
import type { Manifest } from '../../src/export/manifest.js';
import { cluster } from '../harness/cluster.js';
import { freePort, REPO_ROOT } from '../harness/control-plane.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { run } from '../harness/http.js';
import { gatewayMetric, installKubePcap, scratchDir, startGateway } from '../harness/kube-pcap.js';
import { startS3Server } from '../harness/s3-server.js';
import { waitFor } from '../harness/wait.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import { runPlugin, writeKubeconfig } from '../harness/plugin.js';

const c = await cluster(t);
/** The file's own test: gateways started in one test and used in the next live as long as the file. */
const file = t;
await installKubePcap(c);
for (const f of ['packetcaptureexports.kube-pcap.io.yaml', 'export-policy.yaml']) await c.applyYaml(join(REPO_ROOT, 'deploy', 'export', f));
// Leases of this file's own (other files' gateways lead the default one): the gateway's
// ServiceAccount may hold them, as deploy/gateway/rbac.yaml lets it hold the default one.
const suffix = randomBytes(3).toString('hex');
const LEASE_A = `export-a-${suffix}`;
const LEASE_B = `export-b-${suffix}`;
await c.applyManifest([
  'apiVersion: rbac.authorization.k8s.io/v1', 'kind: Role',
  `metadata: {name: export-test-leases-${suffix}, namespace: kube-pcap}`,
  `rules: [{apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [${LEASE_A}, ${LEASE_B}], verbs: [get, update]}]`,
  '---',
  'apiVersion: rbac.authorization.k8s.io/v1', 'kind: RoleBinding',
  `metadata: {name: export-test-leases-${suffix}, namespace: kube-pcap}`,
  `roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: export-test-leases-${suffix}}`,
  'subjects: [{kind: ServiceAccount, name: kube-pcap-gateway, namespace: kube-pcap}]', '',
].join('\n'));
let second: Awaited<ReturnType<typeof startGateway>> | undefined;
const LEASE_TIMING = ['--leader-election-lease-duration-seconds=6', '--leader-election-renew-deadline-seconds=4', '--leader-election-retry-period-seconds=1'];
const w = await storefrontWorld(t, c, { exports: true, gatewayArgs: [`--leader-election-lease=kube-pcap/${LEASE_A}`, ...LEASE_TIMING] });
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
for (const f of ['files-role.yaml', 'export-role.yaml', 'export-credentials.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);

const s3 = await startS3Server(t);
const BUCKET = 'captures';
const admin = s3Client({ endpoint: s3.endpoint, region: s3.region, bucket: BUCKET, forcePathStyle: true }, s3);
t.teardown(() => admin.destroy());
await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
const dir = await scratchDir(t, 'export');

async function setCredentials(secretAccessKey: string, accessKeyId = s3.accessKeyId): Promise<void> {
  const b64 = (v: string): string => Buffer.from(v).toString('base64');
  await c.applyManifest(`apiVersion: v1\nkind: Secret\nmetadata: {name: s3-credentials, namespace: ${w.ns}}\ndata: {AWS_ACCESS_KEY_ID: ${b64(accessKeyId)}, AWS_SECRET_ACCESS_KEY: ${b64(secretAccessKey)}}\n`);
}
await setCredentials(s3.secretAccessKey);

/** Creates an export as the DevOps engineer (through the admission policy). */
async function createExport(name: string, spec: Record<string, unknown>, s3Extra: Record<string, unknown> = {}): Promise<void> {
  const body = {
    apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureExport', metadata: { name, namespace: w.ns },
    spec: { captureName: CAPTURE, ...spec, destination: { s3: { endpoint: s3.endpoint, insecureEndpoint: true, region: s3.region, bucket: BUCKET, forcePathStyle: true, credentials: { secretRef: { name: 's3-credentials' } }, ...s3Extra } } },
  };
  const r = await c.kubectl(['create', '-f', '-'], { input: JSON.stringify(body), token: w.devopsToken });
  if (r.code !== 0) throw new Error(`kubectl create ${name}: ${r.stderr}`);
}

async function getExport(name: string): Promise<PacketCaptureExport> {
  return await w.kube.request<PacketCaptureExport>({ path: `${exportsPath(w.ns)}/${name}` });
}

async function waitPhase(name: string, phase: string, timeoutMs = 60_000): Promise<PacketCaptureExport> {
  return await waitFor(async () => {
    const e = await getExport(name);
    if (e.status?.phase === phase) return e;
    if (e.status?.phase === 'Failed' && phase !== 'Failed') throw new Error(`${name} failed: ${e.status.message}`);
    return undefined;
  }, { what: `export ${name} to be ${phase}`, timeoutMs });
}

async function readObject(key: string): Promise<Buffer> {
  const res = await admin.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function manifestOf(e: PacketCaptureExport): Promise<Manifest> {
  return JSON.parse((await readObject(e.status!.manifestKey!)).toString()) as Manifest;
}

async function packetsIn(bytes: Buffer, name: string): Promise<number> {
  const file = join(dir, name);
  await writeFile(file, bytes);
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number']);
  if (r.code !== 0) throw new Error(`tshark ${name}: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter((l) => l !== '').length;
}

async function multipartUploads(prefix: string): Promise<string[]> {
  const r = await admin.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
  return (r.Uploads ?? []).map((u) => u.Key ?? '');
}

const expectedFiles = (): string[] => [...w.files.keys()].sort();
const totalPackets = async (): Promise<number> => {
  let n = 0;
  for (const [key, bytes] of w.files) n += await packetsIn(bytes, key.replace('/', '_'));
  return n;
};

t.test('format zip, Now: files.zip in the bucket holds every node file byte for byte; status and manifest agree on its SHA-256 and packets', async (t) => {
  await createExport('zip-now', { format: 'zip', when: 'Now' });
  const e = await waitPhase('zip-now', 'Succeeded');
  const prefix = `${w.ns}/${CAPTURE}/zip-now/`;
  t.equal(e.status?.destination, `s3://${BUCKET}/${prefix}`);
  t.same(e.status?.objects?.map((o) => o.key), [`${prefix}files.zip`]);
  t.equal(e.status?.manifestKey, `${prefix}manifest.json`);
  t.equal(e.status?.attempts, 1);
  t.ok(e.status?.conditions?.some((x) => x.type === 'Succeeded' && x.status === 'True'), 'condition Succeeded');
  const zip = await readObject(`${prefix}files.zip`);
  t.equal(sha256(zip), e.status?.objects?.[0]?.sha256, 'the status\'s SHA-256 is the stored object\'s');
  t.equal(zip.length, e.status?.bytes);
  await writeFile(join(dir, 'files.zip'), zip);
  const out = join(dir, 'unzipped');
  await mkdir(out);
  const unzip = await run('unzip', ['-q', join(dir, 'files.zip'), '-d', out]);
  t.equal(unzip.code, 0, unzip.stderr);
  const listing = await run('unzip', ['-Z1', join(dir, 'files.zip')]);
  t.same(listing.stdout.trim().split('\n').sort(), expectedFiles(), 'one entry per node file, <node>/<file>');
  const m = await manifestOf(e);
  t.equal(m.kind, 'kube-pcap.io/PacketCaptureExportManifest');
  t.same(m.capture, { namespace: w.ns, name: CAPTURE, uid: e.status?.captureUID });
  t.same(m.objects.map((o) => [o.key, o.size, o.sha256]), [[`${prefix}files.zip`, zip.length, sha256(zip)]], 'the manifest\'s object is the stored one');
  t.same(m.nodes.flatMap((n) => n.files.map((f) => `${n.node}/${f.name}`)).sort(), expectedFiles());
  const packets = await totalPackets();
  t.equal(m.packets, packets, `the manifest counts the files' ${packets} packets (tshark counts the same)`);
  t.equal(e.status?.packets, packets);
  for (const n of m.nodes) for (const f of n.files) t.equal(f.size, w.files.get(`${n.node}/${f.name}`)!.length, `${n.node}/${f.name}: its size`);
  t.ok(m.firstPacketTime && m.lastPacketTime && m.firstPacketTime <= m.lastPacketTime, `time span ${m.firstPacketTime} .. ${m.lastPacketTime}`);
});

t.test('format pcapng with zstd: one merged pcapng, every packet in it, compressed', async (t) => {
  await createExport('pcapng-zstd', { format: 'pcapng', compression: 'zstd', when: 'Now' });
  const e = await waitPhase('pcapng-zstd', 'Succeeded');
  const key = `${w.ns}/${CAPTURE}/pcapng-zstd/files.pcapng.zst`;
  t.same(e.status?.objects?.map((o) => o.key), [key]);
  const stored = await readObject(key);
  t.equal(sha256(stored), e.status?.objects?.[0]?.sha256);
  const pcapng = zstdDecompressSync(stored);
  t.ok(stored.length < pcapng.length, `compressed: ${stored.length} of ${pcapng.length} bytes`);
  const packets = await packetsIn(pcapng, 'merged.pcapng');
  t.equal(packets, await totalPackets(), 'the merge holds every file\'s packets');
  t.equal((await manifestOf(e)).packets, packets, 'and the manifest says so');
});

t.test('wrong credentials fail once, with the S3 error code, and the secret is nowhere', async (t) => {
  await setCredentials('not-the-secret-at-all');
  t.teardown(() => setCredentials(s3.secretAccessKey));
  await createExport('bad-key', { format: 'zip', when: 'Now' });
  const e = await waitPhase('bad-key', 'Failed');
  t.equal(e.status?.attempts, 1, 'not retried');
  t.match(e.status?.message, /^(SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied):/);
  t.ok(e.status?.conditions?.some((x) => x.type === 'Failed' && x.status === 'True' && /SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied/.test(x.reason ?? '')), 'condition Failed with the code as reason');
  t.notMatch(JSON.stringify(e.status), /not-the-secret/);
  const log = await run('cat', [w.gateway.logFile]);
  t.notMatch(log.stdout, /not-the-secret|AWS_SECRET_ACCESS_KEY/, 'the gateway\'s log holds no credential');
});

t.test('a missing bucket fails with NoSuchBucket', async (t) => {
  await createExport('no-bucket', { format: 'files', when: 'Now' }, { bucket: 'no-such-bucket' });
  const e = await waitPhase('no-bucket', 'Failed');
  t.match(e.status?.message, /^NoSuchBucket:/);
  t.equal(e.status?.attempts, 1);
});

t.test('an endpoint that does not answer yet: attempts back off and the export succeeds once it does', async (t) => {
  const port = await freePort('127.0.0.1');
  await createExport('late-endpoint', { format: 'zip', when: 'Now' }, { endpoint: `http://127.0.0.1:${port}` });
  const waiting = await waitFor(async () => {
    const e = await getExport('late-endpoint');
    return e.status?.phase === 'Pending' && /attempt 1 of 6 failed/.test(e.status.message ?? '') ? e : undefined;
  }, { what: 'the first attempt to fail and be retried', timeoutMs: 60_000 });
  t.match(waiting.status?.message, /EndpointUnreachable/, waiting.status?.message ?? '');
  t.match(waiting.status?.message, /retrying in \d+ s/);
  // The same keys on a server that starts now, at that address.
  const late = await startS3Server(file, { s3Port: port, keys: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  const lateClient = s3Client({ endpoint: late.endpoint, region: late.region, bucket: BUCKET, forcePathStyle: true }, late);
  t.teardown(() => lateClient.destroy());
  await lateClient.send(new CreateBucketCommand({ Bucket: BUCKET }));
  const e = await waitPhase('late-endpoint', 'Succeeded', 120_000);
  t.ok((e.status?.attempts ?? 0) >= 2, `succeeded at attempt ${e.status?.attempts}`);
  const res = await lateClient.send(new GetObjectCommand({ Bucket: BUCKET, Key: e.status!.objects![0]!.key }));
  t.equal(sha256(Buffer.from(await res.Body!.transformToByteArray())), e.status?.objects?.[0]?.sha256, 'the object is whole');
});

t.test('Continuous uploads a rotated file while the capture runs; OnFinish waits; both finish with the capture', async (t) => {
  await createExport('live', { format: 'files', compression: 'gzip', when: 'Continuous', continuousDelaySeconds: 5 });
  await createExport('at-end', { format: 'files', when: 'OnFinish' });
  const pending = await waitFor(async () => {
    const e = await getExport('at-end');
    return e.status?.phase === 'Pending' && /waiting for the capture to finish/.test(e.status.message ?? '') ? e : undefined;
  }, { what: 'the OnFinish export to wait', timeoutMs: 30_000 });
  t.match(pending.status?.message, /Capturing/, pending.status?.message ?? '');
  // The first node's files include a rotated one (<pod>_<iface>-<micros>.pcap): closed, so uploaded now.
  const prefix = `${w.ns}/${CAPTURE}/live/`;
  const rotated = [...w.files.keys()].filter((k) => /-\d{16}\.pcap$/.test(k));
  t.ok(rotated.length > 0);
  const uploading = await waitFor(async () => {
    const e = await getExport('live');
    return (e.status?.objects?.length ?? 0) >= rotated.length ? e : undefined;
  }, { what: 'the rotated files to be uploaded', timeoutMs: 30_000 });
  t.same(uploading.status?.objects?.map((o) => o.key).sort(), rotated.map((k) => `${prefix}${k}.gz`).sort(), 'only the closed (rotated) files while the capture runs');
  t.equal(uploading.status?.phase, 'Uploading');
  for (const k of rotated) t.same(gunzipSync(await readObject(`${prefix}${k}.gz`)), w.files.get(k), `${k} read back`);
  // A file rotated now is uploaded within the export's delay.
  const newName = `logging-0_cali0-${Date.now() * 1000 + 1}.pcap`;
  let written: Buffer = Buffer.alloc(0);
  await w.addFileOnFirstNode(newName, async (path) => (written = await writeDnsPcap(path, 15, { src: '192.0.2.10' })));
  w.files.set(`${w.agents[0]!.node}/${newName}`, written);
  const added = Date.now();
  await waitFor(async () => ((await getExport('live')).status?.objects ?? []).some((o) => o.key.endsWith(`${newName}.gz`)), { what: 'the newly rotated file uploaded', timeoutMs: 30_000 });
  t.ok(Date.now() - added < 15_000, `uploaded ${Date.now() - added} ms after its node listed it`);
  t.equal((await getExport('at-end')).status?.phase, 'Pending', 'the OnFinish export still waits');
  const byNode: Record<string, string[]> = {};
  for (const k of w.files.keys()) (byNode[k.split('/')[0]!] ??= []).push(k.split('/')[1]!);
  for (const n of Object.values(byNode)) n.sort();
  await w.stopCapture(byNode);
  const live = await waitPhase('live', 'Succeeded');
  const atEnd = await waitPhase('at-end', 'Succeeded');
  const all = expectedFiles();
  t.same(live.status?.objects?.map((o) => o.key).sort(), all.map((k) => `${prefix}${k}.gz`).sort(), 'Continuous: every file, the ones being written last');
  t.same(atEnd.status?.objects?.map((o) => o.key).sort(), all.map((k) => `${w.ns}/${CAPTURE}/at-end/${k}`).sort(), 'OnFinish: every file');
  for (const o of atEnd.status!.objects!) t.equal(sha256(await readObject(o.key)), o.sha256);
  const m = await manifestOf(live);
  t.same(m.objects.map((o) => o.key).sort(), live.status?.objects?.map((o) => o.key).sort(), 'the manifest lists every object');
  t.equal(m.packets, await totalPackets());
});

t.test('kubectl pcap export creates one and follows it; kubectl pcap get shows the exports; a user who may not download is refused', async (t) => {
  const kubeconfig = await writeKubeconfig(c, dir, 'devops', { token: w.devopsToken }, w.ns);
  const r = await runPlugin(['export', CAPTURE, '--to', `s3://${BUCKET}/plugin-run`, '--endpoint', s3.endpoint, '--insecure-endpoint', '--path-style', '--region', s3.region, '--credentials', 's3-credentials', '--format', 'pcapng', '--export-name', 'from-plugin'], { kubeconfig });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /packetcaptureexport\.kube-pcap\.io\/from-plugin created/);
  t.match(r.stderr, /from-plugin: Succeeded/);
  const e = await getExport('from-plugin');
  t.equal(e.status?.phase, 'Succeeded');
  t.same(r.text.trim().split('\n'), [`s3://${BUCKET}/plugin-run/files.pcapng\t${e.status?.objects?.[0]?.size}\t${e.status?.objects?.[0]?.sha256}`, `s3://${BUCKET}/plugin-run/manifest.json\tmanifest`], 'the objects with size and SHA-256, and the manifest');
  t.equal(await packetsIn(await readObject('plugin-run/files.pcapng'), 'plugin.pcapng'), await totalPackets());
  const get = await runPlugin(['get'], { kubeconfig });
  t.equal(get.code, 0, get.stderr);
  t.match(get.text, /EXPORT\s+CAPTURE\s+FORMAT\s+WHEN\s+PHASE\s+OBJECTS\s+BYTES\s+DESTINATION/);
  t.match(get.text, new RegExp(`from-plugin\\s+${CAPTURE}\\s+pcapng\\s+Now\\s+Succeeded\\s+1\\s+`));
  t.match(get.text, /zip-now\s+\S+\s+zip\s+Now\s+Succeeded/);
  // May create exports, may not download this capture: the API server's policy says no.
  await c.createServiceAccount(w.ns, 'onlooker');
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: onlooker-exporter, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-exporter}\nsubjects: [{kind: ServiceAccount, name: onlooker, namespace: ${w.ns}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: onlooker-capture-reader, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-operator}\nsubjects: [{kind: ServiceAccount, name: onlooker, namespace: ${w.ns}}]\n`);
  const onlooker = await writeKubeconfig(c, dir, 'onlooker', { token: await c.tokenFor(w.ns, 'onlooker') }, w.ns);
  const refused = await runPlugin(['export', CAPTURE, '--to', `s3://${BUCKET}/stolen`, '--endpoint', s3.endpoint, '--insecure-endpoint', '--no-wait'], { kubeconfig: onlooker });
  t.equal(refused.code, 1);
  t.match(refused.stderr, /may not export the PacketCapture/, refused.stderr);
  t.match(refused.stderr, /packetcaptures\/files/);
  const usage = await runPlugin(['export', CAPTURE, '--to', 'https://bucket/x'], { kubeconfig });
  t.equal(usage.code, 2, 'a destination that is not s3:// is a usage mistake');
});

t.test('the leading replica killed mid-upload: the next leader aborts the orphan upload and starts again; nothing half-written is Succeeded', async (t) => {
  await w.gateway.proc.stop();
  // 20 MB more on the first node: at 2 MB/s an attempt takes ten seconds.
  const big = 'logging-0_cali0-1700000000999999.pcap';
  await w.addFileOnFirstNode(big, async (path) => await writeRealisticPcap(path, 20 * 1024 * 1024, 7), 'Finished');
  // No Secret: these replicas' own identity, by the SDK's default chain (here its environment; IRSA or workload identity in a cloud).
  const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
  const args = [`--leader-election-lease=kube-pcap/${LEASE_B}`, ...LEASE_TIMING, '--export-max-bytes-per-second=2000000', '--export-part-size-mib=5', '--idle-timeout-seconds=5'];
  const first = await startGateway(file, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, exports: true, extraArgs: args, name: 'exporter-1', env });
  await waitFor(async () => (await gatewayMetric(first, w.pki, 'kube_pcap_gateway_status_aggregator_leader')) === 1, { what: 'exporter-1 to lead', timeoutMs: 20_000 });
  second = await startGateway(file, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, exports: true, extraArgs: args, name: 'exporter-2', env });
  await createExport('big', { format: 'zip', when: 'Now' });
  const prefix = `${w.ns}/${CAPTURE}/big/`;
  await waitFor(async () => (await multipartUploads(prefix)).length > 0, { what: 'a multipart upload in progress', timeoutMs: 30_000 });
  await first.proc.kill();
  t.same(await multipartUploads(prefix), [`${prefix}files.zip`], 'the killed replica left its multipart upload behind');
  const e = await waitPhase('big', 'Succeeded', 120_000);
  t.equal(e.status?.attempts, 2, 'one attempt interrupted, one complete');
  t.same(await multipartUploads(prefix), [], 'the orphan was aborted: no parts left to pay for');
  const zip = await readObject(`${prefix}files.zip`);
  t.equal(sha256(zip), e.status?.objects?.[0]?.sha256, 'the object is the whole second attempt\'s');
  await writeFile(join(dir, 'big.zip'), zip);
  t.equal((await run('unzip', ['-tq', join(dir, 'big.zip')])).code, 0, 'unzip -t: every entry whole');
  const log = await run('cat', [second.logFile]);
  t.match(log.stdout, /aborted the multipart uploads of an interrupted attempt/);
});

t.test('without a credentials Secret the gateway\'s own identity writes (the SDK\'s default chain)', async (t) => {
  await createExport('ambient', { format: 'files', when: 'Now' }, { credentials: undefined });
  const e = await waitPhase('ambient', 'Succeeded', 120_000);
  t.equal(e.status?.objectCount, expectedFiles().length + 1, 'every file, the 20 MB one too');
  for (const o of e.status!.objects!.slice(0, 3)) t.equal(sha256(await readObject(o.key)), o.sha256);
});

t.test('an upload the bucket refuses mid-file closes the agent\'s body: the gateway outlives its idle timeout', async (t) => {
  // Keys that may list (the orphan check passes) but not write: the refusal comes once the
  // first part is read, in the middle of the 20 MB file.
  await setCredentials(s3.readOnly.secretAccessKey, s3.readOnly.accessKeyId);
  t.teardown(() => setCredentials(s3.secretAccessKey));
  await createExport('refused-mid-file', { format: 'zip', when: 'Now' });
  const e = await waitPhase('refused-mid-file', 'Failed');
  t.match(e.status?.message, /^AccessDenied:/);
  // An agent body left unread would time out after --idle-timeout-seconds (5) with no one
  // listening, and take the process with it.
  const failedAt = Date.now();
  await waitFor(async () => {
    if (!second!.proc.running) throw new Error('the gateway exited');
    return Date.now() - failedAt > 8_000;
  }, { what: 'the gateway to outlive the agent body\'s idle timeout', timeoutMs: 15_000, intervalMs: 500 });
  t.ok(second!.proc.running, 'still running');
});

t.test('the capture deleted mid-upload: the export fails with CaptureDeleted, and leaves no object or parts', async (t) => {
  await createExport('doomed', { format: 'zip', when: 'Now' });
  const prefix = `${w.ns}/${CAPTURE}/doomed/`;
  await waitFor(async () => {
    if ((await multipartUploads(prefix)).length > 0) return true;
    const log = second ? (await run('cat', [second.logFile])).stdout.split('\n').filter((l) => /export|lead/i.test(l) && !/"level":20/.test(l)).slice(-8).join('\n') : '';
    throw new Error(`status: ${JSON.stringify((await getExport('doomed')).status)}\n${log}`);
  }, { what: 'a multipart upload in progress', timeoutMs: 30_000 });
  const r = await c.kubectl(['delete', 'packetcapture.projectcalico.org', CAPTURE, '-n', w.ns, '--wait=false']);
  t.equal(r.code, 0, r.stderr);
  const e = await waitPhase('doomed', 'Failed', 60_000);
  t.match(e.status?.message, /^CaptureDeleted:/);
  await waitFor(async () => (await multipartUploads(prefix)).length === 0, { what: 'the multipart upload aborted', timeoutMs: 20_000 });
  const objects = await admin.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  t.equal(objects.KeyCount ?? 0, 0, 'no object, no manifest');
});
