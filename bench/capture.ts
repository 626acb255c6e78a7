// npm run bench:capture — the agent's capture path against bare `tcpdump -w file`, on the
// same pod interface, with the same traffic (iperf3 UDP between two pods on one node).
//
// Prints for each: packets/s written, kernel drops, CPU seconds; and the ratio
// agent/bare (target >= 0.9, with no more drops). Then the time from a new pod's IP to its
// first captured packet, p50/p95 over 20 pods.
//
//   npm run bench:capture [-- --pps 50000 --seconds 8 --size 200 --pods 20 --rounds 2]
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TestCluster } from '../test/harness/cluster.js';
import { ControlPlane } from '../test/harness/control-plane.js';
import { captureWorld, readPcap } from '../test/harness/capture-fixture.js';
import { agentMetric, metricsReaderToken, scratchDir } from '../test/harness/kube-pcap.js';
import { startDnsSender } from '../test/harness/dns-sender.js';
import { createPodObject } from '../test/harness/topology.js';
import { waitFor } from '../test/harness/wait.js';
import { runBench, Teardowns, cpuSeconds, percentile } from './lib.js';

const { values: args } = parseArgs({
  options: {
    pps: { type: 'string', default: '50000' },
    seconds: { type: 'string', default: '8' },
    size: { type: 'string', default: '200' },
    pods: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '2' },
  },
});
const PPS = Number(args.pps);
const SECONDS = Number(args.seconds);
const SIZE = Number(args.size);

async function childPids(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
  }
  return out;
}

