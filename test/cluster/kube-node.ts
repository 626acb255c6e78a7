// One real Kubernetes node of the test cluster on this machine: containerd, kubelet and
// kube-proxy sharing a network namespace (the node's host network) and a mount namespace
// (the node's own /var/lib, /run and /var/log), with its pods' cgroups under a root of its
// own. Two of these on one machine are two nodes: each has its address on the cluster
// network (the sandbox bridge), its pod range on its own `cni0` bridge, and routes to the
// other's pods.
//
//   sandbox netns: kpt-br0 198.51.100.254/24 (API server), routes to every node's pods
//     └─ veth ── node netns: eth0 198.51.100.N/24, ip_forward, kube-proxy's iptables
//                  └─ cni0 203.0.113.x/25 ── pods (veth pairs made by the bridge plugin)
import { execFile } from 'node:child_process';
import { mkdir, readFile, readlink, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';
import { createRoot, processesIn, removeRoot } from './cgroups.js';
import { cniConfig, containerdConfig, kubeletConfig, kubeProxyConfig, type NodePlan } from './node-config.js';

const run = promisify(execFile);

/** The node's directories bound over the machine's, inside the node's mount namespace. */
const NODE_DIRS = ['/var/lib', '/run', '/var/log', '/etc/cni'] as const;

/** Where a node keeps one of NODE_DIRS under its root: /var/lib -> <root>/var-lib. */
function nodeDir(root: string, dir: string): string {
  return join(root, dir.slice(1).replace(/\//g, '-'));
}

/** A path of a node's own filesystem (e.g. /var/lib/kube-pcap), as seen from outside the node. */
export function nodePath(root: string, node: string, path: string): string {
  for (const d of NODE_DIRS) if (path === d || path.startsWith(`${d}/`)) return join(nodeDir(root, d), path.slice(d.length));
  throw new Error(`${path} is the machine's, not node ${node}'s`);
}

export interface NodeKubeconfigs {
  kubelet: string;
  kubeProxy: string;
}

export class KubeNode {
  private holder: OwnedProcess | undefined;
  private readonly procs: OwnedProcess[] = [];
  containerd: OwnedProcess | undefined;
  kubelet: OwnedProcess | undefined;
  kubeProxy: OwnedProcess | undefined;

  constructor(readonly plan: NodePlan, readonly logDir: string) {}

  get name(): string {
    return this.plan.name;
  }

  /** The pid whose namespaces are the node's (its mount and network namespaces). */
  get pid(): number {
    if (!this.holder) throw new Error(`node ${this.name} is not started`);
    return this.holder.pid;
  }

  /** A path of the node's filesystem (e.g. /var/lib/kube-pcap), as seen from outside. */
  hostPath(path: string): string {
    return nodePath(this.plan.root, this.name, path);
  }

  get containerdSocket(): string {
    return this.hostPath('/run/containerd/containerd.sock');
  }

  /** Namespaces, network, cgroups: everything before containerd. */
  async prepare(bridge: string, gatewayIp: string): Promise<void> {
    const p = this.plan;
    for (const d of NODE_DIRS) await mkdir(nodeDir(p.root, d), { recursive: true });
    await mkdir(this.hostPath('/etc/cni/net.d'), { recursive: true });
    await writeFile(join(this.hostPath('/etc/cni/net.d'), '10-kube-pcap-test.conflist'), cniConfig(p));
    // The holder binds the node's directories over the machine's in a mount namespace of
    // its own, then sleeps: containerd, kubelet and kube-proxy join its namespaces.
    const binds = NODE_DIRS.map((d) => `mount --bind ${nodeDir(p.root, d)} ${d}`).join(' && ');
    this.holder = new OwnedProcess('unshare', ['--mount', '--net', '--propagation', 'private', '--', 'bash', '-c', `${binds} && exec sleep infinity`], {
      name: `node ${p.name}`, logFile: join(this.logDir, `${p.name}-holder.log`),
    });
    this.procs.push(this.holder);
    const own = await readlink('/proc/self/ns/net');
    await waitFor(async () => {
      if (!this.holder!.running) throw await this.holder!.failure('exited while binding its directories');
      const comm = (await readFile(`/proc/${this.holder!.pid}/comm`, 'utf8').catch(() => '')).trim();
      const theirs = await readlink(`/proc/${this.holder!.pid}/ns/net`).catch(() => own);
      return comm === 'sleep' && theirs !== own;
    }, { what: `node ${p.name}'s namespaces`, timeoutMs: 10_000, intervalMs: 20 });

    // The node's uplink to the cluster network.
    const host = `kpc-${p.name}`.slice(0, 15);
    await run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(this.pid)]);
    await run('ip', ['link', 'set', host, 'master', bridge, 'up']);
    await this.sh([
      'ip link set lo up',
      `ip addr add ${p.ip}/24 dev eth0`,
      'ip link set eth0 up',
      `ip route add default via ${gatewayIp}`,
      'sysctl -q -w net.ipv4.ip_forward=1',
      // Service traffic between two pods of one bridge comes back over the bridge: it must
      // pass iptables for kube-proxy's DNAT to be undone (what br_netfilter does on a node).
      'sysctl -q -w net.bridge.bridge-nf-call-iptables=1',
    ]);
    await removeRoot(p.cgroupRoot.slice(1)).catch(() => undefined);
    await createRoot(p.cgroupRoot.slice(1));
  }

  /** Routes to another node's pods, through that node. */
  async routeTo(podCidr: string, via: string): Promise<void> {
    await this.sh([`ip route replace ${podCidr} via ${via}`]);
  }

  /** A shell command list run inside the node's namespaces. */
  async sh(lines: string[]): Promise<string> {
    try {
      const { stdout } = await run('nsenter', [`--net=/proc/${this.pid}/ns/net`, `--mount=/proc/${this.pid}/ns/mnt`, '--', 'bash', '-ec', lines.join('\n')], { timeout: 60_000, maxBuffer: 16 << 20 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`[${this.name}] ${lines.join('; ')}: ${e.stderr?.trim() || e.message}`);
    }
  }

  private spawn(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): OwnedProcess {
    const proc = new OwnedProcess(command, args, {
      name: `${this.name} ${name}`, logFile: join(this.logDir, `${this.name}-${name}.log`), netnsPid: this.pid, mntnsPid: this.pid, env,
    });
    this.procs.push(proc);
    return proc;
  }

  async startContainerd(): Promise<void> {
    const config = join(this.plan.root, 'containerd.toml');
    await writeFile(config, containerdConfig(this.plan));
    // The runc shim is found on PATH.
    const env = { ...process.env, PATH: `${this.plan.binDir}:${process.env.PATH ?? ''}` };
    this.containerd = this.spawn('containerd', join(this.plan.binDir, 'containerd'), ['--config', config, '--log-level', 'warn'], env);
    await waitFor(async () => {
      if (!this.containerd!.running) throw await this.containerd!.failure('exited during start-up');
      return (await this.ctr(['version']).then(() => true, () => false));
    }, { what: `containerd of ${this.name}`, timeoutMs: 30_000, intervalMs: 100 });
  }

  /** ctr against the node's containerd, in the CRI's namespace. */
  async ctr(args: string[], timeoutMs = 120_000): Promise<string> {
    const { stdout } = await run(join(this.plan.binDir, 'ctr'), ['--address', this.containerdSocket, '--namespace', 'k8s.io', ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return stdout;
  }

  /** docker-archive tarballs into the node's image store, names kept. */
  async importImages(tarballs: string[]): Promise<void> {
    for (const tar of tarballs) await this.ctr(['images', 'import', '--no-unpack=false', tar], 300_000);
  }

  async startKubelet(kubeconfigs: NodeKubeconfigs): Promise<void> {
    const config = join(this.plan.root, 'kubelet.yaml');
    await writeFile(config, kubeletConfig(this.plan));
    this.kubelet = this.spawn('kubelet', join(this.plan.binDir, 'kubelet'), [
      '--config', config,
      '--kubeconfig', kubeconfigs.kubelet,
      '--hostname-override', this.name,
      '--node-ip', this.plan.ip,
      '--node-labels', `kube-pcap.io/test-node=${this.name}`,
      '--v', '1',
    ]);
    const proxyConfig = join(this.plan.root, 'kube-proxy.yaml');
    await writeFile(proxyConfig, kubeProxyConfig(this.plan, kubeconfigs.kubeProxy));
    this.kubeProxy = this.spawn('kube-proxy', join(this.plan.binDir, 'kube-proxy'), ['--config', proxyConfig, '--v', '1']);
  }

  /** The node's processes, also the ones no longer its children (shims, containers). */
  private async everyProcess(): Promise<number[]> {
    const pids = new Set(await processesIn(this.plan.cgroupRoot.slice(1)));
    if (this.holder?.running) {
      const mnt = await readlink(`/proc/${this.holder.pid}/ns/mnt`).catch(() => undefined);
      const net = await readlink(`/proc/${this.holder.pid}/ns/net`).catch(() => undefined);
      for (const e of await readdir('/proc')) {
        if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
        const [m, n] = await Promise.all([readlink(`/proc/${e}/ns/mnt`).catch(() => ''), readlink(`/proc/${e}/ns/net`).catch(() => '')]);
        if ((mnt && m === mnt) || (net && n === net)) pids.add(Number(e));
      }
    }
    return [...pids];
  }

  /**
   * Stops the node at once, as pulling its power would: every process of it is killed
   * (pods, shims, containerd, kubelet, kube-proxy), then its namespaces go with the last
   * of them and its cgroups are removed. The API server keeps its Node object.
   */
  async destroy(): Promise<void> {
    // Killed again until none is left: a shim may start a process while the others die.
    await waitFor(async () => {
      const pids = await this.everyProcess();
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      return pids.length === 0;
    }, { what: `every process of node ${this.name} to die`, timeoutMs: 30_000, intervalMs: 50 });
    await Promise.all(this.procs.map((p) => p.kill()));
    await waitFor(async () => (await processesIn(this.plan.cgroupRoot.slice(1))).length === 0, { what: `node ${this.name}'s cgroups to empty`, timeoutMs: 10_000, intervalMs: 50 });
    await removeRoot(this.plan.cgroupRoot.slice(1));
  }
}
