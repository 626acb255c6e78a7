// Every row of the README's status-code table (HTTP API), each with its own test, against real tokens,
// real RBAC and real agents. (The API-server-down row needs its own control plane:
// api-outage.test.ts.) Every error body is a Kubernetes Status that openapi.yaml describes.
import { createSign } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, run, zipEntries, type Response } from '../harness/http.js';
import { checkResponse } from '../harness/openapi.js';
import type { TapTest } from '../harness/tap.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { scratchDir, startAgent } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
const DOWNLOAD = '/packet-capture/download/{namespace}/{name}/files.zip';
const PCAPNG = '/packet-capture/download/{namespace}/{name}/files.pcapng';
const FILES = '/packet-capture/files/{namespace}/{name}';

function url(template: string, ns = w.ns, name = CAPTURE): string {
  return w.gateway.url + template.replace('{namespace}', ns).replace('{name}', name);
}

async function expectStatus(t: TapTest, res: Response, code: number, reason: string, template = DOWNLOAD, method = 'GET'): Promise<{ message: string; details?: { causes?: { field?: string }[] } }> {
  t.equal(res.status, code, `HTTP ${code}: ${res.body.subarray(0, 300).toString()}`);
  const body = res.json<{ kind: string; status: string; code: number; reason: string; message: string }>();
  t.equal(body.kind, 'Status');
  t.equal(body.status, 'Failure');
  t.equal(body.code, code);
  t.equal(body.reason, reason);
  await checkResponse(method, template, res.status, res.headers['content-type'] as string, res.body);
  return body;
}

