// The user's story of the README (Quick start), end to end, with every part real: a kube-apiserver with
// RBAC, deploy/ and rbac-examples/ applied with kubectl, two "nodes" (network namespaces)
// each with its agent, two gateway replicas behind one local address (what kubectl
// port-forward to the Service gives), CoreDNS (dnsmasq) and logging pods sending real DNS
// queries. The test (storefront-dns.test.ts) asserts each step; `npm run demo` narrates it.
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '../../src/kube/config.js';
import type { KubeClient } from '../../src/kube/client.js';
import { getPacketCapture, type NodeCaptureStatus } from '../../src/kube/packetcapture.js';
import { allPackets, dig, readPcap, type Packet } from '../harness/capture-fixture.js';
import { TestCluster, type Teardown } from '../harness/cluster.js';
import { ControlPlane, REPO_ROOT } from '../harness/control-plane.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { run } from '../harness/http.js';
import { makePki, publishAgents, scratchDir, startAgent, startGateway, type AgentHandle, type Pki } from '../harness/kube-pcap.js';
import { serviceProxy, type ServiceProxy } from '../harness/service-proxy.js';
import { createPodObject, deletePodObject, Topology, type TopoNode, type TopoPod } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';

export const NS = 'storefront';
export const NAME = 'pc-storefront-logging-dns';
export const GATEWAY_PORT = 9443;

export interface Narrator {
  step(title: string): void;
  say(text: string): void;
}

export const silent: Narrator = { step: () => undefined, say: () => undefined };

/** The README's download command, taken from the README itself so the two cannot drift. */
export async function readmeCurlCommand(): Promise<string> {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /^(curl "https:\/\/localhost:9443\/packet-capture\/download\/\$NS\/\$NAME\/files\.zip" -L -O -k \\\n\s+-H "Authorization: Bearer \$TOKEN")$/m.exec(readme);
  if (!m) throw new Error('README.md no longer shows the download command this story runs');
  return m[1]!;
}

export interface Download {
  curlExit: number;
  body: Buffer;
  /** The Status object when the answer was an error. */
  status: { code: number; reason: string; message: string } | undefined;
}

export interface ZipContents {
  dir: string;
  /** "<node>/<file>" -> packets, as tshark reads them */
  files: Map<string, Packet[]>;
}

export class StorefrontStory {
  readonly pods = new Map<string, TopoPod>();
  private constructor(
    private readonly t: Teardown,
    readonly c: TestCluster,
    readonly kube: KubeClient,
    readonly pki: Pki,
    readonly logDir: string,
    readonly work: string,
    readonly topo: Topology,
    readonly nodes: TopoNode[],
    readonly agents: AgentHandle[],
    readonly gateway: ServiceProxy,
    readonly devopsToken: string,
    readonly coredns: TopoPod,
  ) {}

  static async setup(t: Teardown, narrator: Narrator = silent, work?: string): Promise<StorefrontStory> {
    narrator.step('A Kubernetes control plane (kube-apiserver + etcd, RBAC on)');
    const cp = await ControlPlane.start({ bindAddress: '0.0.0.0', extraAddresses: [process.env.KUBE_PCAP_BRIDGE_IP!] });
    t.teardown(() => cp.stop());
    const c = new TestCluster(cp.info, cp);
    narrator.say(`kube-apiserver ready in ${(cp.startupMs / 1000).toFixed(1)} s`);

    narrator.step('kube-pcap installed with `kubectl apply -k deploy/`');
    const apply = await c.kubectl(['apply', '-k', join(REPO_ROOT, 'deploy')]);
    if (apply.code !== 0) throw new Error(`kubectl apply -k deploy/: ${apply.stderr}`);
    narrator.say(apply.stdout.trim().split('\n').map((l) => `  ${l}`).join('\n'));
    await waitFor(async () => (await c.kubectl(['get', 'packetcaptures', '-A'])).code === 0, { what: 'the PacketCapture CRD to be served', timeoutMs: 30_000 });

    narrator.step('Namespace storefront and its DevOps engineer (rbac-examples/: ServiceAccount devops-sa, capture Role only)');
    await c.createNamespace('storefront', NS);
    for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml']) {
      const r = await c.kubectl(['apply', '-f', join(REPO_ROOT, 'rbac-examples', f)]);
      if (r.code !== 0) throw new Error(`kubectl apply ${f}: ${r.stderr}`);
      narrator.say(r.stdout.trim().split('\n').map((l) => `  ${l}`).join('\n'));
    }
    const devopsToken = await c.tokenFor(NS, 'devops-sa');

