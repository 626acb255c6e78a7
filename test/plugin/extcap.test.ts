// Wireshark without a terminal, driven the way Wireshark drives it, through tshark itself:
// the launcher extcap/kube-pcap installed into the global extcap folder (bind-mounted, in a
// mount namespace of tshark's own), `tshark -D` listing one interface per kubeconfig context
// without touching the network or running a credential plugin, and `tshark -i <interface>
// -o extcap.<interface>.<option>:<value>` creating a capture and receiving the live packets
// of a real pod's DNS queries, named by node, namespace and pod.
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { cluster } from '../harness/cluster.js';
import { captureWorld } from '../harness/capture-fixture.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { run } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { PLUGIN, runPlugin } from '../harness/plugin.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1 });
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
const token = await c.tokenFor(w.ns, 'devops-sa');
const pod = await w.addPod(w.nodes[0]!, 'logging-a', { app: 'logging' });
startDnsSender(t, pod, w.dns.ip, 'wireshark', 0, 20, w.logDir);
const gateway = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService });
const dir = await scratchDir(t, 'extcap');

// The user's kubeconfig: the test cluster, and a production context whose API server is not
// reachable and whose credential plugin must never run while Wireshark lists interfaces.
const marker = join(dir, 'credential-plugin-ran');
const helper = join(dir, 'aws-like-helper');
await writeFile(helper, `#!/bin/sh\ntouch '${marker}'\nexit 1\n`);
await chmod(helper, 0o755);
const kubeconfig = join(dir, 'config');
await writeFile(kubeconfig, stringify({
  apiVersion: 'v1', kind: 'Config',
  clusters: [{ name: 'test', cluster: { server: c.info.server, 'certificate-authority': c.info.caFile } }, { name: 'prod', cluster: { server: 'https://192.0.2.1:6443' } }],
  users: [{ name: 'devops', user: { token } }, { name: 'sso', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: helper, interactiveMode: 'Never' } } }],
  contexts: [{ name: 'test', context: { cluster: 'test', user: 'devops', namespace: w.ns } }, { name: 'arn:aws:eks:eu-west-1:1:cluster/prod-10', context: { cluster: 'prod', user: 'sso' } }],
  'current-context': 'test',
}));

// kubectl-pcap on PATH as `npm install -g` leaves it, and the launcher in a folder that is
// bind-mounted over the global extcap folder for tshark alone.
const bin = join(dir, 'bin');
await mkdir(bin);
await writeFile(join(bin, 'kubectl-pcap'), `#!/bin/sh\nexec "${process.execPath}" "${PLUGIN}" "$@"\n`);
await chmod(join(bin, 'kubectl-pcap'), 0o755);
const extcapDir = join(dir, 'extcap');
await mkdir(extcapDir);
await copyFile(join(REPO_ROOT, 'extcap', 'kube-pcap'), join(extcapDir, 'kube-pcap'));
await chmod(join(extcapDir, 'kube-pcap'), 0o755);
const folders = await run('tshark', ['-G', 'folders']);
const globalExtcap = /^Extcap path:\s+(\S+)/m.exec(folders.stdout)?.[1];
const env = { ...process.env, KUBECONFIG: kubeconfig, PATH: `${bin}:/usr/local/bin:/usr/bin:/bin`, HOME: dir };
const tshark = async (...args: string[]) =>
  await run('unshare', ['--mount', '--', 'sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec tshark "$@"', 'sh', extcapDir, globalExtcap!, ...args], { env, timeoutMs: 120_000 });

t.test('the extcap calls answer in Wireshark\'s format', async (t) => {
  const kp = async (...args: string[]) => await runPlugin(args, { kubeconfig });
  const ifaces = await kp('--extcap-interfaces', '--extcap-version=4.0');
  t.equal(ifaces.code, 0, ifaces.stderr);
  t.match(ifaces.text, /^extcap \{version=\d+\.\d+\.\d+\}\{help=[^}]+\}/);
  t.match(ifaces.text, /^interface \{value=kubepcap_test\}\{display=Kubernetes pods: test \(kube-pcap\)\}$/m);
  t.match(ifaces.text, /^interface \{value=kubepcap_arn_aws_eks_eu_west_1_1_cluster_prod_1_\}/m, 'names of [a-z1-9_] only, as Wireshark\'s preference keys are');
  const dlts = await kp('--extcap-interface', 'kubepcap_test', '--extcap-dlts');
  t.match(dlts.text, /^dlt \{number=1\}\{name=EN10MB\}/);
  const config = await kp('--extcap-interface', 'kubepcap_test', '--extcap-config');
  t.match(config.text, new RegExp(`^arg \\{number=0\\}\\{call=--namespace\\}\\{display=Namespace\\}\\{type=string\\}\\{default=${w.ns}\\}`, 'm'), 'the context\'s namespace by default');
  for (const call of ['--capture-name', '--create', '--selector', '--filter', '--duration', '--gateway']) t.match(config.text, `{call=${call}}`);
  await t.rejects(readFile(marker), 'no credential plugin ran');
});