/** A correctly signed ServiceAccount token that expired an hour ago (TokenRequest will not issue one). */
async function expiredToken(): Promise<string> {
  const key = await readFile(c.info.saKeyFile, 'utf8');
  const now = Math.floor(Date.now() / 1000);
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${enc({ alg: 'RS256', typ: 'JWT' })}.${enc({ iss: c.info.issuer, sub: `system:serviceaccount:${w.ns}:devops-sa`, aud: [c.info.issuer], iat: now - 7200, nbf: now - 7200, exp: now - 3600 })}`;
  return `${unsigned}.${createSign('RSA-SHA256').update(unsigned).sign(key).toString('base64url')}`;
}

t.test('200 for the allowed user, to compare the failures against', async (t) => {
  const res = await waitFor(async () => {
    const r = await https(url(DOWNLOAD), { caFile: ca, token: w.devopsToken });
    return r.status === 200 ? r : undefined;
  }, { what: 'the files grant to apply', timeoutMs: 15_000 });
  t.equal(res.body.subarray(0, 2).toString(), 'PK');
  const merged = await https(url(PCAPNG), { caFile: ca, token: w.devopsToken });
  t.equal(merged.status, 200);
  t.equal(merged.body.readUInt32LE(0), 0x0a0d0d0a, 'files.pcapng starts with a Section Header Block');
  await checkResponse('GET', PCAPNG, merged.status, merged.headers['content-type'] as string, merged.body);
});

t.test('400: a namespace or name that is not a valid Kubernetes name', async (t) => {
  for (const [ns, name] of [['Storefront', CAPTURE], [w.ns, 'UPPER'], ['a'.repeat(64), CAPTURE], [w.ns, 'bad_name'], ['-x', CAPTURE]]) {
    const res = await https(url(DOWNLOAD, ns!, name!), { caFile: ca, token: w.devopsToken });
    await expectStatus(t, res, 400, 'BadRequest');
  }
  const res = await https(`${url(DOWNLOAD)}?unknown=1`, { caFile: ca, token: w.devopsToken });
  await expectStatus(t, res, 400, 'BadRequest');
  // files.pcapng takes no compression: a zip's parameter is refused, not ignored.
  await expectStatus(t, await https(`${url(PCAPNG)}?compression=store`, { caFile: ca, token: w.devopsToken }), 400, 'BadRequest', PCAPNG);
  await expectStatus(t, await https(url(PCAPNG, w.ns, 'bad_name'), { caFile: ca, token: w.devopsToken }), 400, 'BadRequest', PCAPNG);
  const listing = await https(`${url(FILES)}?watch=true`, { caFile: ca, token: w.devopsToken });
  await expectStatus(t, listing, 400, 'BadRequest', FILES);
  // A kubectl user expects ?dryRun=All to delete nothing: it is refused, and nothing is deleted.
  const dryRun = await https(`${url(FILES)}?dryRun=All`, { caFile: ca, token: w.devopsToken, method: 'DELETE' });
  await expectStatus(t, dryRun, 400, 'BadRequest', FILES, 'DELETE');
  t.match(dryRun.json<{ message: string }>().message, 'unknown query parameter "dryRun"', 'the message names the parameter');
  const after = await https(url(FILES), { caFile: ca, token: w.devopsToken });
  t.equal(after.json<{ files: unknown[] }>().files.length, w.files.size, 'every file is still there');
});

t.test('401: no token', async (t) => {
  const res = await https(url(DOWNLOAD), { caFile: ca });
  const body = await expectStatus(t, res, 401, 'Unauthorized');
  t.match(res.headers['www-authenticate'], /^Bearer/);
  t.match(body.message, /no bearer token/);
});

t.test('401: a malformed Authorization header, or an opaque token the API server does not know', async (t) => {
  for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'Bearer garbage', 'Bearer abc.def', `Bearer ${'x'.repeat(20_000)}`]) {
    const res = await https(url(DOWNLOAD), { caFile: ca, headers: { authorization: header } });
    await expectStatus(t, res, 401, 'Unauthorized');
    t.match(res.headers['www-authenticate'], /^Bearer/);
  }
});

t.test('401: a token for another audience', async (t) => {
  const token = await c.tokenFor(w.ns, 'devops-sa', { audience: 'some-other-service' });
  const body = await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token }), 401, 'Unauthorized');
  t.match(body.message, /invalid bearer token/);
});

t.test('401: an expired token', async (t) => {
  const body = await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token: await expiredToken() }), 401, 'Unauthorized');
  t.match(body.message, /expired/);
});

t.test('401: a well-formed token the API server does not know (bad signature)', async (t) => {
  const [h, p] = w.devopsToken.split('.');
  const forged = `${h}.${p}.${Buffer.from('not the signature').toString('base64url')}`;
  await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token: forged }), 401, 'Unauthorized');
});

t.test('401: the token of a deleted ServiceAccount', async (t) => {
  await c.createServiceAccount(w.ns, 'leaver');
  await c.applyManifest(`apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: leaver-files, namespace: ${w.ns}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: packetcapture-files-reader}\nsubjects: [{kind: ServiceAccount, name: leaver, namespace: ${w.ns}}]\n`);
  const token = await c.tokenFor(w.ns, 'leaver');
  await c.core.deleteNamespacedServiceAccount({ name: 'leaver', namespace: w.ns });
  // The API server checks a token's ServiceAccount against its own informer, which learns of the
  // delete a moment later; the gateway must follow the API server's verdict once it has one.
  await waitFor(async () => {
    const review = await c.authn.createTokenReview({ body: { spec: { token } } });
    return review.status?.authenticated !== true;
  }, { what: 'the API server to refuse the deleted ServiceAccount\'s token', timeoutMs: 10_000 });
  const body = await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token }), 401, 'Unauthorized');
  t.match(body.message, /invalid bearer token/);
});

t.test('403: an authenticated user of another namespace', async (t) => {
  const other = await c.createNamespace('payments');
  await c.createServiceAccount(other, 'devops-sa');
  const token = await c.tokenFor(other, 'devops-sa');
  const body = await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token }), 403, 'Forbidden');
  t.match(body.message, new RegExp(`system:serviceaccount:${other}:devops-sa" cannot get packetcaptures/files`));
  // The same user is refused for the merged pcapng, listing and deletion too.
  await expectStatus(t, await https(url(PCAPNG), { caFile: ca, token }), 403, 'Forbidden', PCAPNG);
  await expectStatus(t, await https(url(FILES), { caFile: ca, token }), 403, 'Forbidden', FILES);
  await expectStatus(t, await https(url(FILES), { caFile: ca, token, method: 'DELETE' }), 403, 'Forbidden', FILES, 'DELETE');
});