    narrator.step('Two nodes, each running the kube-pcap agent; two gateway replicas behind localhost:9443');
    const logDir = await scratchDir(t, 'story-logs');
    const workDir = work ?? (await scratchDir(t, 'story'));
    const pki = await makePki(t);
    const topo = new Topology(t, logDir);
    const nodes = [await topo.addNode('node-1'), await topo.addNode('node-2')];
    const apiServer = `https://${process.env.KUBE_PCAP_BRIDGE_IP}:${c.info.port}`;
    const agents: AgentHandle[] = [];
    for (const n of nodes) {
      agents.push(await startAgent(t, c, { node: n.name, address: n.ip, captureDir: await scratchDir(t, `${n.name}-var-lib-kube-pcap`), pki, logDir, netnsPid: n.ns.pid, apiServer, extraArgs: ['--log-level=info'] }));
      narrator.say(`  agent of ${n.name} listening on ${n.ip} (the node's address, hostNetwork)`);
    }
    // What the EndpointSlice controller publishes for the DaemonSet's headless Service.
    await publishAgents(c, 'kube-pcap-agent', agents);
    const replicas = [];
    for (let i = 0; i < 2; i++) replicas.push(await startGateway(t, c, { pki, logDir, agentService: 'kube-pcap-agent', name: `gateway-${i + 1}`, extraArgs: ['--log-level=info'] }));
    const gateway = await serviceProxy(t, replicas.map((r) => ({ host: '127.0.0.1', port: r.port })), { host: '::', port: GATEWAY_PORT });
    narrator.say(`  gateway replicas on ports ${replicas.map((r) => r.port).join(' and ')}, reached at https://localhost:${GATEWAY_PORT}`);

