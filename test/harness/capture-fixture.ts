// The capture tests' world: a two-node topology of network namespaces, an agent in each
// node's namespace (like the hostNetwork DaemonSet), a DNS server pod, client pods, and
// helpers to make traffic and to read what was captured with tshark.
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '../../src/kube/config.js';
import type { KubeClient } from '../../src/kube/client.js';
import type { CaptureState, NodeCaptureStatus } from '../../src/kube/packetcapture.js';
import { uniqueName, type Teardown, type TestCluster } from './cluster.js';
import { run } from './http.js';
import { installKubePcap, makePki, publishAgents, scratchDir, startAgent, type AgentHandle, type Pki } from './kube-pcap.js';
import type { ContainerPrivileges } from './shipped-privileges.js';
import { reportedEntry } from './node-reports.js';
import { createPodObject, Topology, type TopoNode, type TopoPod } from './topology.js';
import { waitFor } from './wait.js';

export interface CaptureWorld {
  c: TestCluster;
  kube: KubeClient;
  ns: string;
  pki: Pki;
  logDir: string;
  topo: Topology;
  nodes: TopoNode[];
  agents: Map<string, AgentHandle>;
  agentService: string;
  dns: TopoPod;
  addPod(node: TopoNode, name: string, labels: Record<string, string>, opts?: { namespace?: string; ip?: string }): Promise<TopoPod>;
  /** An agent in the node's namespace, with the shipped DaemonSet's privileges unless others are given. */
  startAgent(node: TopoNode, extraArgs?: string[], captureDir?: string, privileges?: ContainerPrivileges): Promise<AgentHandle>;
  applyCapture(name: string, spec: string): Promise<void>;
  waitForState(capture: string, node: string, state: CaptureState, timeoutMs?: number): Promise<NodeCaptureStatus>;
  captureDir(node: string, capture: string): string;
  /** The cluster's name of node-1, node-2, ... in this world. */
  nodeName(short: string): string;
}

export interface CaptureWorldOptions {
  nodes?: number;
  agentArgs?: string[];
  /** Start agents right away (default) or leave it to the test. Nodes are called node-1, node-2, ... in the helpers. */
  agents?: boolean;
}

export async function captureWorld(t: Teardown, c: TestCluster, opts: CaptureWorldOptions = {}): Promise<CaptureWorld> {
  await installKubePcap(c);
  const pki = await makePki(t);
  const logDir = await scratchDir(t, 'logs');
  const ns = await c.createNamespace('storefront');
  const kube = await connect(c.info.kubeconfig);
  t.teardown(() => kube.close());
  const topo = new Topology(t, logDir);
  const nodes: TopoNode[] = [];
  // Node names are unique per world: test files share one API server, and agents (which
  // watch every namespace, as in a real cluster) must never take another world's node for theirs.
  const suffix = randomBytes(3).toString('hex');
  const fullName = new Map<string, string>();
  for (let i = 1; i <= (opts.nodes ?? 2); i++) {
    fullName.set(`node-${i}`, `node-${i}-${suffix}`);
    nodes.push(await topo.addNode(`node-${i}-${suffix}`));
  }
  const shortName = (n: TopoNode): string => n.name.replace(`-${suffix}`, '');
  const agents = new Map<string, AgentHandle>();
  const captureDirs = new Map<string, string>();
  for (const n of nodes) captureDirs.set(shortName(n), await scratchDir(t, `captures-${shortName(n)}`));
  const agentService = uniqueName('agents');
  const apiServer = `https://${process.env.KUBE_PCAP_BRIDGE_IP}:${c.info.port}`;

  const world: CaptureWorld = {
    c, kube, ns, pki, logDir, topo, nodes, agents, agentService,
    dns: undefined as unknown as TopoPod,
    async addPod(node, name, labels, o = {}) {
      const namespace = o.namespace ?? ns;
      const pod = await topo.addPod(node, namespace, name, o.ip);
      await createPodObject(c, { namespace, name, node: node.name, ip: pod.ip, labels });
      return pod;
    },
    async startAgent(node, extraArgs = [], captureDir, privileges) {
      if (captureDir) captureDirs.set(shortName(node), captureDir);
      const agent = await startAgent(t, c, {
        node: node.name, address: node.ip, captureDir: captureDirs.get(shortName(node))!, pki, logDir,
        netnsPid: node.ns.pid, apiServer, privileges,
        extraArgs: ['--status-interval-ms=200', `--cni-results-dir=${topo.cniResultsDir(node)}`, ...(opts.agentArgs ?? []), ...extraArgs],
      });
      agents.set(shortName(node), agent);
      await publishAgents(c, agentService, [...agents.values()]);
      return agent;
    },
    async applyCapture(name, spec) {
      await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n`);
    },
    nodeName: (short) => fullName.get(short) ?? short,
    async waitForState(capture, node, state, timeoutMs = 20_000) {
      const full = fullName.get(node) ?? node;
      try {
        return await waitFor(async () => {
          // The agent's own word: its node report.
          const entry = await reportedEntry(kube, ns, capture, full);
          if (entry?.state === state) return entry;
          // Reported on timeout: what the report said instead.
          throw new Error(`report of ${node}: ${JSON.stringify(entry ?? null)}`);
        }, { what: `${capture} on ${node} to be ${state}`, timeoutMs, intervalMs: 100 });
      } catch (err) {
        // What the agent said about it, for whoever reads the failure.
        const log = await readFile(agents.get(node)?.logFile ?? '/dev/null', 'utf8').catch(() => '');
        const lines = log.split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-8).map((l) => l.slice(0, 400));
        throw new Error(`${(err as Error).message}\nagent warnings and errors:\n${lines.join('\n') || '(none)'}`);
      }
    },
    captureDir: (node, capture) => join(captureDirs.get(node)!, ns, capture),
  };
  // The DNS server of the story: dnsmasq in a pod on the last node.
  const last = nodes[nodes.length - 1]!;
  world.dns = await world.addPod(last, 'coredns', { 'k8s-app': 'kube-dns' });
  world.dns.ns.spawn(t, 'dnsmasq', 'dnsmasq', [
    '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${world.dns.ip}`, '--port=53', '--address=/storefront.example/203.0.113.10', '--user=root', '--pid-file=',
  ], logDir);
  await waitFor(async () => (await dig(world.dns, world.dns.ip, 'ready.storefront.example')).includes('203.0.113.10'), { what: 'dnsmasq to answer', timeoutMs: 10_000 });
  if (opts.agents !== false) for (const n of nodes) await world.startAgent(n);
  return world;
}