t.test('403: get is not delete', async (t) => {
  const body = await expectStatus(t, await https(url(FILES), { caFile: ca, token: w.devopsToken, method: 'DELETE' }), 403, 'Forbidden', FILES, 'DELETE');
  t.match(body.message, /cannot delete packetcaptures\/files/);
});

t.test('404: no such PacketCapture', async (t) => {
  const body = await expectStatus(t, await https(url(DOWNLOAD, w.ns, 'no-such-capture'), { caFile: ca, token: w.devopsToken }), 404, 'NotFound');
  t.match(body.message, /"no-such-capture" not found/);
  await expectStatus(t, await https(url(FILES, w.ns, 'no-such-capture'), { caFile: ca, token: w.devopsToken }), 404, 'NotFound', FILES);
  await expectStatus(t, await https(url(PCAPNG, w.ns, 'no-such-capture'), { caFile: ca, token: w.devopsToken }), 404, 'NotFound', PCAPNG);
});

t.test('404 with another reason: a capture that has no files yet', async (t) => {
  await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: fresh, namespace: ${w.ns}}\nspec: {selector: all()}\n`);
  const body = await expectStatus(t, await https(url(DOWNLOAD, w.ns, 'fresh'), { caFile: ca, token: w.devopsToken }), 404, 'NoFiles');
  t.match(body.message, /has no files yet/);
  const merged = await expectStatus(t, await https(url(PCAPNG, w.ns, 'fresh'), { caFile: ca, token: w.devopsToken }), 404, 'NoFiles', PCAPNG);
  t.match(merged.message, /has no files yet/);
  const list = await https(url(FILES, w.ns, 'fresh'), { caFile: ca, token: w.devopsToken });
  t.equal(list.status, 200, 'the listing of such a capture is simply empty');
  t.same(list.json<{ files: unknown[] }>().files, []);
});

t.test('409: DELETE while the capture is still running on any node', async (t) => {
  await c.applyYaml(join(REPO_ROOT, 'rbac-examples', 'files-delete-role.yaml'), { renameNamespace: { from: 'storefront', to: w.ns } });
  const body = await waitFor(async () => {
    const res = await https(url(FILES), { caFile: ca, token: w.devopsToken, method: 'DELETE' });
    return res.status === 409 ? await expectStatus(t, res, 409, 'Conflict', FILES, 'DELETE') : undefined;
  }, { what: 'DELETE to be authorized and refused with 409', timeoutMs: 15_000 });
  t.match(body.message, `still capturing on ${w.nodeName('node-1')}, ${w.nodeName('node-2')}: stop it first`);
  // Nothing was deleted.
  const list = await https(url(FILES), { caFile: ca, token: w.devopsToken });
  t.equal(list.json<{ files: unknown[] }>().files.length, w.files.size);
});

t.test('502 naming the node: an agent that holds files cannot be reached', async (t) => {
  const agent = w.agents[1]!;
  await agent.proc.kill();
  const body = await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token: w.devopsToken }), 502, 'BadGateway');
  t.match(body.message, new RegExp(`could not serve them: ${agent.node} \\(its agent could not be asked \\(.+\\)\\)$`), 'naming the node and why');
  t.same(body.details?.causes?.map((cause) => cause.field), [agent.node]);
  await expectStatus(t, await https(url(FILES), { caFile: ca, token: w.devopsToken }), 502, 'BadGateway', FILES);
  const merged = await expectStatus(t, await https(url(PCAPNG), { caFile: ca, token: w.devopsToken }), 502, 'BadGateway', PCAPNG);
  t.same(merged.details?.causes?.map((cause) => cause.field), [agent.node], 'files.pcapng: the same 502 naming the node');

  // ?partial=true: what is reachable, and a manifest of what is not; never a silent partial zip.
  const partial = await https(`${url(DOWNLOAD)}?partial=true`, { caFile: ca, token: w.devopsToken });
  t.equal(partial.status, 200, `partial: ${partial.status === 200 ? '' : partial.body.toString().slice(0, 300)}`);
  await checkResponse('GET', DOWNLOAD, partial.status, partial.headers['content-type'] as string, partial.body);
  const dir = await scratchDir(t, 'partial');
  await writeFile(join(dir, 'files.zip'), partial.body);
  t.equal((await run('unzip', ['-t', join(dir, 'files.zip')])).code, 0, 'a valid zip');
  const entries = await zipEntries(join(dir, 'files.zip'));
  const up = w.agents[0]!.node;
  t.same(entries, ['MISSING.txt', ...[...w.files.keys()].filter((k) => k.startsWith(`${up}/`)).sort()], 'the manifest first, then every file of the node that answered');
  const manifest = (await run('unzip', ['-p', join(dir, 'files.zip'), 'MISSING.txt'])).stdout;
  t.match(manifest, /is partial \(\?partial=true\)/);
  t.match(manifest, new RegExp(`^${agent.node}\tAgentUnreachable\tits agent could not be asked`, 'm'), 'names the node left out and why');
  t.notMatch(manifest, new RegExp(up), 'and only it');
  t.equal(manifest.trim().split('\n').length, 3, 'one line per missing node');

  // The merged pcapng says so in its section comment, and holds the packets of the node that answered.
  const pcapng = await https(`${url(PCAPNG)}?partial=true`, { caFile: ca, token: w.devopsToken });
  t.equal(pcapng.status, 200, pcapng.status === 200 ? 'partial files.pcapng' : pcapng.body.toString().slice(0, 300));
  await checkResponse('GET', PCAPNG, pcapng.status, pcapng.headers['content-type'] as string, pcapng.body);
  await writeFile(join(dir, 'files.pcapng'), pcapng.body);
  const info = await run('capinfos', ['-M', join(dir, 'files.pcapng')]);
  t.equal(info.code, 0, info.stderr);
  t.match(info.stdout, /PARTIAL \(\?partial=true\): 1 node\(s\) hold files/);
  t.match(info.stdout, new RegExp(`${agent.node}: AgentUnreachable: its agent could not be asked`), 'the comment names the node left out and why');
  const upPackets = [...w.files.keys()].filter((k) => k.startsWith(`${up}/`)).length;
  t.ok(upPackets > 0);
  const names = (await run('tshark', ['-r', join(dir, 'files.pcapng'), '-T', 'fields', '-e', 'frame.interface_name'])).stdout.trim().split('\n');
  t.ok(names.length > 0 && names.every((n) => n.startsWith(`${up}/${w.ns}/`)), `every packet is of the node that answered (${[...new Set(names)].join(', ')})`);
});

t.test('once stopped, DELETE removes every node\'s files; with an agent down it is a 502 first', async (t) => {
  const down = w.agents[1]!;
  const restart = async () => await startAgent(t, c, { node: down.node, address: down.address, port: down.port, captureDir: down.captureDir, pki: w.pki, logDir: w.logDir, extraArgs: ['--status-interval-ms=200'] });
  const back = await restart();
  await w.stopCapture();
  await back.proc.kill();
  const failed = await https(url(FILES), { caFile: ca, token: w.devopsToken, method: 'DELETE' });
  const body = await expectStatus(t, failed, 502, 'BadGateway', FILES, 'DELETE');
  t.match(body.message, new RegExp(`could not serve them: ${down.node} \\(its agent could not be asked`));
  await restart();
  const res = await https(url(FILES), { caFile: ca, token: w.devopsToken, method: 'DELETE' });
  t.equal(res.status, 200, res.body.toString());
  await checkResponse('DELETE', FILES, res.status, res.headers['content-type'] as string, res.body);
  const removed = res.json<{ removed: { node: string; file: string }[] }>().removed.map((r) => `${r.node}/${r.file}`);
  t.same(removed, [...w.files.keys()].sort(), 'every file of every node, reported');
  await expectStatus(t, await https(url(DOWNLOAD), { caFile: ca, token: w.devopsToken }), 404, 'NoFiles');
});
