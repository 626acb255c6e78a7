// What a test file of test/cluster gets: the running real cluster (brought up by the suite's
// runner, or by the file itself when it runs alone), with the admin's API client, the
// nodes' namespaces for looking inside a node, helm, and kube-pcap installed by the chart.
import { execFileSync } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TestCluster, type Teardown } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run, type CommandResult } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';
import { nodePath } from './kube-node.js';
import { RealCluster, type RealClusterInfo, type RealClusterNode } from './real-cluster.js';


export interface NodeProcess {
  pid: number;
  comm: string;
  args: string[];
}

export class ClusterHandle {
  readonly admin: TestCluster;

  constructor(readonly info: RealClusterInfo, readonly work: string) {
    this.admin = new TestCluster(info.controlPlane);
  }

  get nodeNames(): string[] {
    return this.info.nodes.map((n) => n.name);
  }

  node(name: string): RealClusterNode {
    const n = this.info.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in the cluster (${this.nodeNames.join(', ')})`);
    return n;
  }

  /** A path of a node's own filesystem (/var/lib/..., /run/..., /var/log/...), from here. */
  nodePath(name: string, path: string): string {
    return nodePath(this.node(name).root, name, path);
  }

  /** Runs a command in a node's host network and mount namespaces (as on the node's shell). */
  async onNode(name: string, cmd: string, args: string[], timeoutMs = 30_000): Promise<CommandResult> {
    const n = this.node(name);
    return await run('nsenter', [`--net=/proc/${n.pid}/ns/net`, `--mount=/proc/${n.pid}/ns/mnt`, '--', cmd, ...args], { timeoutMs });
  }

  /**
   * The processes running on a node: those in its host network namespace or in a pod's
   * cgroup under its kubelet's root (every container's process is).
   */
  async nodeProcesses(name: string): Promise<NodeProcess[]> {
    const n = this.node(name);
    const net = await readlink(`/proc/${n.pid}/ns/net`);
    const cgroupMark = `/kube-pcap-`;
    const out: NodeProcess[] = [];
    for (const e of await readdir('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      const [ns, cgroup, comm, cmdline] = await Promise.all([
        readlink(`/proc/${e}/ns/net`).catch(() => ''),
        readFile(`/proc/${e}/cgroup`, 'utf8').catch(() => ''),
        readFile(`/proc/${e}/comm`, 'utf8').catch(() => ''),
        readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => ''),
      ]);
      const inPod = cgroup.split('\n').some((l) => l.includes(`${cgroupMark}`) && l.includes(`-${name}/`));
      if (ns === net || inPod) out.push({ pid: Number(e), comm: comm.trim(), args: cmdline.split('\0').filter((a) => a !== '') });
    }
    return out;
  }

  async kubectl(args: string[], opts: { input?: string; token?: string } = {}): Promise<CommandResult> {
    return await this.admin.kubectl(args, opts);
  }

  /** kubectl that must succeed; its stdout. */
  async kubectlOk(args: string[], opts: { input?: string; token?: string } = {}): Promise<string> {
    const r = await this.admin.kubectl(args, opts);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  async rollout(namespace: string, what: string, timeoutSeconds = 120): Promise<void> {
    const r = await this.kubectl(['rollout', 'status', '-n', namespace, what, `--timeout=${timeoutSeconds}s`]);
    if (r.code !== 0) {
      const more = await this.kubectl(['get', 'pods,events', '-n', namespace, '-o', 'wide']);
      throw new Error(`rollout of ${namespace}/${what}: ${r.stderr}\n${more.stdout}`);
    }
  }

  /** helm (built by test/helm/build-helm.sh) as the cluster's admin. */
  async helm(args: string[], timeoutMs = 300_000): Promise<CommandResult> {
    const bin = process.env.KUBE_PCAP_HELM ?? execFileSync('bash', [join(REPO_ROOT, 'test', 'helm', 'build-helm.sh')], { encoding: 'utf8' }).trim();
    const home = join(this.work, 'helm-home');
    return await run(bin, [...args, '--kubeconfig', this.info.controlPlane.kubeconfig], {
      timeoutMs,
      env: { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') },
    });
  }

  /** The pods of a namespace matching a label selector, with their node and IP. */
  async pods(namespace: string, selector: string): Promise<{ name: string; node: string; ip: string; uid: string; phase: string; ready: boolean }[]> {
    const list = await this.admin.core.listNamespacedPod({ namespace, labelSelector: selector });
    return list.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => ({
      name: p.metadata!.name!, node: p.spec?.nodeName ?? '', ip: p.status?.podIP ?? '', uid: p.metadata!.uid!, phase: p.status?.phase ?? '',
      ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    }));
  }

  async waitForPods(namespace: string, selector: string, count: number, timeoutMs = 120_000): Promise<{ name: string; node: string; ip: string; uid: string }[]> {
    return await waitFor(async () => {
      const pods = await this.pods(namespace, selector);
      return pods.length === count && pods.every((p) => p.ready && p.ip !== '') ? pods : undefined;
    }, { what: `${count} Ready pods ${selector} in ${namespace}`, timeoutMs, intervalMs: 250 });
  }
}

let shared: Promise<ClusterHandle> | undefined;

/** The suite's real cluster (KUBE_PCAP_REAL_CLUSTER), or one of this file's own. */
export async function realCluster(t: Teardown): Promise<ClusterHandle> {
  const infoFile = process.env.KUBE_PCAP_REAL_CLUSTER;
  if (infoFile) {
    shared ??= (async () => {
      const info = JSON.parse(await readFile(infoFile, 'utf8')) as RealClusterInfo;
      return new ClusterHandle(info, await scratchDir(t, 'cluster-test'));
    })();
    return await shared;
  }
  const work = await scratchDir(t, 'real-cluster');
  const c = await RealCluster.up(t, { workDir: work });
  return new ClusterHandle(c.info, work);
}

