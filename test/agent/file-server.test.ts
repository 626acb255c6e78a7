// The agent's file API on its own over a capture directory: who may call it (the gateway's
// client certificate, and a token for the agent's audience allowed packetcaptures/files),
// Range, a file still being written, and every path trick we know of, sent as raw request
// lines so nothing normalizes them.
import { mkdir, readdir, rm, symlink, writeFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { bridgeAddress } from '../harness/addresses.js';
import { cluster } from '../harness/cluster.js';
import { agentRequester } from '../harness/agent-request.js';
import { https, run } from '../harness/http.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from '../../src/tls/certificates.js';
import { installKubePcap, makePki, scratchDir, startAgent, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { dnsQueryFrame, pcapRecord, writeDnsPcap } from '../harness/pcap-fixtures.js';

const c = await cluster(t);
await installKubePcap(c);
const pki = await makePki(t);
const logDir = await scratchDir(t, 'logs');
const root = await scratchDir(t, 'captures');
const ns = await c.createNamespace('agentfs');
const capture = 'cap-1';
const dir = join(root, ns, capture);
await mkdir(dir, { recursive: true });
const rotated = await writeDnsPcap(join(dir, 'web-0_cali0-1700000000000001.pcap'), 40);
const growingComplete = await writeDnsPcap(join(dir, 'web-0_cali0.pcap'), 25);
// The writer is mid-record: half of a 26th record is on disk.
const partial = pcapRecord(dnsQueryFrame('192.0.2.10', '192.0.2.53', 41000, 26, 'partial.storefront.example'), 1_700_000_000_500_000).subarray(0, 30);
await writeFile(join(dir, 'web-0_cali0.pcap'), Buffer.concat([growingComplete, partial]));
// Things that must never be served.
await writeFile(join(root, 'secret.pcap'), 'outside the capture');
await writeFile(join(root, ns, 'secret.pcap'), 'outside the capture');
await symlink(join(root, 'secret.pcap'), join(dir, 'link-out.pcap'));
await writeFile(join(dir, 'notes.txt'), 'not a pcap name');

// The capture the directory belongs to: an agent removes files of captures that do not exist.
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${capture}, namespace: ${ns}}\nspec: {selector: all()}\n`);
const address = await bridgeAddress(t);
const agent = await startAgent(t, c, { node: 'node-a', address, captureDir: root, pki, logDir });
const base = `https://${address}:${agent.port}`;
const ca = pki.ca.certFile;
// What the gateway presents: its ServiceAccount's token for the agents' audience.
const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
const filesUrl = `${base}/v1/captures/${ns}/${capture}/files`;

const agentRequest = agentRequester(agent, pki, gatewayToken);
const raw = async (path: string, token?: string) => await agentRequest(path, { token });
const get = async (path: string, headers: Record<string, string> = {}) => await agentRequest(path, { headers });

t.test('the agent\'s certificate is checked against the service name, not the address', async (t) => {
  // undici with the CA but no servername override: the address is not in the certificate.
  await t.rejects(https(`${filesUrl}`, { caFile: ca, token: gatewayToken }), /altnames|certificate/i);
});

t.test('the gateway\'s token (audience kube-pcap-agent, allowed files) lists the files', async (t) => {
  const res = await raw(`/v1/captures/${ns}/${capture}/files`);
  t.equal(res.status, 200, res.text);
  const files = JSON.parse(res.text) as { name: string; size: number; modified: string }[];
  t.same(files.map((f) => f.name), ['web-0_cali0-1700000000000001.pcap', 'web-0_cali0.pcap'], 'only regular .pcap files of the capture, sorted');
  t.equal(files[0]!.size, rotated.length, 'a rotated file is listed whole');
  t.equal(files[1]!.size, growingComplete.length, 'a growing file is listed up to its last complete record');
  t.ok(!Number.isNaN(Date.parse(files[0]!.modified)));
});

t.test('a growing file is served up to its last complete record, and tshark reads it cleanly', async (t) => {
  const res = await raw(`/v1/captures/${ns}/${capture}/files/web-0_cali0.pcap`);
  t.equal(res.status, 200);
  const served = res.body;
  t.ok(served.equals(growingComplete), `served ${served.length} bytes = the ${growingComplete.length} complete bytes (file has ${(await stat(join(dir, 'web-0_cali0.pcap'))).size})`);
  const out = join(await scratchDir(t, 'served'), 'g.pcap');
  await writeFile(out, served);
  const r = await run('tshark', ['-r', out]);
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stderr, /cut short|appears to be damaged/);
  t.equal(r.stdout.trim().split('\n').length, 25);
});

