// kubectl pcap on the real cluster, through its own `kubectl port-forward` (the real kubectl,
// no stub) to the gateway Service, verified against the CA the chart's ConfigMap publishes:
// create, wait, download (zip and pcapng), stream into tshark, stop, delete, as a DevOps
// engineer with only rbac-examples/' Roles. Then Wireshark's extcap, driven as Wireshark
// drives it (through tshark), against the same cluster.
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run, zipEntries } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { PLUGIN, runPlugin } from '../harness/plugin.js';
import { waitFor } from '../harness/wait.js';
import { dnsClientDeployment } from './cluster-story.js';
import { realCluster } from './handle.js';
import { ensureKubePcap } from './install.js';

const NS = 'plugin';
const c = await realCluster(t);
await ensureKubePcap(c);
const dir = await scratchDir(t, 'cluster-plugin');
await c.kubectl(['create', 'namespace', NS]);
t.teardown(async () => {
  await c.kubectl(['delete', 'namespace', NS, '--wait=false']);
  await c.kubectl(['delete', 'rolebinding', 'devops-sa-kube-pcap-gateway-port-forward', '-n', 'kube-pcap']);
});
for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml', 'gateway-access.yaml']) {
  await c.admin.applyYaml(join(REPO_ROOT, 'rbac-examples', f), { renameNamespace: { from: 'storefront', to: NS } });
}
await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('logging', NS, c.info.images.workload, 2) });
const logging = await c.waitForPods(NS, 'app=logging', 2);
const token = (await c.kubectlOk(['create', 'token', 'devops-sa', '-n', NS, '--duration=1h'])).trim();
const cp = c.info.controlPlane;
const kubeconfig = join(dir, 'config');
await writeFile(kubeconfig, stringify({
  apiVersion: 'v1', kind: 'Config',
  clusters: [{ name: 'real', cluster: { server: cp.server, 'certificate-authority': cp.caFile } }],
  users: [{ name: 'devops', user: { token } }],
  contexts: [{ name: 'real', context: { cluster: 'real', user: 'devops', namespace: NS } }],
  'current-context': 'real',
}), { mode: 0o600 });
// The real kubectl, first on PATH: the plugin runs `kubectl port-forward` itself.
const env = { PATH: `${cp.binDir}:${process.env.PATH ?? ''}` };
const kp = async (args: string[], timeoutMs = 120_000) => await runPlugin(args, { kubeconfig, cwd: dir, env, timeoutMs });

t.test('create and wait', async (t) => {
  const create = await kp(['create', 'dns', '-l', 'app=logging', '--filter', 'udp:53', '--duration', '10m']);
  t.equal(create.code, 0, create.stderr);
  t.equal(create.text, 'packetcapture.projectcalico.org/dns created\n');
  const wait = await kp(['wait', 'dns', '--timeout', '90s']);
  t.equal(wait.code, 0, wait.stderr);
  t.match(wait.text + wait.stderr, /Capturing/);
});