t.test('tshark -D lists one interface per context, offline, without running credential plugins', async (t) => {
  t.ok(globalExtcap, `tshark's extcap folder: ${folders.stdout}`);
  const r = await tshark('-D');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\d+\. kubepcap_test \(Kubernetes pods: test \(kube-pcap\)\)/);
  t.match(r.stdout, /\d+\. kubepcap_arn_aws_eks_eu_west_1_1_cluster_prod_1_ \(Kubernetes pods: arn:aws:eks:eu-west-1:1:cluster\/prod-10 \(kube-pcap\)\)/);
  await t.rejects(readFile(marker), 'listing ran no credential plugin (it would have prompted or hung)');
});

t.test('tshark -i kubepcap_test with options as preferences creates the capture and shows its live packets', async (t) => {
  const pref = (option: string, value: string) => ['-o', `extcap.kubepcap_test.${option}:${value}`];
  const r = await tshark(
    '-i', 'kubepcap_test',
    ...pref('namespace', w.ns), ...pref('capturename', 'wireshark-dns'), ...pref('create', 'true'),
    ...pref('selector', 'app=logging'), ...pref('filter', 'udp:53'), ...pref('duration', '10m'),
    ...pref('gateway', gateway.url), ...pref('gatewaycafile', w.pki.ca.certFile), ...pref('trustgatewayurl', 'true'),
    '-a', 'duration:25', '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'dns.qry.name', '-Y', 'dns',
  );
  t.equal(r.code, 0, r.stderr);
  const pc = await getPacketCapture(w.kube, w.ns, 'wireshark-dns');
  t.equal(pc?.spec?.selector, 'app == "logging"', 'the capture was created from the options (Kubernetes label syntax translated)');
  t.same(pc?.spec?.filters, [{ protocol: 'UDP', ports: [53] }]);
  const rows = r.stdout.split('\n').filter(Boolean).map((l) => l.split('|'));
  t.ok(rows.length > 0, `live packets arrived (${rows.length})`);
  t.ok(rows.every(([iface]) => iface === `${w.nodeName('node-1')}/${w.ns}/logging-a/${pod.hostIface}`), `each named <node>/<namespace>/<pod>/<iface>: ${rows[0]?.[0]}`);
  t.ok(rows.some(([, name]) => /^wireshark-\d+\./.test(name ?? '')), `the pod's own DNS queries: ${rows[0]?.[1]}`);
});

t.test('the launcher finds kubectl-pcap with the minimal PATH a desktop app gets', async (t) => {
  // As Wireshark started from the macOS Dock runs it: PATH=/usr/bin:/bin, kubectl-pcap in ~/.local/bin.
  const home = join(dir, 'home');
  await mkdir(join(home, '.local', 'bin'), { recursive: true });
  await copyFile(join(bin, 'kubectl-pcap'), join(home, '.local', 'bin', 'kubectl-pcap'));
  await chmod(join(home, '.local', 'bin', 'kubectl-pcap'), 0o755);
  const launcher = join(extcapDir, 'kube-pcap');
  const found = await run('env', ['-i', `HOME=${home}`, 'PATH=/usr/bin:/bin', `KUBECONFIG=${kubeconfig}`, launcher, '--extcap-interfaces']);
  t.equal(found.code, 0, found.stderr);
  t.match(found.stdout, /interface \{value=kubepcap_test\}/);
  const missing = await run('env', ['-i', `HOME=${join(dir, 'nobody')}`, 'PATH=/usr/bin:/bin', launcher, '--extcap-interfaces']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /kubectl-pcap was not found .* npm install -g, or set KUBE_PCAP_PLUGIN/);
});
