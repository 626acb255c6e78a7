// files.pcapng end to end (docs/pcapng.md): two nodes' agents capture two real pods' DNS
// traffic with real tcpdump, rotating often; the README's curl, piped into real tshark, reads
// one time-ordered pcapng in which every packet names its node, namespace and pod, and name
// resolution from the file shows pod names. Once the capture is Finished, the merged file
// holds exactly as many packets as the zip's files together, and so does the same download
// compressed (zstd, gzip) and decoded by curl.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { captureWorld } from '../harness/capture-fixture.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { https, run } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 2, agentArgs: ['--capture-max-size-bytes=1000000', '--capture-max-files=50'] });
const pods = [await w.addPod(w.nodes[0]!, 'logging-a', { app: 'logging' }), await w.addPod(w.nodes[1]!, 'logging-b', { app: 'logging' })];
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
const token = await c.tokenFor(w.ns, 'devops-sa');
const SPEC = '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]';
await w.applyCapture('merged', SPEC);
for (const n of ['node-1', 'node-2']) await w.waitForState('merged', n, 'WaitingForTraffic');
// Queries padded to 1 400 bytes: tcpdump's 1 MB files rotate every few seconds.
const senders = pods.map((p) => startDnsSender(t, p, w.dns.ip, p.name, 0, 4, w.logDir, 1400));
// Several rotated files per pod: the merge reads each pod's files in turn.
for (const n of ['node-1', 'node-2']) {
  await waitFor(async () => (await readdir(w.captureDir(n, 'merged')).catch(() => [] as string[])).filter((f) => /-\d{16}\.pcap$/.test(f)).length >= 2, { what: `rotated files on ${n}`, timeoutMs: 60_000 });
}
const gateway = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService });
const url = (prefix = '/packet-capture'): string => `${gateway.url}${prefix}/download/${w.ns}/merged/files.pcapng`;

interface Row { iface: string; description: string; time: bigint; src: string; dst: string; srcHost: string; dstHost: string }

/** The README's pipe: curl with the token into tshark reading stdin, with names from the file. */
async function curlIntoTshark(): Promise<{ rows: Row[]; warnings: string[]; curlCode: string }> {
  const fields = ['frame.interface_name', 'frame.interface_description', 'frame.time_epoch', 'ip.src', 'ip.dst', 'ip.src_host', 'ip.dst_host'];
  const script = `set -o pipefail; curl -sS --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL" | tshark -r - -N n -T fields -E separator='|' ${fields.map((f) => `-e ${f}`).join(' ')}; echo "exit=$?" >&2`;
  const r = await run('env', [`CA=${w.pki.ca.certFile}`, `TOKEN=${token}`, `URL=${url()}`, 'bash', '-c', script], { maxBuffer: 256 * 1024 * 1024 });
  const rows = r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => {
    const [iface, description, time, src, dst, srcHost, dstHost] = l.split('|') as [string, string, string, string, string, string, string];
    const [s, frac] = time.split('.') as [string, string];
    return { iface, description, time: BigInt(s) * 1_000_000_000n + BigInt(frac.padEnd(9, '0').slice(0, 9)), src, dst, srcHost, dstHost };
  });
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^Running as user/.test(l));
  return { rows, warnings: lines.filter((l) => !/^exit=/.test(l)), curlCode: lines.find((l) => /^exit=/.test(l)) ?? '' };
}

/** Packets out of time order that their own interface's clock does not explain. */
function unexplainedDisorder(rows: Row[]): string[] {
  const latest = new Map<string, bigint>();
  const problems: string[] = [];
  let max = 0n;
  for (const [i, r] of rows.entries()) {
    const own = latest.get(r.iface) ?? 0n;
    if (r.time < max && r.time >= own) problems.push(`packet ${i + 1} (${r.iface}) at ${r.time} after ${max}, though its interface had reached only ${own}`);
    if (r.time > own) latest.set(r.iface, r.time);
    if (r.time > max) max = r.time;
  }
  return problems;
}

t.test('curl | tshark: one time-ordered pcapng whose packets name their node, namespace and pod, with pod names from the file', async (t) => {
  const { rows, warnings, curlCode } = await curlIntoTshark();
  t.equal(curlCode, 'exit=0', 'curl and tshark both succeed');
  t.same(warnings, [], 'tshark has nothing to say about the stream');
  t.ok(rows.length > 100, `${rows.length} packets`);
  for (const [i, p] of pods.entries()) {
    const node = w.nodeName(`node-${i + 1}`);
    const mine = rows.filter((r) => r.src === p.ip || r.dst === p.ip);
    t.ok(mine.length > 50, `${p.name}: ${mine.length} packets`);
    t.same([...new Set(mine.map((r) => r.iface))], [`${node}/${w.ns}/${p.name}/${p.hostIface}`], `${p.name}'s packets are on its own interface, named <node>/<namespace>/<pod>/<iface>`);
    t.match(mine[0]!.description, new RegExp(`^k8s\\.node=${node};k8s\\.namespace=${w.ns};k8s\\.pod=${p.name};k8s\\.capture=merged;k8s\\.pod\\.uid=`));
    const named = mine.find((r) => r.src === p.ip)!;
    t.equal(named.srcHost, `${p.name}.${w.ns}`, `tshark -N n shows ${p.ip} as ${p.name}.${w.ns}, from the file's Name Resolution Block`);
  }
  t.same(unexplainedDisorder(rows), [], 'timestamps never go back across interfaces, only where one interface\'s own clock did');
});

