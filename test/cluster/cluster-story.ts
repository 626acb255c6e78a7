// The user's story (README, docs/) on the real cluster: kube-pcap installed by its chart, a
// `logging` Deployment whose containers query the cluster DNS (dnsmasq playing CoreDNS)
// with dig, a `web` Deployment doing the same that must not be captured, the seed's
// PacketCapture applied with devops-sa's token, the README's curl through a real
// `kubectl port-forward -n kube-pcap service/kube-pcap-gateway 9443:9443` with a token from
// `kubectl create token`. Used by seed-story.test.ts (assertions) and e2e-cluster.ts
// (`npm run e2e:cluster`, narrated).
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readPcap, type Packet } from '../harness/capture-fixture.js';
import type { Teardown } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';
import type { ClusterHandle } from './handle.js';
import { AGENTS_NS, ensureKubePcap, SYSTEM_NS } from './install.js';
import type { Narrator } from './real-cluster.js';

export const NS = 'storefront';
export const NAME = 'pc-storefront-logging-dns';

const quiet: Narrator = { step: () => undefined, say: () => undefined };

/** A Deployment whose every pod sends one DNS query per 100 ms: "<pod>-NNNNNN.storefront.example". */
export function dnsClientDeployment(name: string, namespace: string, image: string, replicas: number): string {
  return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}, namespace: ${namespace}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec:
      terminationGracePeriodSeconds: 1
      # One per node while there are as many pods as nodes.
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: ${name}}}}
      containers:
        - name: app
          image: ${image}
          imagePullPolicy: Never
          command: [bash, -c, 'i=0; while :; do i=$((i+1)); dig +short +tries=1 +time=1 "$(hostname)-$(printf %06d $i).storefront.example" >/dev/null; sleep 0.1; done']
