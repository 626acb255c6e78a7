// A real Kubernetes cluster on this machine, for the tests that run kube-pcap as a real
// workload: etcd, kube-apiserver (Node and RBAC authorization, NodeRestriction),
// kube-controller-manager and kube-scheduler, and nodes that each run containerd (with
// Debian's runc), kubelet and kube-proxy (test/cluster/kube-node.ts). Pods are real
// containers from real images: kube-pcap's own, built from the shipped Dockerfile, and the
// test's workload and pause images (test/cluster/build-images.sh). A dnsmasq Deployment
// behind the Service kube-system/kube-dns plays CoreDNS, at the kubelets' cluster DNS
// address.
//
// Addresses: nodes on the sandbox bridge (198.51.100.0/24), pods in 203.0.113.0/24 (one
// /25 per node), Services in 192.0.2.0/24: RFC 5737 only, inside the sandbox's namespaces.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { issueCertificate, type KeyPair } from '../../src/tls/certificates.js';
import { allocateAddress, requireSandbox } from '../harness/addresses.js';
import { TestCluster, type Teardown } from '../harness/cluster.js';
import { ControlPlane, REPO_ROOT, type ControlPlaneInfo } from '../harness/control-plane.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';
import { ourRoots, removeRoot } from './cgroups.js';
import { KubeNode } from './kube-node.js';

const run = promisify(execFile);

export const SERVICE_CIDR = '192.0.2.0/24';
export const KUBERNETES_SERVICE_IP = '192.0.2.1';
export const CLUSTER_DNS_IP = '192.0.2.10';
export const POD_CIDR = '203.0.113.0/24';

export interface ImageSet {
  gateway: string;
  agent: string;
  workload: string;
  pause: string;
  base: string;
  files: string[];
}

export interface RealClusterNode {
  name: string;
  ip: string;
  podCidr: string;
  /** The node's /var/lib, /run, /var/log as seen from the machine. */
  root: string;
  /** A process in the node's network and mount namespaces (nsenter -t <pid> -n -m). */
  pid: number;
}

export interface RealClusterInfo {
  controlPlane: ControlPlaneInfo;
  /** https://<bridge address>:<port>: how nodes and pods reach the API server. */
  serverFromNodes: string;
  nodes: RealClusterNode[];
  images: ImageSet;
  imagesDir: string;
  nodeBinDir: string;
  logDir: string;
  /** Versions of what runs, for the README's "Tested on" table and the narration. */
  versions: Record<string, string>;
}

export interface Narrator {
  step(title: string): void;
  say(text: string): void;
}

const quiet: Narrator = { step: () => undefined, say: () => undefined };

