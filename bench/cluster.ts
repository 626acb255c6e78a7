// npm run bench:cluster — figures from the real cluster (test/cluster): two nodes running
// containerd, kubelet and kube-proxy, kube-pcap installed by its chart from our images.
//
// - Pod start to first packet captured: a PacketCapture selects app=probe; pods of that
//   label are created one after another, each sending a DNS query every 5 ms from its first
//   instant for 5 s (bash writing to /dev/udp, no process start per packet), and deleted. The
//   start is the container's /tasks/start event from containerd (`ctr events`, nanosecond
//   stamps); the first packet is the earliest packet of the pod's address in the node's
//   capture files (tshark). p50/p95 over the pods.
// - RSS of the agents and the gateways (VmRSS of their processes): at idle, and at the peak
//   while the probes are captured.
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../test/harness/http.js';
import { ClusterHandle } from '../test/cluster/handle.js';
import { ensureKubePcap, SYSTEM_NS } from '../test/cluster/install.js';
import { CLUSTER_DNS_IP, RealCluster } from '../test/cluster/real-cluster.js';
import { TeardownList } from '../test/cluster/teardown.js';
import { waitFor } from '../test/harness/wait.js';

const PODS = Number(process.env.PODS ?? 20);
const NS = 'bench';

/** A DNS query for p.storefront.example after its 2-byte id, as printf escapes. */
const QUERY = '\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x01p\\x0astorefront\\x07example\\x00\\x00\\x01\\x00\\x01';

function probe(name: string, node: string, image: string): string {
  return `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${NS}, labels: {app: probe}}
spec:
  nodeName: ${node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
    - name: probe
      image: ${image}
      imagePullPolicy: Never
      # Query i has DNS id i: the first captured id is the number of queries missed. Builtins
      # only (printf to /dev/udp, read -t on an empty FIFO as the pause): no process start per
      # packet, which loaded the node enough to skew what is measured; query 0 goes out first.
      command: [bash, -c, 'exec 3<>/dev/udp/${CLUSTER_DNS_IP}/53; q() { printf -v id "\\\\\\\\x%02x\\\\\\\\x%02x" $(($1>>8)) $(($1&255)); printf "$id${QUERY}" >&3; }; q 0; mkfifo /tmp/pause; exec 4<>/tmp/pause; for i in $(seq 1 999); do q $i; read -t 0.005 -u 4; done']
`;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function rssOf(c: ClusterHandle, role: 'agent' | 'gateway'): Promise<number[]> {
  const out: number[] = [];
  for (const node of c.nodeNames) {
    for (const p of await c.nodeProcesses(node)) {
      if (!(p.args.includes('/app/dist/src/cli.js') && p.args[p.args.indexOf('/app/dist/src/cli.js') + 1] === role)) continue;
      const status = await readFile(`/proc/${p.pid}/status`, 'utf8').catch(() => '');
      const kb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? NaN);
      if (!Number.isNaN(kb)) out.push(kb * 1024);
    }
  }
  return out;
}

