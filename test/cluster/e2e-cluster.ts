// npm run e2e:cluster — the user's story on a real Kubernetes cluster brought up on this
// machine (two nodes: containerd, kubelet, kube-proxy; our images from the Dockerfile; the
// chart installed with helm), narrated step by step like `npm run demo`, then torn down.
// The zip and the merged pcapng are left in demo-output/cluster/.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Packet } from '../harness/capture-fixture.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { waitFor } from '../harness/wait.js';
import { ClusterStory, clientOf, NS } from './cluster-story.js';
import { ClusterHandle } from './handle.js';
import { RealCluster, type Narrator } from './real-cluster.js';
import { TeardownList } from './teardown.js';

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string): string => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
let stepNo = 0;
const say: Narrator = {
  step: (title) => process.stdout.write(`\n${bold(`[${++stepNo}] ${title}`)}\n`),
  say: (text) => process.stdout.write(`${text.split('\n').map((l) => `  ${l}`).join('\n')}\n`),
};

function perPod(packets: Packet[], names: Map<string, string>): string {
  const counts = new Map<string, number>();
  for (const p of packets) if (p.dstPort === 53) counts.set(clientOf(p), (counts.get(clientOf(p)) ?? 0) + 1);
  return [...counts].sort().map(([ip, n]) => `${(names.get(ip) ?? ip).padEnd(34)} ${ip.padEnd(15)} ${n} queries`).join('\n');
}

async function main(): Promise<void> {
  const down = new TeardownList();
  const stop = async (code: number): Promise<never> => {
    const t0 = Date.now();
    for (const err of await down.run()) process.stderr.write(`teardown: ${err.message}\n`);
    process.stdout.write(dim(`\ncluster torn down in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`));
    process.exit(code);
  };
  process.once('SIGINT', () => {
    process.stdout.write('\nInterrupted: tearing the cluster down...\n');
    void stop(130);
  });
  try {
    process.stdout.write(bold('kube-pcap on a real cluster: the storefront\'s logging pods flood the cluster DNS\n'));
    const work = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-e2e-cluster');
    await mkdir(work, { recursive: true });
    const started = Date.now();
    const cluster = await RealCluster.up(down, { workDir: work, narrator: say });
    say.say(dim(`cluster up in ${((Date.now() - started) / 1000).toFixed(1)} s`));
    const c = new ClusterHandle(cluster.info, work);
    const nodes = await c.kubectlOk(['get', 'nodes', '-o', 'wide']);
    say.say(dim('$ kubectl get nodes -o wide'));
    say.say(nodes.trimEnd());

    const story = await ClusterStory.setup(down, c, work, say);

    say.step('The DevOps engineer (devops-sa, no admin rights) applies the PacketCapture with their own token');
    say.say(dim('$ kubectl apply -f deploy/examples/pc-storefront-logging-dns.yaml'));
    say.say(await story.applyCapture());
    await waitFor(async () => [...(await story.nodeStates()).values()].filter((s) => s === 'Capturing').length === c.nodeNames.length, { what: 'every node to capture', timeoutMs: 60_000, intervalMs: 500 });
    say.say(dim('$ kubectl get packetcaptures -n storefront -o wide'));
    say.say((await c.kubectlOk(['get', 'packetcaptures', '-n', NS, '-o', 'wide'])).trimEnd());

    say.step('They download through `kubectl port-forward -n kube-pcap service/kube-pcap-gateway 9443:9443`, as the README says, and are refused');
    const refused = await story.download(story.devopsToken, 'refused');
    say.say(`HTTP ${refused.status?.code} ${refused.status?.reason}: ${refused.status?.message}`);

    say.step('The namespace owner grants packetcaptures/files (rbac-examples/files-role.yaml); the same curl gets every node\'s files');
    say.say(await story.grantFiles());
    const allowed = await waitFor(async () => {
      const d = await story.download(story.devopsToken, 'allowed');
      return d.status === undefined && d.curlExit === 0 ? d : undefined;
    }, { what: 'the download to be allowed', timeoutMs: 30_000, intervalMs: 1000 });
    const files = await story.unpack(allowed.body, 'allowed');
    const pods = await c.pods(NS, 'app=logging');
    const names = new Map(pods.map((p) => [p.ip, `${p.name} (${p.node})`]));
    say.say(`files.zip: ${[...files.keys()].join(', ')}`);
    say.say(perPod([...files.values()].flat(), names));

    say.step('Autoscaling and a crash: a third logging pod, and one deleted (the ReplicaSet makes another with a new IP)');
    const added = await story.scaleUp(3);
    const crashed = pods[0]!;
    const replacement = await story.crash(crashed.name);
    say.say(`new: ${added.name} (${added.ip}) on ${added.node}; ${crashed.name} (${crashed.ip}) replaced by ${replacement.name} (${replacement.ip}) on ${replacement.node}`);
    const later = await waitFor(async () => {
      const d = await story.download(story.devopsToken, 'later');
      if (d.status) return undefined;
      const f = await story.unpack(d.body, 'later');
      const clients = new Set([...f.values()].flat().map(clientOf));
      return clients.has(added.ip) && clients.has(replacement.ip) ? f : undefined;
    }, { what: 'the new pods in the download', timeoutMs: 60_000, intervalMs: 1000 });
    for (const p of [added, replacement]) names.set(p.ip, `${p.name} (${p.node})`);
    say.say(perPod([...later.values()].flat(), names));

    say.step('One time-ordered pcapng in which each packet names its node, namespace and pod');
    const merged = await story.download(story.devopsToken, 'merged', 'files.pcapng');
    const out = join(REPO_ROOT, 'demo-output', 'cluster');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'files.pcapng'), merged.body);
    await copyFile(join(work, 'later.zip'), join(out, 'files.zip'));
    say.say(`demo-output/cluster/files.zip and files.pcapng (${(merged.body.length / 1024).toFixed(0)} KiB): tshark -r demo-output/cluster/files.pcapng -T fields -e frame.interface_name -e dns.qry.name`);

    say.step('kubectl delete packetcapture: every node stops, its node reports are garbage-collected');
    say.say(await story.deleteCapture());
    await waitFor(async () => (await c.kubectlOk(['get', 'packetcapturenodereports', '-n', NS, '-o', 'name'])).trim() === '', { what: 'the node reports to go', timeoutMs: 60_000, intervalMs: 500 });
    say.say('no node report left; no tcpdump of the capture runs on any node');
    await stop(0);
  } catch (err) {
    process.stderr.write(`\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await stop(1);
  }
}

void main();