/** Builds (or finds) the node binaries: KUBE_PCAP_NODE_BIN when scripts/run.sh set it. */
export function nodeBinDir(): string {
  return process.env.KUBE_PCAP_NODE_BIN ?? execFileSync('bash', [join(REPO_ROOT, 'test', 'cluster', 'build-node.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** The images, built before the sandbox (their build needs the npm registry and Debian's mirror). */
export function imagesDir(): string {
  const dir = process.env.KUBE_PCAP_IMAGES;
  if (!dir) throw new Error('KUBE_PCAP_IMAGES is not set: the test cluster\'s images are built by scripts/run.sh (test/cluster/build-images.sh) before the sandbox starts; run the cluster tests through `npm test -- <file>` or `npm run e2e:cluster`');
  return dir;
}

export class RealCluster {
  private constructor(
    readonly info: RealClusterInfo,
    readonly admin: TestCluster,
    readonly nodes: KubeNode[],
  ) {}

  /** Brings the cluster up; everything it starts is stopped by t's teardown. */
  static async up(t: Teardown, opts: { nodes?: number; workDir: string; narrator?: Narrator }): Promise<RealCluster> {
    requireSandbox();
    const say = opts.narrator ?? quiet;
    const bridge = process.env.KUBE_PCAP_BRIDGE!;
    const bridgeIp = process.env.KUBE_PCAP_BRIDGE_IP!;
    const binDir = nodeBinDir();
    const imgDir = imagesDir();
    const images = JSON.parse(await readFile(join(imgDir, 'images.json'), 'utf8')) as ImageSet;
    for (const tool of ['/usr/sbin/runc', '/usr/sbin/iptables']) {
      await run(tool, ['--version']).catch(() => {
        throw new Error(`${tool} is missing: scripts/ensure-system-packages.sh --with-cluster installs it`);
      });
    }
    const runId = randomBytes(3).toString('hex');
    const root = opts.workDir;
    const logDir = join(root, 'logs');
    await mkdir(logDir, { recursive: true });
    // A run that was killed may have left its nodes' cgroups: nothing runs in them now.
    for (const stale of await ourRoots()) await removeRoot(stale).catch(() => undefined);

    say.step('A control plane for real nodes: etcd, kube-apiserver (Node,RBAC; NodeRestriction), kube-controller-manager, kube-scheduler');
    const cp = await ControlPlane.start({
      bindAddress: '0.0.0.0', extraAddresses: [bridgeIp],
      forNodes: { serviceCidr: SERVICE_CIDR, serviceIp: KUBERNETES_SERVICE_IP },
    });
    t.teardown(() => cp.stop());
    const admin = new TestCluster(cp.info, cp);
    const serverFromNodes = `https://${bridgeIp}:${cp.info.port}`;
    const ca: KeyPair = { certFile: cp.info.caFile, keyFile: cp.info.caKeyFile };
    const pki = join(root, 'pki');
    const kubeconfigFor = async (name: string, cn: string, orgs: string[] = []): Promise<string> => {
      const pair = await issueCertificate(pki, name, ca, { commonName: cn, organizations: orgs, usage: 'client' });
      const file = join(pki, `${name}.kubeconfig`);
      await writeFile(file, kubeconfig(serverFromNodes, cp.info.caFile, pair));
      return file;
    };
    const controllers = new OwnedProcess(join(binDir, 'kube-controller-manager'), [
      '--kubeconfig', await kubeconfigFor('kube-controller-manager', 'system:kube-controller-manager'),
      '--service-account-private-key-file', cp.info.saKeyFile,
      '--root-ca-file', cp.info.caFile,
      '--use-service-account-credentials',
      '--cluster-name', 'kube-pcap-test',
      '--leader-elect=false',
      '--secure-port=0',
      '--controllers', '*',
      '--v', '1',
    ], { name: 'kube-controller-manager', logFile: join(logDir, 'kube-controller-manager.log') });
    t.teardown(() => controllers.stop(5000));
    const scheduler = new OwnedProcess(join(binDir, 'kube-scheduler'), [
      '--kubeconfig', await kubeconfigFor('kube-scheduler', 'system:kube-scheduler'),
      '--leader-elect=false',
      '--secure-port=0',
      '--v', '1',
    ], { name: 'kube-scheduler', logFile: join(logDir, 'kube-scheduler.log') });
    t.teardown(() => scheduler.stop(5000));
    say.say(`kube-apiserver at ${serverFromNodes} (ready in ${(cp.startupMs / 1000).toFixed(1)} s)`);

    const count = opts.nodes ?? 2;
    if (count < 1 || count > 2) throw new Error('the pod range (203.0.113.0/24, a /25 per node) has room for one or two nodes');
    const nodes: KubeNode[] = [];
    const kubeProxyKubeconfig = await kubeconfigFor('kube-proxy', 'system:kube-proxy');
    for (let i = 0; i < count; i++) {
      const name = `node-${i + 1}`;
      const ip = await allocateAddress(t);
      const prefix = 25;
      const base = i * 128;
      const podCidr = `203.0.113.${base}/${prefix}`;
      const nodeRoot = join(root, name);
      await mkdir(nodeRoot, { recursive: true });
      const serving = await issueCertificate(join(nodeRoot, 'pki'), 'kubelet', ca, { commonName: name, usage: 'server', dnsNames: [name], ipAddresses: [ip] });
      const node = new KubeNode({
        name, ip, podCidr, podGateway: `203.0.113.${base + 1}`, root: nodeRoot, binDir, pauseImage: images.pause,
        cgroupRoot: `/kube-pcap-${runId}-${name}`, caFile: cp.info.caFile, servingCert: serving,
        clusterDns: CLUSTER_DNS_IP, clusterCidr: POD_CIDR,
      }, logDir);
      t.teardown(() => node.destroy());
      nodes.push(node);
    }

    say.step(`${count} nodes: containerd + runc, kubelet, kube-proxy, the bridge CNI; images imported`);
    await Promise.all(nodes.map(async (n) => {
      await n.prepare(bridge, bridgeIp);
      await run('ip', ['route', 'replace', n.plan.podCidr, 'via', n.plan.ip]);
      t.teardown(() => run('ip', ['route', 'del', n.plan.podCidr]).catch(() => undefined));
    }));
    for (const n of nodes) for (const other of nodes) if (other !== n) await n.routeTo(other.plan.podCidr, other.plan.ip);
    await Promise.all(nodes.map(async (n) => {
      const started = Date.now();
      await n.startContainerd();
      await n.importImages(images.files.map((f) => join(imgDir, f)));
      say.say(`${n.name} (${n.plan.ip}, pods ${n.plan.podCidr}): containerd ready, ${images.files.length} images imported in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      await n.startKubelet({ kubelet: await kubeconfigFor(`kubelet-${n.name}`, `system:node:${n.name}`, ['system:nodes']), kubeProxy: kubeProxyKubeconfig });
    }));
    const core = admin.core;
    await waitFor(async () => {
      for (const n of nodes) {
        for (const p of [n.kubelet!, n.kubeProxy!, n.containerd!]) if (!p.running) throw await p.failure('exited');
      }
      const list = await core.listNode();
      const ready = list.items.filter((o) => o.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return ready.length === count;
    }, { what: `${count} nodes to be Ready`, timeoutMs: 120_000, intervalMs: 250 });
    for (const p of [controllers, scheduler]) if (!p.running) throw await p.failure('exited');

    const versions = await componentVersions(binDir, cp.info.binDir);
    say.say(`nodes Ready: ${nodes.map((n) => n.name).join(', ')} (kubelet ${versions.kubelet}, containerd ${versions.containerd}, runc ${versions.runc})`);

    const info: RealClusterInfo = {
      controlPlane: cp.info, serverFromNodes, images, imagesDir: imgDir, nodeBinDir: binDir, logDir, versions,
      nodes: nodes.map((n) => ({ name: n.name, ip: n.plan.ip, podCidr: n.plan.podCidr, root: n.plan.root, pid: n.pid })),
    };
    const cluster = new RealCluster(info, admin, nodes);
    say.step(`Cluster DNS: dnsmasq as kube-system/kube-dns at ${CLUSTER_DNS_IP} (what CoreDNS is on a real cluster)`);
    await cluster.installDns();
    return cluster;
  }

  /** dnsmasq playing CoreDNS: answers *.storefront.example and *.cluster.local. */
  async installDns(): Promise<void> {
    const manifest = clusterDnsManifest(this.info.images.workload);
    const r = await this.admin.kubectl(['apply', '-f', '-'], { input: manifest });
    if (r.code !== 0) throw new Error(`cluster DNS: ${r.stderr}`);
    await this.rollout('kube-system', 'deployment/kube-dns');
  }

  /** kubectl rollout status, with the pods' events on failure. */
  async rollout(namespace: string, what: string, timeoutSeconds = 120): Promise<void> {
    const r = await this.admin.kubectl(['rollout', 'status', '-n', namespace, what, `--timeout=${timeoutSeconds}s`]);
    if (r.code !== 0) {
      const pods = await this.admin.kubectl(['get', 'pods,events', '-n', namespace, '-o', 'wide']);
      throw new Error(`rollout of ${namespace}/${what}: ${r.stderr}\n${pods.stdout}`);
    }
  }

  node(name: string): KubeNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }
}

/** A kubeconfig with a client certificate. */
export function kubeconfig(server: string, caFile: string, pair: KeyPair): string {
  return [
    'apiVersion: v1', 'kind: Config',
    'clusters:', '- name: kube-pcap-test', '  cluster:', `    server: ${server}`, `    certificate-authority: ${caFile}`,
    'users:', '- name: user', '  user:', `    client-certificate: ${pair.certFile}`, `    client-key: ${pair.keyFile}`,
    'contexts:', '- name: kube-pcap-test', '  context: {cluster: kube-pcap-test, user: user}',
    'current-context: kube-pcap-test', '',
  ].join('\n');
}

async function componentVersions(nodeBin: string, cpBin: string): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[], re: RegExp): Promise<string> => {
    const out = await run(cmd, args).then((r) => r.stdout + r.stderr, (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`);
    return re.exec(out)?.[1] ?? 'unknown';
  };
  return {
    'kube-apiserver': await first(join(cpBin, 'kube-apiserver'), ['--version'], /Kubernetes (v[\d.]+)/),
    kubelet: await first(join(nodeBin, 'kubelet'), ['--version'], /Kubernetes (v[\d.]+)/),
    containerd: await first(join(nodeBin, 'containerd'), ['--version'], /containerd \S+ (v[\d.]+)/),
    runc: await first('/usr/sbin/runc', ['--version'], /runc version (\S+)/),
    kernel: (await run('uname', ['-r'])).stdout.trim(),
    cgroup: (await readFile('/proc/self/mounts', 'utf8')).includes(' /sys/fs/cgroup cgroup2 ') ? 'v2' : 'v1',
  };
}

function clusterDnsManifest(image: string): string {
  return `apiVersion: apps/v1
kind: Deployment
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      dnsPolicy: Default
      containers:
        - name: dnsmasq
          image: ${image}
          imagePullPolicy: Never
          command: [dnsmasq, --keep-in-foreground, --conf-file=/dev/null, --no-resolv, --no-hosts, --no-poll,
                    --user=nobody, --group=nogroup, --pid-file=,
                    --address=/storefront.example/192.0.2.200, --address=/cluster.local/192.0.2.201]
          ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53, protocol: TCP}]
          readinessProbe: {tcpSocket: {port: 53}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: ${CLUSTER_DNS_IP}
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
`;
}