    const kube = await connect(c.info.kubeconfig);
    t.teardown(() => kube.close());
    narrator.step('The storefront pods: coredns on node-2, logging pods on node-1 and node-2, and an unrelated web pod');
    const addPod = async (node: TopoNode, name: string, labels: Record<string, string>): Promise<TopoPod> => {
      const pod = await topo.addPod(node, NS, name);
      await createPodObject(c, { namespace: NS, name, node: node.name, ip: pod.ip, labels });
      narrator.say(`  ${name.padEnd(10)} ${pod.ip.padEnd(12)} on ${node.name}  ${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',')}`);
      return pod;
    };
    const coredns = await addPod(nodes[1]!, 'coredns', { 'k8s-app': 'kube-dns' });
    coredns.ns.spawn(t, 'coredns-dnsmasq', 'dnsmasq', [
      '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
      `--listen-address=${coredns.ip}`, '--port=53', '--address=/storefront.example/203.0.113.10', '--address=/cluster.local/203.0.113.11', '--user=root', '--pid-file=',
    ], logDir);
    await waitFor(async () => (await dig(coredns, coredns.ip, 'ready.storefront.example')).includes('203.0.113.10'), { what: 'coredns to answer', timeoutMs: 10_000 });
    const story = new StorefrontStory(t, c, kube, pki, logDir, workDir, topo, nodes, agents, gateway, devopsToken, coredns);
    story.pods.set('logging-1', await addPod(nodes[0]!, 'logging-1', { app: 'logging' }));
    story.pods.set('logging-2', await addPod(nodes[1]!, 'logging-2', { app: 'logging' }));
    story.pods.set('web-1', await addPod(nodes[0]!, 'web-1', { app: 'web' }));
    for (const p of ['logging-1', 'logging-2', 'web-1']) story.flood(p);
    narrator.say('  every pod sends DNS queries to coredns, 20 a second (the flood of the story)');
    return story;
  }

  /** A pod's steady stream of DNS queries ("<pod>-NNNNNN.storefront.example"). */
  flood(pod: string): void {
    startDnsSender(this.t, this.pods.get(pod)!, this.coredns.ip, pod, 0, 50, this.logDir);
  }

  /** Traffic the capture must not record: DNS over TCP, and UDP to another port. */
  async otherTraffic(): Promise<void> {
    for (const [name, pod] of this.pods) {
      await dig(pod, this.coredns.ip, `${name}-over-tcp.storefront.example`, { tcp: true });
      await dig(pod, this.coredns.ip, `${name}-port-5353.storefront.example`, { port: 5353 });
    }
  }

  /** Step 1: the engineer applies the PacketCapture of the README's story with their own token. */
  async applyCapture(): Promise<string> {
    const r = await this.c.kubectl(['apply', '-f', join(REPO_ROOT, 'deploy', 'examples', 'pc-storefront-logging-dns.yaml')], { token: this.devopsToken });
    if (r.code !== 0) throw new Error(`kubectl apply as devops-sa: ${r.stderr}`);
    return r.stdout.trim();
  }

  async nodeStatus(): Promise<NodeCaptureStatus[]> {
    return (await getPacketCapture(this.kube, NS, NAME))?.status?.files ?? [];
  }

  /** Steps 2 and 3: the README's curl, run as written (in its own directory, like a user would). */
  async download(token: string | undefined, label: string): Promise<Download> {
    const dir = join(this.work, label);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const command = await readmeCurlCommand();
    const env = { ...process.env, NS, NAME, TOKEN: token ?? '' };
    const r = await new Promise<{ code: number }>((resolve) => {
      execFile('bash', ['-c', `${command} -sS`], { cwd: dir, env, timeout: 120_000 }, (err) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0 }));
    });
    const body = await readFile(join(dir, 'files.zip')).catch(() => Buffer.alloc(0));
    let status: Download['status'];
    if (body.subarray(0, 2).toString() !== 'PK') {
      try {
        status = JSON.parse(body.toString()) as Download['status'];
      } catch {
        status = undefined;
      }
    }
    return { curlExit: r.code, body, status };
  }

  /** Step 3: the files Role and RoleBinding of rbac-examples/. */
  async grantFiles(): Promise<string> {
    const r = await this.c.kubectl(['apply', '-f', join(REPO_ROOT, 'rbac-examples', 'files-role.yaml')]);
    if (r.code !== 0) throw new Error(`kubectl apply files-role.yaml: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** Unzips a files.zip and reads every file with tshark. */
  async unpack(zip: Buffer, label: string): Promise<ZipContents> {
    const dir = join(this.work, `${label}-unzipped`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const zipPath = join(this.work, `${label}.zip`);
    await writeFile(zipPath, zip);
    const test = await run('unzip', ['-t', zipPath]);
    if (test.code !== 0) throw new Error(`unzip -t: ${test.stdout}${test.stderr}`);
    await run('unzip', ['-q', zipPath, '-d', dir]);
    const files = new Map<string, Packet[]>();
    for (const node of (await readdir(dir)).sort()) {
      for (const f of (await readdir(join(dir, node))).sort()) files.set(`${node}/${f}`, await readPcap(join(dir, node, f)));
    }
    return { dir, files };
  }

  /** Step 4, "autoscaling": a third logging pod appears on node-1. */
  async scaleUp(): Promise<TopoPod> {
    const pod = await this.topo.addPod(this.nodes[0]!, NS, 'logging-3');
    await createPodObject(this.c, { namespace: NS, name: 'logging-3', node: 'node-1', ip: pod.ip, labels: { app: 'logging' } });
    this.pods.set('logging-3', pod);
    this.flood('logging-3');
    return pod;
  }

  /** Step 4, "crash": logging-2 is deleted and recreated under the same name, with a new IP. */
  async crash(): Promise<{ before: TopoPod; after: TopoPod }> {
    const before = this.pods.get('logging-2')!;
    await deletePodObject(this.c, NS, 'logging-2');
    await this.topo.removePod(before);
    const after = await this.topo.addPod(this.nodes[1]!, NS, 'logging-2');
    await createPodObject(this.c, { namespace: NS, name: 'logging-2', node: 'node-2', ip: after.ip, labels: { app: 'logging' } });
    this.pods.set('logging-2', after);
    this.flood('logging-2');
    return { before, after };
  }

  /** Step 5: a ServiceAccount of another namespace, with the same Roles there. */
  async outsiderToken(): Promise<string> {
    const ns = await this.c.createNamespace('checkout', 'checkout');
    for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml']) await this.c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), { renameNamespace: { from: 'storefront', to: ns } });
    return await this.c.tokenFor(ns, 'devops-sa');
  }

  /** Step 6. */
  async deleteCapture(): Promise<string> {
    const r = await this.c.kubectl(['delete', 'packetcapture', NAME, '-n', NS], { token: this.devopsToken });
    if (r.code !== 0) throw new Error(`kubectl delete: ${r.stderr}`);
    return r.stdout.trim();
  }

  captureDir(agent: AgentHandle): string {
    return join(agent.captureDir, NS, NAME);
  }

  /** tcpdump processes still running for this story's pods. */
  async tcpdumps(): Promise<number> {
    const r = await run('pgrep', ['-f', '^tcpdump -i cali']);
    return r.stdout.trim() === '' ? 0 : r.stdout.trim().split('\n').length;
  }
}

export { allPackets };