`;
}

export interface Download {
  curlExit: number;
  body: Buffer;
  status: { code: number; reason: string; message: string } | undefined;
}

export class ClusterStory {
  private forward: OwnedProcess | undefined;

  private constructor(
    private readonly t: Teardown,
    readonly c: ClusterHandle,
    readonly work: string,
    readonly devopsToken: string,
    readonly say: Narrator,
  ) {}

  static async setup(t: Teardown, c: ClusterHandle, work: string, say: Narrator = quiet): Promise<ClusterStory> {
    say.step('kube-pcap installed with its Helm chart (images built from our Dockerfile)');
    await ensureKubePcap(c);
    const agents = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
    const gateways = await c.pods(SYSTEM_NS, 'app.kubernetes.io/name=kube-pcap-gateway');
    say.say(`agents: ${agents.map((p) => `${p.name} on ${p.node}`).join(', ')}; gateways: ${gateways.map((p) => `${p.name} on ${p.node}`).join(', ')}`);

    say.step('Namespace storefront, its DevOps engineer devops-sa (capture Role only), its pods');
    await c.kubectlOk(['create', 'namespace', NS]).catch(() => undefined);
    for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'gateway-access.yaml']) await c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'rbac-examples', f)]);
    const image = c.info.images.workload;
    await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('logging', NS, image, 2) });
    await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('web', NS, image, 1) });
    const logging = await c.waitForPods(NS, 'app=logging', 2);
    await c.waitForPods(NS, 'app=web', 1);
    say.say(`logging pods: ${logging.map((p) => `${p.name} (${p.ip}) on ${p.node}`).join(', ')}; every pod queries the cluster DNS 10 times a second`);
    const token = (await c.kubectlOk(['create', 'token', 'devops-sa', '-n', NS, '--duration=2h'])).trim();
    const story = new ClusterStory(t, c, work, token, say);
    await story.portForward();
    return story;
  }

  /** The README's `kubectl port-forward`, as devops-sa (rbac-examples/gateway-access.yaml). */
  async portForward(): Promise<void> {
    await this.forward?.stop(2000);
    const cp = this.c.info.controlPlane;
    const logFile = join(this.work, 'port-forward.log');
    await writeFile(logFile, '');
    this.forward = new OwnedProcess(join(cp.binDir, 'kubectl'), [
      '--server', cp.server, '--certificate-authority', cp.caFile, '--token', this.devopsToken, '--kubeconfig', '/dev/null',
      'port-forward', '-n', SYSTEM_NS, 'service/kube-pcap-gateway', '9443:9443',
    ], { name: 'kubectl port-forward', logFile });
    const proc = this.forward;
    this.t.teardown(() => proc.stop(2000));
    await waitFor(async () => {
      if (!proc.running) throw await proc.failure('exited');
      return (await readFile(logFile, 'utf8')).includes('Forwarding from 127.0.0.1:9443');
    }, { what: 'kubectl port-forward to listen on 9443', timeoutMs: 30_000 });
  }

  async applyCapture(): Promise<string> {
    return (await this.c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'deploy', 'examples', 'pc-storefront-logging-dns.yaml')], { token: this.devopsToken })).trim();
  }

  /** The capture's status.files[] (the Calico view the aggregator writes). */
  async nodeStates(): Promise<Map<string, string>> {
    const r = await this.c.kubectl(['get', 'packetcapture', NAME, '-n', NS, '-o', 'json']);
    if (r.code !== 0) return new Map();
    const pc = JSON.parse(r.stdout) as { status?: { files?: { node: string; state: string }[] } };
    return new Map((pc.status?.files ?? []).map((f) => [f.node, f.state]));
  }

  /** The README's curl, as written, run in its own directory like a user would. */
  async download(token: string | undefined, label: string, file = 'files.zip'): Promise<Download> {
    const dir = join(this.work, label);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
    const m = /^(curl "https:\/\/localhost:9443\/packet-capture\/download\/\$NS\/\$NAME\/files\.zip" -L -O -k \\\n\s+-H "Authorization: Bearer \$TOKEN")$/m.exec(readme);
    if (!m) throw new Error('README.md no longer shows the download command this story runs');
    const command = m[1]!.replace('files.zip', file);
    const code = await new Promise<number>((resolve) => {
      execFile('bash', ['-c', `${command} -sS`], { cwd: dir, env: { ...process.env, NS, NAME, TOKEN: token ?? '' }, timeout: 120_000 }, (err) => resolve(err ? Number((err as { code?: number }).code ?? 1) : 0));
    });
    const body = await readFile(join(dir, file)).catch(() => Buffer.alloc(0));
    let status: Download['status'];
    if (body.subarray(0, 2).toString() !== 'PK' && body.readUInt32LE(0) !== 0x0a0d0d0a) {
      try {
        status = JSON.parse(body.toString()) as Download['status'];
      } catch {
        status = undefined;
      }
    }
    return { curlExit: code, body, status };
  }

  async grantFiles(): Promise<string> {
    return (await this.c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'rbac-examples', 'files-role.yaml')])).trim();
  }

  /** A zip's entries read by tshark: "<node>/<file>" -> packets. */
  async unpack(zip: Buffer, label: string): Promise<Map<string, Packet[]>> {
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
    return files;
  }

  /** DNS over TCP and UDP to port 5353 from every logging pod: nothing the capture takes. */
  async otherTraffic(): Promise<void> {
    for (const p of await this.c.pods(NS, 'app=logging')) {
      await this.c.kubectl(['exec', '-n', NS, p.name, '--', 'dig', '+short', '+tries=1', '+time=1', '+tcp', `${p.name}-over-tcp.storefront.example`]);
      await this.c.kubectl(['exec', '-n', NS, p.name, '--', 'dig', '+short', '+tries=1', '+time=1', '-p', '5353', `@${(await this.dnsPod()).ip}`, `${p.name}-port-5353.storefront.example`]);
    }
  }

  async dnsPod(): Promise<{ name: string; ip: string; node: string }> {
    const [dns] = await this.c.pods('kube-system', 'k8s-app=kube-dns');
    if (!dns) throw new Error('no cluster DNS pod');
    return dns;
  }

  /** Autoscaling: one more logging pod; returns it once it is Ready. */
  async scaleUp(replicas: number): Promise<{ name: string; ip: string; node: string }> {
    const before = new Set((await this.c.pods(NS, 'app=logging')).map((p) => p.name));
    await this.c.kubectlOk(['scale', 'deployment/logging', '-n', NS, `--replicas=${replicas}`]);
    const pods = await this.c.waitForPods(NS, 'app=logging', replicas);
    const added = pods.find((p) => !before.has(p.name));
    if (!added) throw new Error('no new logging pod');
    return added;
  }

  /** A crash: a logging pod deleted; the ReplicaSet makes another (a new name and address). */
  async crash(pod: string): Promise<{ name: string; ip: string; node: string }> {
    const before = await this.c.pods(NS, 'app=logging');
    await this.c.kubectlOk(['delete', 'pod', pod, '-n', NS, '--wait=false']);
    return await waitFor(async () => {
      const now = await this.c.pods(NS, 'app=logging');
      const fresh = now.filter((p) => !before.some((b) => b.name === p.name));
      return now.length === before.length && now.every((p) => p.ready && p.name !== pod) && fresh.length === 1 ? fresh[0] : undefined;
    }, { what: `a pod in place of ${pod}`, timeoutMs: 120_000, intervalMs: 250 });
  }

  async deleteCapture(): Promise<string> {
    return (await this.c.kubectlOk(['delete', 'packetcapture', NAME, '-n', NS], { token: this.devopsToken })).trim();
  }
}

/** The pod a DNS packet belongs to: the querier is its source, or an answer's destination. */
export function clientOf(p: Packet): string {
  return p.dstPort === 53 ? p.src : p.dst;
}
