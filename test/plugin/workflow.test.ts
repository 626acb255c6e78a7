// kubectl pcap, subcommand by subcommand, against the real API server, agents and gateway
// (--gateway: the port-forward path has its own test): each command's happy path and the
// answer for its main failure, as a DevOps engineer with only rbac-examples/' Roles sees it.
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { run, zipEntries } from '../harness/http.js';
import { gatewayMetric, scratchDir } from '../harness/kube-pcap.js';
import { pcapRecordCount, runPlugin, writeKubeconfig } from '../harness/plugin.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
const dir = await scratchDir(t, 'plugin-workflow');
const kubeconfig = await writeKubeconfig(c, dir, 'devops', { token: w.devopsToken }, w.ns);
const gateway = ['--gateway', w.gateway.url, '--gateway-ca-file', w.pki.ca.certFile, '--trust-gateway-url'];
// Its own cache directory: kubectl pcap remembers each gateway link's speed there (--compress auto).
const cacheHome = join(dir, 'cache');
const kp = async (args: string[], cwd = dir) => await runPlugin(args, { kubeconfig, cwd, env: { XDG_CACHE_HOME: cacheHome } });
const totalPackets = [...w.files.values()].reduce((n, b) => n + pcapRecordCount(b), 0);
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };

async function tsharkCount(file: string): Promise<number> {
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number']);
  if (r.code !== 0) throw new Error(`tshark -r ${file}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).length;
}

t.test('create: server-side apply from flags, -l translated to Calico\'s syntax; again, it configures', async (t) => {
  const r = await kp(['create', 'web-dns', '-l', 'app=logging,tier!=db', '--filter', 'udp:53', '--filter', 'tcp:80-90,443', '--duration', '10m']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.text, 'packetcapture.projectcalico.org/web-dns created\n');
  const pc = await getPacketCapture(w.kube, w.ns, 'web-dns');
  t.equal(pc?.spec?.selector, '(app == "logging" && tier != "db")');
  t.same(pc?.spec?.filters, [{ protocol: 'UDP', ports: [53] }, { protocol: 'TCP', ports: ['80:90', 443] }]);
  const endIn = Date.parse(pc!.spec!.endTime!) - Date.now();
  t.ok(endIn > 9 * 60_000 && endIn <= 10 * 60_000, `ends in 10 minutes (${endIn} ms)`);
  const managers = (pc!.metadata as { managedFields?: { manager: string; operation: string }[] }).managedFields ?? [];
  t.ok(managers.some((m) => m.manager === 'kubectl-pcap' && m.operation === 'Apply'), 'applied server-side by kubectl-pcap');

  const again = await kp(['create', 'web-dns', '--selector', 'app == "logging"', '--filter', 'udp:53']);
  t.equal(again.text, 'packetcapture.projectcalico.org/web-dns configured\n', again.stderr);
  const updated = await getPacketCapture(w.kube, w.ns, 'web-dns');
  t.same(updated?.spec?.filters, [{ protocol: 'UDP', ports: [53] }], 'fields the apply no longer sets are gone');
  t.equal(updated?.spec?.endTime, undefined);
});

t.test('create: a bad selector is pointed at before anything reaches the cluster', async (t) => {
  const r = await kp(['create', 'bad', '--selector', 'app == "web" &&']);
  t.equal(r.code, 2);
  t.match(r.stderr, /invalid selector at position 15/);
  t.match(r.stderr, /\n {2}app == "web" &&\n {2} {15}\^/, 'a caret under the position');
  const k8s = await kp(['create', 'bad', '-l', 'app=web,,x']);
  t.equal(k8s.code, 2);
  t.match(k8s.stderr, /invalid label selector at position 8: an empty requirement/);
  const filter = await kp(['create', 'bad', '--filter', 'tcp:99999']);
  t.equal(filter.code, 2);
  t.match(filter.stderr, /--filter tcp:99999: port 99999 is not from 1 to 65535/);
  t.equal(await getPacketCapture(w.kube, w.ns, 'bad'), undefined, 'nothing created');
});

t.test('get, list and describe show each node\'s state', async (t) => {
  const get = await kp(['get']);
  t.equal(get.code, 0, get.stderr);
  t.match(get.text, /^NAME +NODES +PHASE +AGE\n/);
  t.match(get.text, new RegExp(`^${CAPTURE} +2 Capturing +Running +\\d+s\\n`, 'm'));
  const json = JSON.parse((await kp(['get', CAPTURE, '-o', 'json'])).text) as { metadata: { name: string }; status: { files: unknown[] } };
  t.equal(json.metadata.name, CAPTURE);
  t.equal(json.status.files.length, 2);
  const yaml = await kp(['get', CAPTURE, '-o', 'yaml']);
  t.match(yaml.text, /^kind: PacketCapture$/m);
  t.notMatch(yaml.text, /managedFields/, 'as kubectl prints it, without managedFields');
  const wide = await kp(['get', CAPTURE, '-o', 'wide']);
  t.match(wide.text, /SELECTOR +FILTERS +PACKETS/);
  t.match(wide.text, /app == "logging" +udp:53 /);
  const forbidden = await kp(['list', '-A']);
  t.equal(forbidden.code, 1, 'devops-sa may list captures in its namespace only');
  t.match(forbidden.stderr, /"list" on packetcaptures \(projectcalico.org\) in every namespace \(-A\); rbac-examples\/capture-role.yaml/);
  const all = await runPlugin(['list', '-A'], { kubeconfig: c.info.kubeconfig });
  t.match(all.text, /^NAMESPACE +NAME +NODES/);
  t.match(all.text, new RegExp(`^${w.ns} +${CAPTURE} +2 Capturing`, 'm'));
  const describe = await kp(['describe', CAPTURE]);
  t.equal(describe.code, 0, describe.stderr);
  t.match(describe.text, /Selector: +app == "logging"\n/);
  t.match(describe.text, /Filters: +udp:53\n/);
  t.match(describe.text, /NODE +STATE +PODS +PACKETS +BYTES +DROPS +FILES +MESSAGE/);
  for (const a of w.agents) t.match(describe.text, new RegExp(`^${a.node} +Capturing +\\d+ +\\d+ +[\\d.]+ \\w+ +\\d+ +2\\b`, 'm'), `${a.node}: Capturing with 2 files`);
  const missing = await kp(['get', 'no-such-capture']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, `there is no PacketCapture no-such-capture in namespace ${w.ns}`);
  t.equal((await kp(['get', '-o', 'toml'])).code, 2, '-o is checked');
});

t.test('wait: the seed capture is capturing; one no pod matches times out with the nodes\' states', async (t) => {
  const ok = await kp(['wait', CAPTURE]);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.text, `packetcapture.projectcalico.org/${CAPTURE} capturing (2 Capturing)\n`);
  const late = await kp(['wait', 'web-dns', '--timeout=2s']);
  t.equal(late.code, 1);
  t.match(late.stderr, /timed out after 2s waiting for web-dns to be capturing: (\d+ WaitingForTraffic|no node has reported it)/);
});

t.test('download: 403 names the missing permission and its Role; then the zip and the pcapng are whole', async (t) => {
  const denied = await kp(['download', CAPTURE, '-w', 'denied.zip', ...gateway]);
  t.equal(denied.code, 1);
  t.match(denied.stderr, `"get" on packetcaptures/files (projectcalico.org) in namespace ${w.ns}`);
  t.match(denied.stderr, 'rbac-examples/files-role.yaml');
  t.match(denied.stderr, `user "system:serviceaccount:${w.ns}:devops-sa" cannot get packetcaptures/files`);
  t.same((await readdir(dir)).filter((f) => f.includes('denied')), [], 'no file, not even a partial one');

  await w.grantFiles();
  const zip = await waitFor(async () => {
    const r = await kp(['download', CAPTURE, ...gateway]);
    return r.code === 0 ? r : undefined;
  }, { what: 'the download once the files Role is bound', timeoutMs: 20_000 });
  t.equal(zip.text, '', 'nothing on stdout');
  t.equal(zip.stderr, '', 'no progress on a pipe');
  const file = join(dir, `${CAPTURE}.zip`);
  t.same((await zipEntries(file)).sort(), [...w.files.keys()].sort(), 'every node\'s files, default name NAME.zip');
  for (const [entry, bytes] of w.files) t.ok((await unzipBytes(file, entry)).equals(bytes), `${entry} intact`);

  const zstdAtStart = await zstdSent();
  const pcapng = await kp(['download', CAPTURE, '-w', 'merged.pcapng', ...gateway]);
  t.equal(pcapng.code, 0, pcapng.stderr);
  t.equal(await tsharkCount(join(dir, 'merged.pcapng')), totalPackets, 'the merged pcapng holds every packet');
  const piped = await kp(['download', CAPTURE, '-w', '-', ...gateway]);
  t.equal(piped.code, 0, piped.stderr);
  t.equal(piped.stdout.readUInt32LE(0), 0x0a0d0d0a, '-w - is a pcapng on stdout');
  const zstdAfter = await zstdSent();
  t.ok(zstdAfter > zstdAtStart, `a pcapng comes zstd-compressed by default (--compress auto, no link speed known): ${zstdAfter - zstdAtStart} bytes sent so`);
  const plain = await kp(['download', CAPTURE, '-w', 'plain.pcapng', '--compress', 'never', ...gateway]);
  t.equal(plain.code, 0, plain.stderr);
  t.equal(await zstdSent(), zstdAfter, '--compress never: identity');
  t.ok((await readFile(join(dir, 'plain.pcapng'))).equals(await readFile(join(dir, 'merged.pcapng'))), 'the decoded download is the identity download, byte for byte');
  t.equal(zipMethods(join(dir, `${CAPTURE}.zip`)).has('stor'), true, 'a zip is stored by default (exact length)');
  // A link measured slow on an earlier download (the plugin's own record): the zip comes deflated.
  await mkdir(join(cacheHome, 'kube-pcap'), { recursive: true });
  await writeFile(join(cacheHome, 'kube-pcap', 'links.json'), JSON.stringify({ [`test ${new URL(w.gateway.url).origin}`]: { bytesPerSecond: 1_000_000, at: new Date().toISOString() } }));
  const slow = await kp(['download', CAPTURE, '-w', 'slow.zip', ...gateway]);
  t.equal(slow.code, 0, slow.stderr);
  t.same([...zipMethods(join(dir, 'slow.zip'))], ['defN'], 'over a link measured slow, every entry deflated');
  t.same((await zipEntries(join(dir, 'slow.zip'))).sort(), [...w.files.keys()].sort());
  for (const [entry, bytes] of w.files) t.ok((await unzipBytes(join(dir, 'slow.zip'), entry)).equals(bytes), `${entry} intact, deflated`);
  const bad = await kp(['download', CAPTURE, '-w', 'x.zip', '--compress', 'sometimes', ...gateway]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--compress must be auto, always or never/);

  const noFiles = await kp(['download', 'web-dns', '-w', 'none.zip', ...gateway]);
  t.equal(noFiles.code, 1);
  t.match(noFiles.stderr, /has no files yet: (\d of 2 nodes are still WaitingForTraffic|no node has taken it up)/);
  const badName = await kp(['download', CAPTURE, '-w', 'capture.txt', ...gateway]);
  t.equal(badName.code, 2);
  t.match(badName.stderr, /end the name in \.zip .* or \.pcapng/);
  t.same((await readdir(dir)).filter((f) => f.includes('.part-')), [], 'no temporary file left behind');
});

/** The compression methods zipinfo names for the entries of a zip (stor, defN, ...). */
function zipMethods(file: string): Set<string> {
  const out = execFileSync('zipinfo', [file], { encoding: 'utf8' });
  return new Set(out.split('\n').filter((l) => /^[-d]r/.test(l)).map((l) => l.trim().split(/\s+/)[5]!));
}

/** zstd bytes the gateway has sent so far. */
async function zstdSent(): Promise<number> {
  return await gatewayMetric(w.gateway, w.pki, 'kube_pcap_gateway_encoded_bytes_total', 'coding="zstd"');
}

async function unzipBytes(file: string, entry: string): Promise<Buffer> {
  return await new Promise((resolve, reject) => execFile('unzip', ['-p', file, entry], { encoding: 'buffer', maxBuffer: 1 << 26 }, (err, out) => (err ? reject(err) : resolve(out))));
}

t.test('stop, wait for finished, and stream what was captured from --since: it ends by itself', async (t) => {
  const stop = await kp(['stop', CAPTURE]);
  t.equal(stop.code, 0, stop.stderr);
  t.match(stop.text, /stopped \(files kept/);
  const pc = await getPacketCapture(w.kube, w.ns, CAPTURE);
  t.ok(Date.parse(pc!.spec!.endTime!) <= Date.now(), 'endTime is now');
  const finished = await kp(['wait', CAPTURE, '--for=finished', '--timeout=30s']);
  t.equal(finished.code, 0, finished.stderr);
  t.match(finished.text, /finished \(2 Finished\)/);
  t.match((await kp(['stop', CAPTURE])).text, /already stopped/);

  const stream = await kp(['stream', CAPTURE, '--since', '2000-01-01T00:00:00Z', '-w', 'live.pcapng', ...gateway]);
  t.equal(stream.code, 0, stream.stderr);
  t.equal(await tsharkCount(join(dir, 'live.pcapng')), totalPackets, 'every packet on disk since then, and the stream ended with the capture');
  const badSince = await kp(['stream', CAPTURE, '--since', 'yesterday', '-w', '-', ...gateway]);
  t.equal(badSince.code, 2);
  t.match(badSince.stderr, /--since must be an RFC 3339 time/);
});

t.test('clean: 403 names files-delete-role.yaml; with it, the files are removed from every node', async (t) => {
  const denied = await kp(['clean', CAPTURE, ...gateway]);
  t.equal(denied.code, 1);
  t.match(denied.stderr, 'rbac-examples/files-delete-role.yaml');
  await c.applyYaml(join(REPO_ROOT, 'rbac-examples', 'files-delete-role.yaml'), rename);
  const cleaned = await waitFor(async () => {
    const r = await kp(['clean', CAPTURE, ...gateway]);
    return r.code === 0 ? r : undefined;
  }, { what: 'clean once the delete Role is bound', timeoutMs: 20_000 });
  t.equal(cleaned.text, `removed ${w.files.size} files of ${CAPTURE} from 2 nodes\n`);
  for (const a of w.agents) t.same((await readdir(join(a.captureDir, w.ns, CAPTURE))).filter((f) => f.endsWith('.pcap')), [], `${a.node} holds no file`);
});

t.test('delete removes the capture', async (t) => {
  const r = await kp(['delete', 'web-dns']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.text, /"web-dns" deleted/);
  t.equal(await getPacketCapture(w.kube, w.ns, 'web-dns'), undefined);
  const again = await kp(['delete', 'web-dns']);
  t.equal(again.code, 1);
  t.match(again.stderr, /there is no PacketCapture web-dns/);
});

t.test('usage mistakes exit 2 with a pointer to --help; --help has examples', async (t) => {
  const noName = await kp(['download']);
  t.equal(noName.code, 2);
  t.match(noName.stderr, /needs exactly one capture NAME[\s\S]*kubectl pcap download --help/);
  const unknown = await kp(['get', '--frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown flag --frobnicate/);
  const help = await kp(['create', '--help']);
  t.equal(help.code, 0);
  t.match(help.text, /Examples:\n {2}kubectl pcap create /);
  t.match(help.text, /-n, --namespace=NS/);
  t.equal((await kp(['frobnicate'])).code, 2);
});