t.test('download through kubectl port-forward: every node\'s files as a zip, and one pcapng naming the pods', async (t) => {
  await waitFor(async () => {
    const s = await c.kubectl(['get', 'packetcapture', 'dns', '-n', NS, '-o', 'jsonpath={range .status.files[*]}{.node}={.state} {end}']);
    return c.nodeNames.every((n) => s.stdout.includes(`${n}=Capturing`));
  }, { what: 'both nodes Capturing', timeoutMs: 60_000, intervalMs: 500 });
  const zip = await kp(['download', 'dns', '-w', 'dns.zip']);
  t.equal(zip.code, 0, zip.stderr);
  const entries = await zipEntries(join(dir, 'dns.zip'));
  for (const p of logging) t.ok(entries.some((e) => e.startsWith(`${p.node}/${p.name}_`)), `${p.node}/${p.name}_… in the zip`);
  const pcapng = await kp(['download', 'dns', '-w', 'dns.pcapng']);
  t.equal(pcapng.code, 0, pcapng.stderr);
  const r = await run('tshark', ['-r', join(dir, 'dns.pcapng'), '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'dns.qry.name', '-Y', 'dns.flags.response == 0']);
  t.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => l.split('|'));
  t.ok(rows.length > 10, `${rows.length} queries`);
  const named = rows.filter(([iface, q]) => logging.some((p) => iface?.startsWith(`${p.node}/${NS}/${p.name}/`) && q?.startsWith(`${p.name}-`)));
  t.equal(named.length, rows.length, 'every query on the interface of the pod that sent it (<node>/<namespace>/<pod>/<iface>)');
});

t.test('stream: the live pcapng into tshark', async (t) => {
  const script = `set -o pipefail; timeout 40 "$NODE" "$PLUGIN" stream dns -w - | tshark -i - -l -a duration:15 -T fields -E separator='|' -e frame.interface_name -e dns.qry.name -Y 'dns.flags.response == 0'`;
  const r = await run('bash', ['-c', script], { env: { ...process.env, ...env, KUBECONFIG: kubeconfig, NODE: process.execPath, PLUGIN, KUBE_PCAP_GATEWAY: '' }, timeoutMs: 90_000 });
  const rows = r.stdout.trim().split('\n').filter(Boolean).map((l) => l.split('|'));
  t.ok(rows.length > 10, `${rows.length} live queries in 15 s (${r.stderr.trim().split('\n').slice(-1)[0]})`);
  t.ok(rows.every(([iface, q]) => logging.some((p) => iface?.startsWith(`${p.node}/${NS}/${p.name}/`) && q?.startsWith(`${p.name}-`))), 'each named by its node, namespace and pod');
  t.same(new Set(rows.map(([iface]) => iface?.split('/')[0])), new Set(logging.map((p) => p.node)), 'from every node with a logging pod');
});

t.test('stop keeps the files, delete removes the capture', async (t) => {
  const stop = await kp(['stop', 'dns']);
  t.equal(stop.code, 0, stop.stderr);
  await waitFor(async () => {
    const s = await c.kubectl(['get', 'packetcapture', 'dns', '-n', NS, '-o', 'jsonpath={range .status.files[*]}{.state} {end}']);
    return s.stdout.trim() !== '' && s.stdout.trim().split(' ').every((x) => x === 'Finished');
  }, { what: 'every node Finished', timeoutMs: 60_000, intervalMs: 500 });
  const after = await kp(['download', 'dns', '-w', 'after-stop.zip']);
  t.equal(after.code, 0, `files still downloadable after stop: ${after.stderr}`);
  const del = await kp(['delete', 'dns']);
  t.equal(del.code, 0, del.stderr);
  await waitFor(async () => (await c.kubectl(['get', 'packetcapture', 'dns', '-n', NS])).code !== 0, { what: 'the capture to go', timeoutMs: 30_000 });
});

t.test('Wireshark\'s extcap, driven as Wireshark drives it, against the real cluster', async (t) => {
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(join(bin, 'kubectl-pcap'), `#!/bin/sh\nexec "${process.execPath}" "${PLUGIN}" "$@"\n`);
  await chmod(join(bin, 'kubectl-pcap'), 0o755);
  const extcapDir = join(dir, 'extcap');
  await mkdir(extcapDir, { recursive: true });
  await copyFile(join(REPO_ROOT, 'extcap', 'kube-pcap'), join(extcapDir, 'kube-pcap'));
  await chmod(join(extcapDir, 'kube-pcap'), 0o755);
  const folders = await run('tshark', ['-G', 'folders']);
  const globalExtcap = /^Extcap path:\s+(\S+)/m.exec(folders.stdout)?.[1];
  t.ok(globalExtcap, 'tshark\'s extcap folder');
  const tshark = async (...args: string[]) => await run('unshare', ['--mount', '--', 'sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec tshark "$@"', 'sh', extcapDir, globalExtcap!, ...args], {
    env: { ...process.env, KUBECONFIG: kubeconfig, PATH: `${bin}:${cp.binDir}:/usr/local/bin:/usr/bin:/bin`, HOME: dir }, timeoutMs: 120_000,
  });
  const list = await tshark('-D');
  t.match(list.stdout, /\d+\. kubepcap_real \(Kubernetes pods: real \(kube-pcap\)\)/, 'one interface for the context');
  const pref = (option: string, value: string) => ['-o', `extcap.kubepcap_real.${option}:${value}`];
  const r = await tshark('-i', 'kubepcap_real', ...pref('namespace', NS), ...pref('capturename', 'wireshark'), ...pref('create', 'true'),
    ...pref('selector', 'app=logging'), ...pref('filter', 'udp:53'), ...pref('duration', '10m'),
    '-a', 'duration:25', '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'dns.qry.name', '-Y', 'dns.flags.response == 0');
  t.equal(r.code, 0, r.stderr.slice(-500));
  const rows = r.stdout.split('\n').filter(Boolean).map((l) => l.split('|'));
  t.ok(rows.length > 0, `${rows.length} live packets through the port-forward the extcap opened`);
  t.ok(rows.every(([iface, q]) => logging.some((p) => iface?.startsWith(`${p.node}/${NS}/${p.name}/`) && q?.startsWith(`${p.name}-`))), `named <node>/<namespace>/<pod>/<iface>: ${rows[0]?.[0]}`);
  await c.kubectl(['delete', 'packetcapture', 'wireshark', '-n', NS]);
});