/** One DNS query from a pod (UDP unless tcp); returns dig's short answer. */
export async function dig(from: TopoPod, server: string, name: string, o: { tcp?: boolean; port?: number } = {}): Promise<string> {
  return await from.ns.exec('dig', [`@${server}`, name, '+short', '+tries=1', '+time=1', ...(o.tcp ? ['+tcp'] : []), ...(o.port ? ['-p', String(o.port)] : [])]).catch((e: Error) => e.message);
}

export interface Packet {
  src: string;
  dst: string;
  proto: string;
  srcPort: number;
  dstPort: number;
  query: string;
  time: number;
}

/** Every packet of a pcap file, as tshark reads it (throws if tshark finds the file damaged). */
/**
 * The packets of a pcap file, read by tshark. A file tcpdump is still writing (not a rotated
 * name) may end in part of a record for a moment, as any `tcpdump -w` file does (docs/agent.md,
 * "Capture workers"): its whole records count, the torn one does not. Anything else damaged,
 * or a torn rotated file, fails.
 */
export async function readPcap(file: string): Promise<Packet[]> {
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', '-e', 'ip.src', '-e', 'ip.dst', '-e', '_ws.col.Protocol', '-e', 'udp.srcport', '-e', 'udp.dstport', '-e', 'tcp.srcport', '-e', 'tcp.dstport', '-e', 'dns.qry.name', '-e', 'frame.time_epoch']);
  const beingWritten = !/-\d{16}\.pcap$/.test(file);
  const tornTail = beingWritten && /cut short in the middle of a packet/i.test(r.stderr) && !/damaged|appears to be/i.test(r.stderr);
  if (!tornTail && (r.code !== 0 || /cut short|damaged|appears to be/i.test(r.stderr))) throw new Error(`tshark cannot read ${file}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => {
    const [src, dst, proto, us, ud, ts, td, query, time] = l.split('|');
    return { src: src ?? '', dst: dst ?? '', proto: proto ?? '', srcPort: Number(us || ts || 0), dstPort: Number(ud || td || 0), query: query ?? '', time: Number(time) };
  });
}

/** The pcap files of a capture on a node, sorted. */
export async function captureFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.pcap')).sort();
}

/** All packets of all files of a capture directory. */
export async function readCaptureDir(dir: string): Promise<Map<string, Packet[]>> {
  const out = new Map<string, Packet[]>();
  for (const f of await captureFiles(dir)) out.set(f, await readPcap(join(dir, f)));
  return out;
}

export function allPackets(files: Map<string, Packet[]>): Packet[] {
  return [...files.values()].flat();
}