t.test('Range requests', async (t) => {
  const path = `/v1/captures/${ns}/${capture}/files/web-0_cali0-1700000000000001.pcap`;
  const whole = await get(path);
  t.equal(whole.status, 200);
  t.equal(whole.headers['accept-ranges'], 'bytes');
  t.equal(whole.headers['content-type'], 'application/vnd.tcpdump.pcap');
  t.ok(whole.body.equals(rotated));
  const first = await get(path, { range: 'bytes=0-23' });
  t.equal(first.status, 206);
  t.equal(first.headers['content-range'], `bytes 0-23/${rotated.length}`);
  t.ok(first.body.equals(rotated.subarray(0, 24)), 'the global header');
  const tail = await get(path, { range: 'bytes=-100' });
  t.ok(tail.body.equals(rotated.subarray(rotated.length - 100)));
  const from = await get(path, { range: 'bytes=1000-' });
  t.ok(from.body.equals(rotated.subarray(1000)));
  const beyond = await get(path, { range: `bytes=${rotated.length}-` });
  t.equal(beyond.status, 416);
  t.equal(beyond.headers['content-range'], `bytes */${rotated.length}`);
  const bogus = await get(path, { range: 'lines=1-2' });
  t.equal(bogus.status, 416);
});

t.test('path tricks are refused and never reach a file outside the capture', async (t) => {
  const attempts = [
    '..%2Fsecret.pcap', '..%2F..%2Fsecret.pcap', '%2e%2e%2fsecret.pcap', '%2E%2E%2F%2E%2E%2Fsecret.pcap',
    '..%252Fsecret.pcap', 'web-0_cali0.pcap%00.txt', '%00', 'a%2Fb.pcap', '..', '.', '.hidden.pcap',
    'notes.txt', 'link-out.pcap', 'missing.pcap', '%5C..%5Csecret.pcap', 'web-0_cali0.pcap%2F',
  ];
  for (const a of attempts) {
    const res = await raw(`/v1/captures/${ns}/${capture}/files/${a}`);
    t.ok([400, 404].includes(res.status), `${a} -> ${res.status}`);
    t.notMatch(res.text, /outside the capture/, `${a} leaks nothing`);
  }
  for (const p of [`/v1/captures/..%2F${ns}/${capture}/files`, `/v1/captures/${ns}/..%2F${ns}/files`, `/v1/captures/${ns}/${capture}%2F..%2F..%2F/files`]) {
    const res = await raw(p);
    t.equal(res.status, 400, `${p} -> 400`);
  }
  const dotdot = await raw(`/v1/captures/${ns}/${capture}/files/../../secret.pcap`);
  t.ok([400, 404].includes(dotdot.status), 'literal ../ in the request line');
  t.notMatch(dotdot.text, /outside the capture/);
});

t.test('a capture directory that is a symlink out of the root is not served', async (t) => {
  const elsewhere = await scratchDir(t, 'elsewhere');
  await writeDnsPcap(join(elsewhere, 'x_eth0.pcap'), 3);
  await symlink(elsewhere, join(root, ns, 'linked'));
  const list = await raw(`/v1/captures/${ns}/linked/files`);
  t.equal(list.status, 200);
  t.same(JSON.parse(list.text), []);
  const file = await raw(`/v1/captures/${ns}/linked/files/x_eth0.pcap`);
  t.equal(file.status, 404);
});

t.test('callers: wrong audience 401, no files permission 403, no token 401', async (t) => {
  const apiAudience = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway');
  t.equal((await raw(`/v1/captures/${ns}/${capture}/files`, apiAudience)).status, 401, 'the gateway\'s API token is not an agent token');
  await c.createServiceAccount(ns, 'nosy');
  const nosy = await c.tokenFor(ns, 'nosy', { audience: 'kube-pcap-agent' });
  const res = await raw(`/v1/captures/${ns}/${capture}/files`, nosy);
  t.equal(res.status, 403, 'right audience, but not allowed packetcaptures/files');
  t.match(res.text, /cannot get packetcaptures\/files/);
  t.equal((await raw(`/v1/captures/${ns}/${capture}/files`, '')).status, 401);
});

