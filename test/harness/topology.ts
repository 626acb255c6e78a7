// "Nodes" and "pods" as network namespaces, wired the way a routed CNI (Calico) wires them:
//
//   sandbox netns: bridge kpt-br0 198.51.100.254/24 (API server, gateway, tests)
//     └─ veth ── node netns: eth0 198.51.100.N/24, ip_forward, routes to other nodes' pods
//                  └─ cali<hash> (proxy ARP) ── pod netns: eth0 192.0.2.X/32,
//                                               default via 169.254.1.1 (Calico's trick)
//
// Each namespace is held open by a process that dies with the test process, so the
// kernel removes namespaces and veths even if the test is killed. Agents run inside
// their node's namespace, like a hostNetwork DaemonSet pod.
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, readlink, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { allocateAddress, requireSandbox } from './addresses.js';
import type { Teardown, TestCluster } from './cluster.js';
import { REPO_ROOT } from './control-plane.js';
import { OwnedProcess } from './processes.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export class Netns {
  private readonly processes: OwnedProcess[] = [];
  private constructor(readonly name: string, readonly holder: OwnedProcess) {}

  static async create(t: Teardown, name: string, logDir: string): Promise<Netns> {
    const holder = new OwnedProcess('unshare', ['--net', '--', 'sleep', 'infinity'], { name: `netns ${name}`, logFile: join(logDir, `netns-${name}.log`) });
    t.teardown(() => holder.kill());
    const ns = new Netns(name, holder);
    // unshare execs sleep once the namespace exists: wait until it is no longer ours.
    const own = await readlink('/proc/self/ns/net');
    await waitFor(async () => {
      const theirs = await readlink(`/proc/${holder.pid}/ns/net`).catch(() => own);
      return theirs !== own;
    }, { what: `network namespace ${name}`, timeoutMs: 5000, intervalMs: 10 });
    await ns.exec('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  get pid(): number {
    return this.holder.pid;
  }

  /** Runs a command inside the namespace to completion (killed after timeoutMs, 30 s by default). */
  async exec(cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
    try {
      const { stdout } = await run('nsenter', [`--net=/proc/${this.pid}/ns/net`, '--', cmd, ...args], { timeout: timeoutMs });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`[${this.name}] ${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
    }
  }

  /** A long-running process inside the namespace. */
  spawn(t: Teardown, name: string, cmd: string, args: string[], logDir: string, opts: { pipeStdout?: boolean } = {}): OwnedProcess {
    const p = new OwnedProcess(cmd, args, { name, logFile: join(logDir, `${name.replace(/[^\w.-]/g, '_')}.log`), netnsPid: this.pid, ...opts });
    t.teardown(() => p.stop(3000));
    this.processes.push(p);
    return p;
  }

  /** Ends everything inside; the kernel then removes the namespace and its interfaces. */
  async destroy(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.kill()));
    await this.holder.kill();
  }

  async sysctl(key: string, value: string): Promise<void> {
    await this.exec('sysctl', ['-q', '-w', `${key}=${value}`]);
  }
}

export interface TopoNode {
  name: string;
  ns: Netns;
  ip: string;
  /** The sandbox's end of the node's veth (a port of the bridge): where traffic towards the node can be shaped. */
  uplink: string;
  /** e.g. 192.0.2.0/26 */
  podCidr: string;
  nextPodHost: number;
}

export interface TopoPod {
  name: string;
  namespace: string;
  node: TopoNode;
  ns: Netns;
  ip: string;
  /** The host-side interface, as Calico names it: cali + 11 hex of a hash. */
  hostIface: string;
}

/** Calico names a pod's host interface "cali" + the first 11 hex digits of sha1(namespace.pod). */
export function caliName(namespace: string, pod: string): string {
  return `cali${createHash('sha1').update(`${namespace}.${pod}`).digest('hex').slice(0, 11)}`;
}

/** The reference CNI plugins and cnitool (test/cni/build-plugins.sh; scripts/run.sh exports it). */
export function cniBinDir(): string {
  const fromEnv = process.env.KUBE_PCAP_CNI_BIN;
  if (fromEnv) return fromEnv;
  return execFileSync('bash', [join(REPO_ROOT, 'test', 'cni', 'build-plugins.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export class Topology {
  readonly nodes = new Map<string, TopoNode>();

  constructor(private readonly t: Teardown, readonly logDir: string) {
    requireSandbox();
  }

  async addNode(name: string): Promise<TopoNode> {
    const index = this.nodes.size;
    if (index >= 4) throw new Error('at most 4 nodes per topology (192.0.2.0/24 in /26 pod ranges)');
    // Teardowns run in reverse: the uplink goes first, then its MAC is forgotten, then the
    // namespace, and only then is the address handed back. Released any earlier, another
    // test's node could take it while this node still answered ARP for it, and the sandbox
    // would send that node's replies to a dead interface until the neighbour entry expired
    // (an agent's API server connections timing out: "status of node-1: null").
    const ip = await allocateAddress(this.t);
    const ns = await Netns.create(this.t, name, this.logDir);
    const forget = async (): Promise<void> => {
      await run('ip', ['neigh', 'flush', 'to', ip, 'dev', process.env.KUBE_PCAP_BRIDGE!]).catch(() => undefined);
    };
    await forget();
    this.t.teardown(forget);
    const uplink = `kn${randomBytes(5).toString('hex')}`;
    await run('ip', ['link', 'add', 'name', uplink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(ns.pid)]);
    // Deleting one end removes the pair at once; a dying namespace takes its time.
    this.t.teardown(() => run('ip', ['link', 'del', uplink]).catch(() => undefined));
    await run('ip', ['link', 'set', uplink, 'master', process.env.KUBE_PCAP_BRIDGE!, 'up']);
    await ns.exec('ip', ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await ns.exec('ip', ['link', 'set', 'eth0', 'up']);
    // A default route, as every node has: proxy ARP answers the pods' 169.254.1.1 only for
    // addresses the node can route elsewhere. (The sandbox side forwards nothing.)
    await ns.exec('ip', ['route', 'add', 'default', 'via', process.env.KUBE_PCAP_BRIDGE_IP!]);
    await ns.sysctl('net.ipv4.ip_forward', '1');
    const node: TopoNode = { name, ns, ip, uplink, podCidr: `192.0.2.${index * 64}/26`, nextPodHost: index * 64 + 10 };
    // Routes between nodes' pod ranges, both ways.
    for (const other of this.nodes.values()) {
      await ns.exec('ip', ['route', 'add', other.podCidr, 'via', other.ip]);
      await other.ns.exec('ip', ['route', 'add', node.podCidr, 'via', ip]);
    }
    this.nodes.set(name, node);
    return node;
  }

  /** A pod's network on a node; `ip` defaults to the next free address of the node's range. */
  async addPod(node: TopoNode, namespace: string, name: string, ip?: string): Promise<TopoPod> {
    const podIp = ip ?? `192.0.2.${node.nextPodHost++}`;
    const ns = await Netns.create(this.t, `${node.name}-${name}`, this.logDir);
    const hostIface = caliName(namespace, name);
    await node.ns.exec('ip', ['link', 'add', 'name', hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(ns.pid)]);
    await node.ns.sysctl(`net.ipv4.conf.${hostIface}.proxy_arp`, '1');
    await node.ns.sysctl(`net.ipv4.neigh.${hostIface}.proxy_delay`, '0');
    await node.ns.exec('ip', ['link', 'set', hostIface, 'up']);
    await node.ns.exec('ip', ['route', 'add', `${podIp}/32`, 'dev', hostIface, 'scope', 'link']);
    await ns.exec('ip', ['addr', 'add', `${podIp}/32`, 'dev', 'eth0']);
    await ns.exec('ip', ['link', 'set', 'eth0', 'up']);
    await ns.exec('ip', ['route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link']);
    await ns.exec('ip', ['route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
    return { name, namespace, node, ns, ip: podIp, hostIface };
  }

  /**
   * A pod wired by the real bridge CNI plugin (with host-local IPAM), run through cnitool
   * in the node's namespace as a container runtime runs it: the pod's veth becomes a port of
   * the node's bridge cni0 (192.0.2.193/26, created by the plugin on first use), the pod's
   * default route is the bridge's address, and libcni writes the attachment's result into
   * the node's CNI result cache (cniResultsDir), with the pod's name in CNI_ARGS.
   */
  /** A pod wired by the bridge plugin through cnitool; `uid` goes into its CNI_ARGS as a runtime puts it. */
  async addBridgedPod(node: TopoNode, namespace: string, name: string, o: { uid?: string } = {}): Promise<TopoPod> {
    const state = await this.cniState(node);
    const ns = await Netns.create(this.t, `${node.name}-${name}`, this.logDir);
    const cniBin = cniBinDir();
    // libcni keeps its cache in /var/lib/cni; cnitool runs in a mount namespace of its own
    // where the node's state directory is /var/lib, so nothing of it lands on the machine.
    const { stdout } = await run('unshare', [
      '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$0" /var/lib && exec "$@"', state.varLib,
      'nsenter', `--net=/proc/${node.ns.pid}/ns/net`, '--', join(cniBin, 'cnitool'), 'add', 'kpt-bridge', `/proc/${ns.pid}/ns/net`,
    ], {
      env: { ...process.env, CNI_PATH: cniBin, NETCONFPATH: state.netDir, CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${randomBytes(8).toString('hex')}${o.uid ? `;K8S_POD_UID=${o.uid}` : ''}` },
      timeout: 30_000,
    });
    const result = JSON.parse(stdout) as { interfaces?: { name: string; sandbox?: string }[]; ips?: { address: string }[] };
    const hostIface = result.interfaces?.find((i) => !i.sandbox && i.name !== 'cni0')?.name;
    const ip = result.ips?.[0]?.address.split('/')[0];
    if (!hostIface || !ip) throw new Error(`cnitool add returned no host interface or address: ${stdout}`);
    return { name, namespace, node, ns, ip, hostIface };
  }

  /** The node's CNI result cache, as the runtime keeps it (what the agent's --cni-results-dir reads). */
  cniResultsDir(node: TopoNode): string {
    return join(this.logDir, 'cni', node.name, 'var-lib', 'cni', 'results');
  }

  private async cniState(node: TopoNode): Promise<{ varLib: string; netDir: string }> {
    const root = join(this.logDir, 'cni', node.name);
    const varLib = join(root, 'var-lib');
    const netDir = join(root, 'net.d');
    if (!this.bridgedNodes.has(node.name)) {
      this.bridgedNodes.add(node.name);
      await mkdir(varLib, { recursive: true });
      await mkdir(netDir, { recursive: true });
      await writeFile(join(netDir, 'kpt-bridge.conflist'), JSON.stringify({
        cniVersion: '1.0.0',
        name: 'kpt-bridge',
        plugins: [{
          type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false,
          ipam: { type: 'host-local', ranges: [[{ subnet: '192.0.2.192/26', rangeStart: '192.0.2.200', rangeEnd: '192.0.2.250', gateway: '192.0.2.193' }]], routes: [{ dst: '0.0.0.0/0' }] },
        }],
      }));
      for (const other of this.nodes.values()) if (other !== node) await other.ns.exec('ip', ['route', 'add', '192.0.2.192/26', 'via', node.ip]);
    }
    return { varLib, netDir };
  }

  private readonly bridgedNodes = new Set<string>();


  /**
   * Wires a running pod anew under another host interface name, as a CNI DEL and ADD for a
   * restarted sandbox can: same pod, same IP, its old veth gone.
   */
  async rewirePod(pod: TopoPod, hostIface: string): Promise<TopoPod> {
    await pod.node.ns.exec('ip', ['link', 'del', pod.hostIface]);
    await pod.node.ns.exec('ip', ['link', 'add', 'name', hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(pod.ns.pid)]);
    await pod.node.ns.sysctl(`net.ipv4.conf.${hostIface}.proxy_arp`, '1');
    await pod.node.ns.sysctl(`net.ipv4.neigh.${hostIface}.proxy_delay`, '0');
    await pod.node.ns.exec('ip', ['link', 'set', hostIface, 'up']);
    await pod.node.ns.exec('ip', ['route', 'replace', `${pod.ip}/32`, 'dev', hostIface, 'scope', 'link']);
    await pod.ns.exec('ip', ['addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
    await pod.ns.exec('ip', ['link', 'set', 'eth0', 'up']);
    await pod.ns.exec('ip', ['route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link']);
    await pod.ns.exec('ip', ['route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
    return { ...pod, hostIface };
  }

  /** Takes a pod's network away, as a CNI DEL does: its namespace and veth disappear. */
  async removePod(pod: TopoPod): Promise<void> {
    await pod.ns.destroy();
    await waitFor(async () => !(await pod.node.ns.exec('ip', ['-o', 'link']).then((o) => o.includes(pod.hostIface))), { what: `${pod.hostIface} to disappear`, timeoutMs: 5000 });
  }
}

/** The Pod object a kubelet would report: bound to the node, Running, with its IP. */
export async function createPodObject(c: TestCluster, pod: { namespace: string; name: string; node: string; ip: string; labels: Record<string, string> }): Promise<void> {
  await createScheduledPod(c, pod);
  await setPodIp(c, pod.namespace, pod.name, pod.ip);
}

/** A Pod as the scheduler leaves it: bound to its node, no address reported yet. Its uid. */
export async function createScheduledPod(c: TestCluster, pod: { namespace: string; name: string; node: string; labels: Record<string, string> }): Promise<string> {
  const created = await c.core.createNamespacedPod({
    namespace: pod.namespace,
    body: {
      metadata: { name: pod.name, labels: pod.labels },
      spec: { nodeName: pod.node, containers: [{ name: 'app', image: 'registry.invalid/app:1' }], automountServiceAccountToken: false },
    },
  });
  return created.metadata!.uid!;
}

export async function setPodIp(c: TestCluster, namespace: string, name: string, ip: string): Promise<void> {
  await (await c.rest()).request({
    method: 'PATCH',
    path: `/api/v1/namespaces/${namespace}/pods/${name}/status`,
    contentType: 'application/merge-patch+json',
    body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] } },
  });
}

export async function deletePodObject(c: TestCluster, namespace: string, name: string): Promise<void> {
  await c.core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 });
}