/** Records in a pcap file, by walking its record headers. */
async function countRecords(path: string): Promise<number> {
  const buf = await readFile(path);
  let n = 0;
  for (let off = 24; off + 16 <= buf.length; off += 16 + buf.readUInt32LE(off + 8)) n++;
  return n;
}

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    process.stdout.write(`kube-pcap capture benchmark: UDP at ${PPS} packets/s of ${SIZE} bytes for ${SECONDS} s between two pods on one node\n`);
    const cp = await ControlPlane.start({ bindAddress: '0.0.0.0', extraAddresses: [process.env.KUBE_PCAP_BRIDGE_IP!] });
    td.teardown(() => cp.stop());
    const c = new TestCluster(cp.info, cp);
    const w = await captureWorld(td, c, { nodes: 1 });
    const node = w.nodes[0]!;
    const sender = await w.addPod(node, 'sender', { app: 'sender' });
    const receiver = await w.addPod(node, 'receiver', { app: 'receiver' });
    receiver.ns.spawn(td, 'iperf3-server', 'iperf3', ['-s', '-B', receiver.ip], w.logDir);
    await waitFor(async () => (await receiver.ns.exec('ss', ['-lun'])).includes(':5201') || (await receiver.ns.exec('ss', ['-ltn'])).includes(':5201'), { what: 'iperf3 to listen', timeoutMs: 10_000 });
    const traffic = async (): Promise<void> => {
      // -b in bits/s of payload: packets/s x payload bytes x 8.
      await sender.ns.exec('iperf3', ['-c', receiver.ip, '-u', '-b', String(PPS * SIZE * 8), '-l', String(SIZE), '-t', String(SECONDS), '-B', sender.ip]);
    };
    const bpf = 'udp and port 5201';
    const scratch = await scratchDir(td, 'bench-capture');

    async function bare(round: number): Promise<{ pps: number; drops: number; cpu: number; packets: number }> {
      const file = join(scratch, `bare-${round}.pcap`);
      const p = node.ns.spawn(td, `bare-tcpdump-${round}`, 'tcpdump', ['-i', sender.hostIface, '-w', file, '-n', '-B', '4096', bpf], w.logDir);
      await waitFor(async () => (await p.logTail()).includes('listening on'), { what: 'tcpdump to listen', timeoutMs: 10_000 });
      const cpu0 = await cpuSeconds(p.pid);
      await traffic();
      const cpu = (await cpuSeconds(p.pid)) - cpu0;
      await p.stop(5000, 'SIGINT');
      const stats = await p.logTail(10);
      const drops = Number(/(\d+) packets? dropped by kernel/.exec(stats)?.[1] ?? NaN);
      const packets = await countRecords(file);
      return { pps: packets / SECONDS, drops, cpu, packets };
    }

    // The agent keeps every file for the count (no rotation limit gets in the way).
    const agent = w.agents.get('node-1')!;
    await agent.proc.stop();
    const bigAgent = await w.startAgent(node, ['--capture-max-size-bytes=1000000000', '--capture-max-files=2']);
    const scraper = await metricsReaderToken(c);
    const metric = (name: string, capture?: string): Promise<number> => agentMetric(bigAgent, w.pki, scraper, name, capture === undefined ? undefined : `capture="${capture}"`);
    async function viaAgent(round: number): Promise<{ pps: number; drops: number; cpu: number; packets: number }> {
      const name = `bench-${round}`;
      await w.applyCapture(name, `  selector: app == "sender"\n  filters: [{protocol: UDP, ports: [5201]}]`);
      await w.waitForState(name, 'node-1', 'WaitingForTraffic');
      const procs = [bigAgent.proc.pid, ...(await childPids(bigAgent.proc.pid))];
      const cpu0 = (await Promise.all(procs.map(cpuSeconds))).reduce((a, b) => a + b, 0);
      await traffic();
      // Wait until everything is written and tcpdump has reported its drops (every 5 s).
      let last = -1;
      const doneAt = Date.now();
      const packets = await waitFor(async () => {
        const n = await metric('kube_pcap_agent_packets_written_total', name);
        const settled = n === last && Date.now() - doneAt > 6000;
        last = n;
        return settled ? n : undefined;
      }, { what: 'the agent to write the last packets', timeoutMs: 30_000, intervalMs: 1000 });
      const cpu = (await Promise.all(procs.map((p) => cpuSeconds(p).catch(() => 0)))).reduce((a, b) => a + b, 0) - cpu0;
      const drops = await metric('kube_pcap_agent_kernel_drops');
      await c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name });
      return { pps: packets / SECONDS, drops, cpu, packets };
    }

    const rows: string[] = [];
    const ratios: number[] = [];
    for (let r = 0; r < Number(args.rounds); r++) {
      const b = await bare(r);
      const a = await viaAgent(r);
      ratios.push(a.pps / b.pps);
      rows.push(`  round ${r + 1}: bare tcpdump ${b.pps.toFixed(0)} pkt/s (${b.packets} packets, ${b.drops} kernel drops, ${b.cpu.toFixed(2)} CPU-s) | agent ${a.pps.toFixed(0)} pkt/s (${a.packets} packets, ${a.drops} kernel drops, ${a.cpu.toFixed(2)} CPU-s, agent + its tcpdump) | ratio ${(a.pps / b.pps).toFixed(3)}`);
      process.stdout.write(`${rows[rows.length - 1]}\n`);
    }

    // Time from a new pod's IP to its first captured packet.
    await w.applyCapture('latency', '  selector: app == "latency"\n  filters: [{protocol: UDP, ports: [53]}]');
    const delays: number[] = [];
    for (let i = 0; i < Number(args.pods); i++) {
      const pod = await w.topo.addPod(node, w.ns, `latency-${i}`);
      startDnsSender(td, pod, w.dns.ip, `lat${i}`, 0, 10, w.logDir);
      const ipAt = Date.now() / 1000;
      await createPodObject(c, { namespace: w.ns, name: pod.name, node: w.nodeName('node-1'), ip: pod.ip, labels: { app: 'latency' } });
      const file = join(w.captureDir('node-1', 'latency'), `${pod.name}_${pod.hostIface}.pcap`);
      const first = await waitFor(async () => (await readPcap(file).catch(() => []))[0], { what: `the first packet of ${pod.name}`, timeoutMs: 20_000 });
      delays.push((first.time - ipAt) * 1000);
    }
    process.stdout.write([
      '',
      `packet rate agent/bare tcpdump: ${ratios.map((x) => x.toFixed(3)).join(', ')} (median ${percentile(ratios, 50).toFixed(3)}; target >= 0.9 with no more kernel drops)`,
      `new pod IP -> first captured packet, ${delays.length} pods: p50 ${percentile(delays, 50).toFixed(0)} ms, p95 ${percentile(delays, 95).toFixed(0)} ms (max ${Math.max(...delays).toFixed(0)} ms)`,
      '',
    ].join('\n'));
  } finally {
    await td.run();
  }
}

runBench(main);