t.test('mutual TLS: without the gateway\'s client certificate no token opens the agent', async (t) => {
  const path = `/v1/captures/${ns}/${capture}/files`;
  // Anyone may mint a token for the agents' audience; with the files permission it is
  // exactly the gateway's power, so the token alone must not be enough.
  await c.createServiceAccount(ns, 'insider');
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: files-reader, namespace: ${ns}}\nrules: [{apiGroups: [projectcalico.org], resources: [packetcaptures/files], verbs: [get]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: insider-files, namespace: ${ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: files-reader}\nsubjects: [{kind: ServiceAccount, name: insider, namespace: ${ns}}]\n`);
  const insider = await c.tokenFor(ns, 'insider', { audience: 'kube-pcap-agent' });
  const other = await createCertificateAuthority(join(logDir, 'other-ca'), 'ca', 'not the agents\' CA');
  const forged = await issueCertificate(join(logDir, 'other-ca'), 'gateway', other, { commonName: 'kube-pcap-gateway', usage: 'client' });
  const notGateway = await issueCertificate(join(logDir, 'pki-extra'), 'someone', pki.ca, { commonName: 'someone-else', usage: 'client' });
  const serverOnly = await issueCertificate(join(logDir, 'pki-extra'), 'server-only', pki.ca, { commonName: 'kube-pcap-gateway', usage: 'server' });
  const cases: [string, { token: string; clientCert: KeyPair | null }, RegExp][] = [
    ['a user\'s own token for the agent audience, no certificate', { token: insider, clientCert: null }, /none was presented/],
    ['the gateway\'s token without its client certificate', { token: gatewayToken, clientCert: null }, /none was presented/],
    ['the gateway\'s token with a certificate from another CA', { token: gatewayToken, clientCert: forged }, /not signed by a trusted client CA/],
    ['the gateway\'s token with a certificate of the right CA for another name', { token: gatewayToken, clientCert: notGateway }, /someone-else\\?" is not the gateway/],
    ['the gateway\'s token with a server certificate of the gateway\'s name', { token: gatewayToken, clientCert: serverOnly }, /certificate/],
  ];
  for (const [what, opts, reason] of cases) {
    const res = await agentRequest(path, opts);
    t.equal(res.status, 401, what);
    t.match(res.text, reason, what);
  }
  t.equal((await agentRequest(path, { token: insider })).status, 200, 'with the gateway\'s certificate, the token\'s SubjectAccessReview decides, as before');
  const health = await agentRequest('/healthz', { clientCert: null, token: '' });
  t.equal(health.status, 200, 'probes need no certificate');
});

t.test('the live stream and a pin\'s node pcapng have the file API\'s TLS, authentication and authorization', async (t) => {
  const nosy = await c.tokenFor(ns, 'nosy', { audience: 'kube-pcap-agent' }); // made by the callers' test: no files permission
  for (const path of [`/v1/captures/${ns}/${capture}/stream`, `/v1/captures/${ns}/${capture}/pins/${'0'.repeat(32)}/files.pcapng`]) {
    const noCert = await agentRequest(path, { clientCert: null });
    t.equal(noCert.status, 401, `${path}: the gateway's token without its client certificate`);
    t.match(noCert.text, /none was presented/);
    t.equal((await raw(path, '')).status, 401, `${path}: no token`);
    const res = await raw(path, nosy);
    t.equal(res.status, 403, `${path}: a token not allowed packetcaptures/files`);
    t.match(res.text, /cannot get packetcaptures\/files/);
  }
});

t.test('DELETE removes the capture\'s files (a symlink, not its target) and reports them', async (t) => {
  const res = await agentRequest(`/v1/captures/${ns}/${capture}/files`, { method: 'DELETE' });
  t.equal(res.status, 200, res.text);
  t.same((JSON.parse(res.text) as { removed: string[] }).removed, ['link-out.pcap', 'web-0_cali0-1700000000000001.pcap', 'web-0_cali0.pcap']);
  t.equal(await readFile(join(root, 'secret.pcap'), 'utf8'), 'outside the capture', 'the symlink\'s target is untouched');
  // What stays is the capture's own state (whose it is, what it counted: its limits hold on).
  const left = await readdir(dir).catch(() => [] as string[]);
  t.ok(left.every((f) => f === '.capture-uid' || f === '.tally.json'), `nothing but the capture's state is left: ${left.join(', ')}`);
  const list = await raw(`/v1/captures/${ns}/${capture}/files`);
  t.same(JSON.parse(list.text), []);
  await rm(join(root, ns, 'secret.pcap'));
});