const mib = (b: number): string => `${(b / 1048576).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const down = new TeardownList();
  try {
    const work = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-bench-cluster');
    const started = Date.now();
    const cluster = await RealCluster.up(down, { workDir: work });
    const c = new ClusterHandle(cluster.info, work);
    await ensureKubePcap(c);
    process.stdout.write(`cluster up and kube-pcap installed in ${((Date.now() - started) / 1000).toFixed(1)} s (${Object.entries(cluster.info.versions).map(([k, v]) => `${k} ${v}`).join(', ')})\n`);

    // Idle: installed, nothing captured, after the first minute's settling.
    await waitFor(async () => (await rssOf(c, 'agent')).length === 2 && (await rssOf(c, 'gateway')).length === 2, { what: 'agents and gateways', timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 20_000)); // a settling period, not synchronisation: what idle means
    const idleAgent = await rssOf(c, 'agent');
    const idleGateway = await rssOf(c, 'gateway');

    await c.kubectlOk(['create', 'namespace', NS]);
    await c.kubectlOk(['apply', '-f', '-'], { input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: probes, namespace: ${NS}}\nspec:\n  selector: app == "probe"\n  filters: [{protocol: UDP, ports: [53]}]\n` });
    // containerd's task start events on every node, for the whole measurement.
    const events: string[] = [];
    const watchers = cluster.nodes.map((n) => {
      const p = spawn(join(cluster.info.nodeBinDir, 'ctr'), ['--address', n.containerdSocket, '--namespace', 'k8s.io', 'events'], { stdio: ['ignore', 'pipe', 'ignore'] });
      p.stdout.setEncoding('utf8').on('data', (d: string) => events.push(...d.split('\n')));
      return p;
    });
    down.teardown(() => watchers.forEach((w) => w.kill()));
    // When the API server first shows each probe's IP (what the agent's pod watch sees).
    const ipSeen = new Map<string, number>();
    const ipWatch = spawn(join(cluster.info.controlPlane.binDir, 'kubectl'), ['--kubeconfig', cluster.info.controlPlane.kubeconfig, 'get', 'pods', '-n', NS, '-w', '-o', 'jsonpath={.metadata.name} {.status.podIP}{"\\n"}'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let partial = '';
    ipWatch.stdout.setEncoding('utf8').on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        const [name, ip] = l.trim().split(' ');
        if (name && ip && !ipSeen.has(name)) ipSeen.set(name, Date.now());
      }
    });
    down.teardown(() => ipWatch.kill());
    const peaks = { agent: 0, gateway: 0 };
    const sampler = setInterval(() => {
      void rssOf(c, 'agent').then((r) => (peaks.agent = Math.max(peaks.agent, ...r)));
      void rssOf(c, 'gateway').then((r) => (peaks.gateway = Math.max(peaks.gateway, ...r)));
    }, 250);
    down.teardown(() => clearInterval(sampler));

    const latencies: { pod: string; node: string; ms: number; ipMs: number; missed: number }[] = [];
    for (let i = 0; i < PODS; i++) {
      const name = `probe-${String(i).padStart(2, '0')}`;
      const node = c.nodeNames[i % c.nodeNames.length]!;
      await c.kubectlOk(['apply', '-f', '-'], { input: probe(name, node, cluster.info.images.workload) });
      const pod = await waitFor(async () => {
        const r = await c.kubectl(['get', 'pod', name, '-n', NS, '-o', 'jsonpath={.status.podIP} {.status.containerStatuses[0].containerID}']);
        const [ip, id] = r.stdout.trim().split(' ');
        return ip && id?.startsWith('containerd://') ? { ip, id: id.slice('containerd://'.length) } : undefined;
      }, { what: `${name} to run`, timeoutMs: 60_000, intervalMs: 100 });
      const startLine = await waitFor(() => events.find((l) => l.includes('/tasks/start') && l.includes(`"container_id":"${pod.id}"`)), { what: `the start event of ${name}`, timeoutMs: 10_000, intervalMs: 50 });
      const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d+) ([+-]\d{4})/.exec(startLine);
      if (!m) throw new Error(`unreadable event: ${startLine}`);
      const startNs = BigInt(Date.parse(`${m[1]}T${m[2]}${m[4]!.slice(0, 3)}:${m[4]!.slice(3)}`)) * 1_000_000n + BigInt(m[3]!.padEnd(9, '0').slice(0, 9));
      const dir = c.nodePath(node, `/var/lib/kube-pcap/${NS}/probes`);
      const firstPacket = await waitFor(async () => {
        const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(`${name}_`));
        let best: { time: number; id: number } | undefined;
        for (const f of files) {
          const r = await run('tshark', ['-r', join(dir, f), '-c', '1', '-T', 'fields', '-E', 'separator=|', '-e', 'frame.time_epoch', '-e', 'dns.id', '-Y', `ip.src == ${pod.ip}`]);
          const [time, id] = r.stdout.trim().split('\n')[0]!.split('|');
          if (r.stdout.trim() !== '' && !Number.isNaN(Number(time)) && (best === undefined || Number(time) < best.time)) best = { time: Number(time), id: Number(id) };
        }
        return best;
      }, { what: `${name}'s first captured packet`, timeoutMs: 30_000, intervalMs: 200 });
      const first = firstPacket.time;
      const startMs = Number(startNs / 1_000_000n);
      const ms = first * 1000 - startMs;
      const ipMs = (ipSeen.get(name) ?? NaN) - startMs;
      latencies.push({ pod: name, node, ms, ipMs, missed: firstPacket.id });
      await c.kubectl(['delete', 'pod', name, '-n', NS, '--wait=false']);
      process.stdout.write(`  ${name} on ${node}: first packet captured ${ms.toFixed(0)} ms after its container started, query #${firstPacket.id} (its IP in the API ${ipMs.toFixed(0)} ms after)\n`);
    }
    clearInterval(sampler);
    const ms = latencies.map((l) => l.ms);
    process.stdout.write('\nkube-pcap on the real cluster\n');
    process.stdout.write(`  pod start -> first packet captured (${PODS} pods, from containerd's task start): p50 ${percentile(ms, 50).toFixed(0)} ms, p95 ${percentile(ms, 95).toFixed(0)} ms, max ${Math.max(...ms).toFixed(0)} ms\n`);
    const ipMs = latencies.map((l) => l.ipMs).filter((x) => !Number.isNaN(x));
    process.stdout.write(`  pod start -> its IP in the API server (the kubelet's status update; the agent does not wait for it): p50 ${percentile(ipMs, 50).toFixed(0)} ms, p95 ${percentile(ipMs, 95).toFixed(0)} ms\n`);
    const whole = latencies.filter((l) => l.missed === 0).length;
    process.stdout.write(`  pods captured from their very first packet: ${whole} of ${PODS}; queries missed before the first captured: max ${Math.max(...latencies.map((l) => l.missed))}\n`);
    process.stdout.write(`  agent RSS: idle ${idleAgent.map(mib).join(' / ')}, peak while capturing ${mib(peaks.agent)}\n`);
    process.stdout.write(`  gateway RSS: idle ${idleGateway.map(mib).join(' / ')}, peak while capturing ${mib(peaks.gateway)}\n`);
    process.stdout.write(`  (${SYSTEM_NS}: ${c.nodeNames.length} agents, 2 gateways)\n`);
  } finally {
    for (const err of await down.run()) process.stderr.write(`teardown: ${err.message}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