t.test('served without the /packet-capture prefix too, as a proxy that strips it forwards', async (t) => {
  const res = await https(url(''), { caFile: w.pki.ca.certFile, token });
  t.equal(res.status, 200);
  t.equal(res.headers['content-type'], 'application/x-pcapng');
  t.equal(res.headers['content-disposition'], 'attachment; filename=files.pcapng');
  t.equal(res.body.readUInt32LE(0), 0x0a0d0d0a);
  await checkResponse('GET', '/download/{namespace}/{name}/files.pcapng', res.status, res.headers['content-type'] as string, res.body);
});

t.test('on a Finished capture, the merged pcapng holds exactly the packets of the zip\'s files', async (t) => {
  for (const s of senders) await s.stop();
  await w.applyCapture('merged', `${SPEC}\n  endTime: "${new Date(Date.now() - 1000).toISOString()}"`);
  for (const n of ['node-1', 'node-2']) await w.waitForState('merged', n, 'Finished');
  const dir = await scratchDir(t, 'finished');
  const zip = await https(`${gateway.url}/packet-capture/download/${w.ns}/merged/files.zip`, { caFile: w.pki.ca.certFile, token });
  t.equal(zip.status, 200);
  await writeFile(join(dir, 'files.zip'), zip.body);
  t.equal((await run('unzip', ['-q', join(dir, 'files.zip'), '-d', join(dir, 'zip')])).code, 0);
  let inZip = 0;
  let files = 0;
  for (const node of await readdir(join(dir, 'zip'))) {
    for (const f of await readdir(join(dir, 'zip', node))) {
      const r = await run('capinfos', ['-c', '-M', join(dir, 'zip', node, f)]);
      const m = /Number of packets:\s+(\d+)/.exec(r.stdout);
      t.ok(m, `${node}/${f}: ${r.stderr}`);
      inZip += Number(m?.[1] ?? NaN);
      files++;
    }
  }
  t.ok(files >= 6, `${files} files across the nodes`);
  const merged = await https(url(), { caFile: w.pki.ca.certFile, token });
  t.equal(merged.status, 200);
  await writeFile(join(dir, 'files.pcapng'), merged.body);
  const info = await run('capinfos', ['-M', join(dir, 'files.pcapng')]);
  t.equal(info.code, 0, info.stderr);
  t.match(info.stdout, new RegExp(`Number of packets:\\s+${inZip}\\n`), `files.pcapng holds the ${inZip} packets of the ${files} files`);
  t.match(info.stdout, /Number of interfaces in file: 2\n/, 'one interface per pod interface, however many files each has');
  t.match(info.stdout, /Capture application:\s+kube-pcap \S+/);
  // Accept-Encoding: the real curl decodes each coding (curl --compressed sends
  // "deflate, gzip, br, zstd"), and the decoded file is the identity download, packet for packet.
  t.equal(merged.headers['content-encoding'], undefined, 'no Accept-Encoding: identity');
  t.equal(merged.headers.vary, 'accept-encoding');
  for (const [accept, coding] of [['zstd', 'zstd'], ['gzip', 'gzip'], ['deflate, gzip, br, zstd', 'zstd']] as const) {
    const file = join(dir, `files-${coding}.pcapng`);
    const r = await run('curl', ['-sS', '--fail', '--cacert', w.pki.ca.certFile, '-H', `Authorization: Bearer ${token}`, '-H', `Accept-Encoding: ${accept}`, '--compressed', '-D', `${file}.headers`, '-w', '%{size_download}', '-o', file, url()]);
    t.equal(r.code, 0, r.stderr);
    const head = await readFile(`${file}.headers`, 'utf8');
    t.match(head, new RegExp(`\\ncontent-encoding: ${coding}\\r\\n`, 'i'), `Accept-Encoding: ${accept} -> Content-Encoding: ${coding}`);
    const sent = Number(r.stdout);
    t.ok(sent < merged.body.length / 2, `${coding}: ${sent} bytes on the wire for ${merged.body.length} (${(sent / merged.body.length).toFixed(2)}x)`);
    const decoded = await run('capinfos', ['-M', file]);
    t.equal(decoded.code, 0, decoded.stderr);
    t.match(decoded.stdout, new RegExp(`Number of packets:\\s+${inZip}\\n`), `${coding}: decoded, the same ${inZip} packets`);
  }
  // Every pin of these downloads is given back once they are done, none left to lapse.
  const pinsLeft = async (): Promise<string[]> => (await Promise.all(['node-1', 'node-2'].map((n) => readdir(join(w.captureDir(n, 'merged'), '..', '..', '.pins')).catch(() => [] as string[])))).flat();
  await waitFor(async () => ((await pinsLeft()).length === 0 ? true : undefined), { what: 'every pin to be released', timeoutMs: 10_000 });
});
