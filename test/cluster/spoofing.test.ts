// Pod identity on a real CNI (docs/agent.md, "Finding a pod's interface"): a pod with
// NET_ADMIN and NET_RAW on the node's real bridge takes a victim pod's IP (the address on its
// own eth0, gratuitous ARP to poison the bridge's forwarding table and the node's
// neighbours, queries sent from the victim's address). A capture of the victim must still
// capture the victim's own veth, as the runtime's CNI result cache names it, and nothing
// the impostor sends.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { readPcap } from '../harness/capture-fixture.js';
import { waitFor } from '../harness/wait.js';
import { dnsClientDeployment } from './cluster-story.js';
import { realCluster, type ClusterHandle } from './handle.js';
import { ensureKubePcap } from './install.js';

const NS = 'spoofing';
const c = await realCluster(t);
await ensureKubePcap(c);
await c.kubectl(['create', 'namespace', NS]);
t.teardown(() => c.kubectl(['delete', 'namespace', NS, '--wait=false']));

await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('victim', NS, c.info.images.workload, 1) });
const [victim] = await c.waitForPods(NS, 'app=victim', 1);

/** The host-side interface the runtime's CNI plugin made for a pod (its result cache). */
async function hostVeth(c: ClusterHandle, node: string, podName: string): Promise<string> {
  const dir = c.nodePath(node, '/var/lib/cni/results');
  for (const f of await readdir(dir)) {
    const r = JSON.parse(await readFile(join(dir, f), 'utf8')) as { cniArgs?: [string, string][]; result?: { interfaces?: { name: string; sandbox?: string }[] } };
    if (!r.cniArgs?.some(([k, v]) => k === 'K8S_POD_NAME' && v === podName)) continue;
    const veth = r.result?.interfaces?.find((i) => !i.sandbox && i.name !== 'cni0');
    if (veth) return veth.name;
  }
  throw new Error(`no CNI result for ${podName} on ${node}`);
}

t.test('an impostor with the victim\'s IP on the same bridge is not captured as the victim', async (t) => {
  const gateway = (await c.onNode(victim!.node, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0'])).stdout.match(/inet ([\d.]+)/)?.[1];
  t.ok(gateway, `the bridge's address on ${victim!.node}: ${gateway}`);
  await c.kubectlOk(['apply', '-f', '-'], {
    input: `apiVersion: v1
kind: Pod
metadata: {name: impostor, namespace: ${NS}, labels: {app: impostor}}
spec:
  nodeName: ${victim!.node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: impostor
      image: ${c.info.images.workload}
      imagePullPolicy: Never
      securityContext: {capabilities: {add: [NET_ADMIN, NET_RAW]}}
      command: [bash, -c, 'ip addr add ${victim!.ip}/32 dev eth0 && i=0; while :; do i=$((i+1)); arping -q -U -c 1 -I eth0 -s ${victim!.ip} ${gateway} ; dig +short +tries=1 +time=1 -b ${victim!.ip} "spoofed-$(printf %06d $i).storefront.example" >/dev/null; sleep 0.1; done']
`,
  });
  await c.waitForPods(NS, 'app=impostor', 1);
  // The impostor is at work before the capture looks for the victim's interface: the node's
  // neighbour table names the impostor's MAC for the victim's IP (what a lookup by
  // neighbours or forwarding table would have believed).
  const impostorMac = (await c.kubectlOk(['exec', '-n', NS, 'impostor', '--', 'cat', '/sys/class/net/eth0/address'])).trim();
  await waitFor(async () => (await c.onNode(victim!.node, 'ip', ['neigh', 'show', victim!.ip])).stdout.includes(impostorMac), { what: `the node's neighbour entry of ${victim!.ip} to name the impostor's ${impostorMac}`, timeoutMs: 30_000, intervalMs: 200 });
  t.pass(`the node's neighbour table was poisoned: ${victim!.ip} at ${impostorMac}`);
  await c.kubectlOk(['apply', '-f', '-'], {
    input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: victim, namespace: ${NS}}\nspec:\n  selector: app == "victim"\n  filters: [{protocol: UDP, ports: [53]}]\n`,
  });
  const veth = await hostVeth(c, victim!.node, victim!.name);
  const impostorVeth = await hostVeth(c, victim!.node, 'impostor');
  t.not(veth, impostorVeth);
  const dir = c.nodePath(victim!.node, `/var/lib/kube-pcap/${NS}/victim`);
  const packets = await waitFor(async () => {
    const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.pcap'));
    if (files.length === 0) return undefined;
    const all = (await Promise.all(files.map((f) => readPcap(join(dir, f))))).flat();
    return all.filter((p) => p.query.startsWith(`${victim!.name}-`)).length > 20 ? { files, all } : undefined;
  }, { what: 'the victim\'s queries in its capture', timeoutMs: 60_000, intervalMs: 500 });
  t.same(packets.files, [`${victim!.name}_${veth}.pcap`], `captured on the victim's own veth ${veth} (the CNI result cache's), not the impostor's ${impostorVeth}`);
  const spoofedQueries = packets.all.filter((p) => p.dstPort === 53 && p.query.startsWith('spoofed-'));
  t.same(spoofedQueries.length, 0, 'none of the impostor\'s queries from the victim\'s address');
  // The attack was real: queries from the victim's address leave the impostor's veth.
  const seen = await c.onNode(victim!.node, 'timeout', ['10', 'tcpdump', '-i', impostorVeth, '-n', '-c', '3', '-l', `src ${victim!.ip} and udp dst port 53`], 20_000);
  t.match(seen.stdout, new RegExp(`${victim!.ip.replace(/\./g, '\\.')}\\.\\d+ > [\\d.]+\\.53: .*spoofed-`), `the impostor sends as ${victim!.ip} on ${impostorVeth}`);
});
