// The seed's story at the gateway: devops-sa with only the capture Role gets 403; once the
// files Role is bound, the same curl gets a zip of every node's files, byte for byte.
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
const ca = w.pki.ca.certFile;

/** The README's command, verbatim but for the port: curl ... -L -O -k -H "Authorization: Bearer $TOKEN". */
async function readmeCurl(cwd: string, token: string, url = w.downloadUrl()): Promise<{ code: number; file: Buffer }> {
  const localhostUrl = url.replace('https://127.0.0.1:', 'https://localhost:');
  const res = await run('curl', [localhostUrl, '-L', '-O', '-k', '-H', `Authorization: Bearer ${token}`, '-sS'], { cwd });
  return { code: res.code, file: await readFile(join(cwd, 'files.zip')) };
}

t.test('with only the capture Role, the README\'s curl gets 403', async (t) => {
  const cwd = await scratchDir(t, 'curl');
  const { code, file } = await readmeCurl(cwd, w.devopsToken);
  t.equal(code, 0, 'curl ran');
  const status = JSON.parse(file.toString('utf8')) as { kind: string; code: number; reason: string; message: string };
  t.equal(status.kind, 'Status');
  t.equal(status.code, 403);
  t.equal(status.reason, 'Forbidden');
  t.match(status.message, new RegExp(`system:serviceaccount:${w.ns}:devops-sa" cannot get packetcaptures/files`));
  const res = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(res.status, 403);
  await checkResponse('GET', '/packet-capture/download/{namespace}/{name}/files.zip', res.status, res.headers['content-type'] as string, res.body);
});

t.test('after the files Role is bound, the same curl gets every node\'s files, byte-identical', async (t) => {
  await w.grantFiles();
  const cwd = await scratchDir(t, 'curl');
  // The 403 may be cached for the deny TTL; the grant shows within it.
  const { file } = await waitFor(async () => {
    const r = await readmeCurl(cwd, w.devopsToken);
    return r.file.subarray(0, 2).toString() === 'PK' ? r : undefined;
  }, { what: 'the download to be allowed after the RoleBinding', timeoutMs: 15_000, intervalMs: 500 });
  t.ok(file.length > 0);
  const test = await run('unzip', ['-t', 'files.zip'], { cwd });
  t.equal(test.code, 0, `unzip -t: ${test.stdout}${test.stderr}`);
  t.match(test.stdout, /No errors detected/);

  const out = join(cwd, 'x');
  await mkdir(out);
  t.equal((await run('unzip', ['-q', join(cwd, 'files.zip'), '-d', out])).code, 0);
  const entries: string[] = [];
  for (const node of (await readdir(out)).sort()) for (const f of (await readdir(join(out, node))).sort()) entries.push(`${node}/${f}`);
  t.same(entries, [...w.files.keys()].sort(), 'entries are <node>/<file>, for every file of every node');
  for (const [entry, bytes] of w.files) {
    t.ok((await readFile(join(out, entry))).equals(bytes), `${entry} byte-identical`);
  }
  // And Wireshark's reader agrees with every file.
  for (const entry of entries) {
    const r = await run('tshark', ['-r', join(out, entry), '-T', 'fields', '-e', 'dns.qry.name']);
    t.equal(r.code, 0, `tshark reads ${entry}: ${r.stderr}`);
    t.match(r.stdout, /\.storefront\.example/);
  }
});

t.test('the zip has the promised headers and is also served without the /packet-capture prefix', async (t) => {
  for (const prefix of [true, false]) {
    const res = await https(w.downloadUrl(prefix), { caFile: ca, token: w.devopsToken });
    t.equal(res.status, 200);
    t.equal(res.headers['content-type'], 'application/zip');
    t.equal(res.headers['content-disposition'], 'attachment; filename=files.zip');
    t.equal(res.headers['content-length'], String(res.body.length), 'a stored zip says its exact length up front');
    t.equal(res.headers['transfer-encoding'], undefined, 'so it is not chunked');
    t.equal(res.body.subarray(0, 2).toString(), 'PK');
  }
});

t.test('curl sees the exact length: progress has a total, and the bytes it got are the bytes promised', async (t) => {
  const cwd = await scratchDir(t, 'length');
  const r = await run('curl', ['-sS', '--cacert', ca, '-H', `Authorization: Bearer ${w.devopsToken}`, '-o', 'files.zip', '-w', '%{size_download} %header{content-length}', w.downloadUrl()], { cwd });
  t.equal(r.code, 0, r.stderr);
  const [got, promised] = r.stdout.trim().split(' ').map(Number);
  t.ok(got! > 0);
  t.equal(got, promised, `curl downloaded ${got} bytes of the ${promised} promised`);
  t.equal((await readFile(join(cwd, 'files.zip'))).length, promised);
  t.equal((await run('unzip', ['-t', 'files.zip'], { cwd })).code, 0);
});

t.test('compression=deflate gives a smaller zip with the same files', async (t) => {
  const stored = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  const deflated = await https(`${w.downloadUrl()}?compression=deflate`, { caFile: ca, token: w.devopsToken });
  t.equal(deflated.status, 200);
  t.equal(deflated.headers['transfer-encoding'], 'chunked', 'a deflated zip\'s length is not known up front: chunked');
  t.equal(deflated.headers['content-length'], undefined);
  t.ok(deflated.body.length < stored.body.length, `deflate ${deflated.body.length} < store ${stored.body.length}`);
  const cwd = await scratchDir(t, 'deflate');
  await writeFile(join(cwd, 'd.zip'), deflated.body);
  const listing = await run('unzip', ['-v', 'd.zip'], { cwd });
  t.match(listing.stdout, /Defl:N/);
  t.equal((await run('unzip', ['-t', 'd.zip'], { cwd })).code, 0);
  const bad = await https(`${w.downloadUrl()}?compression=lzma`, { caFile: ca, token: w.devopsToken });
  t.equal(bad.status, 400, 'an unknown compression is a bad request');
});

t.test('the listing shows node, file, size, modified and state, as openapi.yaml says', async (t) => {
  for (const path of ['/packet-capture/files/{namespace}/{name}', '/files/{namespace}/{name}']) {
    const url = w.gateway.url + path.replace('{namespace}', w.ns).replace('{name}', CAPTURE);
    const res = await https(url, { caFile: ca, token: w.devopsToken });
    t.equal(res.status, 200, path);
    await checkResponse('GET', path, res.status, res.headers['content-type'] as string, res.body);
    const body = res.json<{ files: { node: string; file: string; size: number; state: string; identity: string }[] }>();
    t.same(body.files.map((f) => `${f.node}/${f.file}`).sort(), [...w.files.keys()].sort());
    for (const f of body.files) {
      t.equal(f.size, w.files.get(`${f.node}/${f.file}`)!.length, `${f.file} size`);
      t.equal(f.state, 'Capturing', 'the node\'s state');
      // The identity is the file's inode and birth time on its node: the same through rotation's rename.
      const agent = w.agents.find((a) => a.node === f.node)!;
      const st = await stat(join(agent.captureDir, w.ns, CAPTURE, f.file), { bigint: true });
      t.equal(f.identity, `${st.ino.toString(16)}-b${st.birthtimeNs.toString(16)}`, `${f.file} identity`);
    }
  }
});
