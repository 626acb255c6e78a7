// npm run bench:capture — the agent's capture path against bare `tcpdump -w file`, on the
// same pod interface, with the same traffic (iperf3 UDP between two pods on one node), at
// fixed rates (the highest achievable rate depends on the capture's own CPU).
//
// Prints for each rate: packets written, kernel drops and CPU seconds of bare tcpdump and of
// the agent with its tcpdump (split), the agent's idle CPU over a window as long without
// traffic (reconcile loop, status, timers), and the ratios: packets written agent/bare
// (target >= 0.999, no more drops) and capture CPU per packet agent/bare (target <= 1.2, the
// agent's idle CPU taken out and reported beside it), and the agent's resident memory. A last
// row runs at the highest rate iperf3 reaches between the two pods here (probed first with no
// capture running; `--max false` leaves it out). Those runs keep one file (1 GB files), as bare
// `tcpdump -w file` does. Then the same with rotation, at `--rotation-rates`: the agent with
// 10 MB files (captureMaxSizeBytes' default: it copies each file out, docs/agent.md) against
// bare tcpdump and against tcpdump rotating itself (`-C 10`). Then the time from a new pod's
// IP to its first captured packet, p50/p95.
//
//   npm run bench:capture [-- --rates 50000,100000 --rotation-rates 50000,100000 --packets 2000000 --size 200 --pods 20 --max true]
import { open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { captureWorld, readPcap } from '../test/harness/capture-fixture.js';
import { agentMetric, metricsReaderToken, scratchDir } from '../test/harness/kube-pcap.js';
import { startDnsSender } from '../test/harness/dns-sender.js';
import { createPodObject } from '../test/harness/topology.js';
import { waitFor } from '../test/harness/wait.js';
import { benchControlPlane, runBench, Teardowns, cpuSeconds, percentile, rssBytes, threadCpuSeconds, udpPair } from './lib.js';

const { values: args } = parseArgs({
  options: {
    rates: { type: 'string', default: '50000,100000' },
    // Rates of the rows with 10 MB files ('' leaves them out).
    'rotation-rates': { type: 'string', default: '50000,100000' },
    packets: { type: 'string', default: '2000000' },
    size: { type: 'string', default: '200' },
    pods: { type: 'string', default: '20' },
    max: { type: 'string', default: 'true' },
    // Writes a V8 CPU profile of the agent there (read it with Chrome's DevTools, or any .cpuprofile reader).
    'cpu-prof': { type: 'string' },
    // More agent flags for the measured agent, e.g. --agent-arg=--capture-max-files=5.
    'agent-arg': { type: 'string', multiple: true, default: [] },
  },
});
const RATES = args.rates.split(',').filter((r) => r !== '').map(Number);
const ROTATION_RATES = args['rotation-rates'].split(',').filter((r) => r !== '').map(Number);
/** captureMaxSizeBytes' default, and tcpdump's -C in its unit. */
const ROTATION_BYTES = 10_000_000;
const PACKETS = Number(args.packets);
const SIZE = Number(args.size);
/** After the traffic, what the agent still has to write gets this long before its CPU is read. */
const DRAIN_SECONDS = 2;

async function childPids(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
  }
  return out;
}

/**
 * Files are written into the sandbox's tmpfs, and in this VM the first write to a page of
 * memory the guest has not touched since boot costs the writer several times what a reused
 * page costs: four 400 MB files in a row cost 0.12, 0.12, 0.69 and 1.11 s of system time
 * (dd), whichever program wrote them, which made a run's ratio a coin toss between 1.2 and
 * 5.9. A node's disk writes through a page cache that is warm. So as much memory as the
 * runs will hold is written and given back first; then the same four files cost 0.11-0.12 s
 * each.
 */
async function warmPages(dir: string, bytes: number): Promise<void> {
  const file = join(dir, 'warm');
  const block = Buffer.alloc(1 << 20, 1);
  const fh = await open(file, 'w');
  try {
    for (let done = 0; done < bytes; done += block.length) await fh.write(block);
  } finally {
    await fh.close();
  }
  await rm(file);
}
/** Several times the largest file a run holds (about 430 MB for 2 million packets). */
const WARM_BYTES = 2 * 1024 ** 3;

/** Records in a pcap file, by walking its record headers. */
async function countRecords(path: string): Promise<number> {
  const buf = await readFile(path);
  let n = 0;
  for (let off = 24; off + 16 <= buf.length; off += 16 + buf.readUInt32LE(off + 8)) n++;
  return n;
}

const mib = (b: number): string => `${(b / 1024 / 1024).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    process.stdout.write(`kube-pcap capture benchmark: ${PACKETS} UDP packets of ${SIZE} bytes at ${RATES.join(' and ')} packets/s between two pods on one node\n`);
    const c = await benchControlPlane(td);
    const w = await captureWorld(td, c, { nodes: 1 });
    const node = w.nodes[0]!;
    const { sender, send } = await udpPair(td, w, node);
    // What iperf3 says it sent: on two cores the capture competes with the generator, which
    // then sends fewer than asked (not a loss: the kernel drop counts say whether any was lost).
    const traffic = (pps: number): Promise<number> => send(pps, SIZE, Math.ceil(PACKETS / pps));
    const rates = [...RATES];
    if (args.max === 'true') {
      // The generator's ceiling with nothing capturing; both runs then send at it.
      const probeSeconds = 3;
      const sent = await send(0, SIZE, probeSeconds);
      const max = Math.floor(sent / probeSeconds / 1000) * 1000;
      process.stdout.write(`  iperf3's highest rate between the two pods, nothing capturing: ${Math.round(sent / probeSeconds)} packets/s (${probeSeconds} s); the last row runs at ${max}/s\n`);
      if (max > 0) rates.push(max);
    }
    const pause = (seconds: number): Promise<void> => new Promise((r) => setTimeout(r, seconds * 1000)); // a measurement window
    const bpf = 'udp and port 5201';
    const scratch = await scratchDir(td, 'bench-capture');
    await warmPages(scratch, WARM_BYTES);

    interface Run { sent: number; packets: number; drops: number; cpu: number; agentCpu?: number; tcpdumpCpu?: number; idleCpu?: number; rss?: { before: number; peak: number } }
    /** Bare tcpdump writing one file, or (`rotating`) rotating its own 10 MB files with -C. */
    async function bare(pps: number, rotating = false): Promise<Run> {
      const file = join(scratch, `bare-${pps}.pcap`);
      const p = node.ns.spawn(td, `bare-tcpdump-${pps}${rotating ? '-C' : ''}`, 'tcpdump', ['-i', sender.hostIface, '-w', file, ...(rotating ? ['-C', String(ROTATION_BYTES / 1e6), '-Z', 'root'] : []), '-n', '-B', '4096', bpf], w.logDir);
      await waitFor(async () => (await p.logTail()).includes('listening on'), { what: 'tcpdump to listen', timeoutMs: 10_000 }).catch(async (err: Error) => {
        throw new Error(`${err.message}; it said: ${await p.logTail(10)}`);
      });
      const cpu0 = await cpuSeconds(p.pid);
      const sent = await traffic(pps);
      const cpu = (await cpuSeconds(p.pid)) - cpu0;
      await p.stop(5000, 'SIGINT');
      const stats = await p.logTail(10);
      const drops = Number(/(\d+) packets? dropped by kernel/.exec(stats)?.[1] ?? NaN);
      // -C writes file, file1, file2, ...
      const files = (await readdir(scratch)).filter((f) => f.startsWith(`bare-${pps}.pcap`));
      let packets = 0;
      for (const f of files) packets += await countRecords(join(scratch, f));
      // The agent's run writes into the memory this file gave back (see warmPages).
      for (const f of files) await rm(join(scratch, f));
      return { sent, packets, drops, cpu };
    }

    // The agent keeps every file for the count (no rotation limit gets in the way).
    const agent = w.agents.get('node-1')!;
    await agent.proc.stop();
    const nodeOptions = process.env.NODE_OPTIONS;
    if (args['cpu-prof']) process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --cpu-prof --cpu-prof-dir=${args['cpu-prof']}`.trim();
    let bigAgent = await w.startAgent(node, ['--capture-max-size-bytes=1000000000', '--capture-max-files=2', ...args['agent-arg']]);
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
    const scraper = await metricsReaderToken(c);
    const metric = (name: string, capture?: string): Promise<number> => agentMetric(bigAgent, w.pki, scraper, name, capture === undefined ? undefined : `capture="${capture}"`);
    const sum = async (pids: number[]): Promise<number> => (await Promise.all(pids.map((p) => cpuSeconds(p).catch(() => 0)))).reduce((a, b) => a + b, 0);
    async function viaAgent(pps: number): Promise<Run> {
      const name = `bench-${pps}`;
      await w.applyCapture(name, `  selector: app == "sender"\n  filters: [{protocol: UDP, ports: [5201]}]`);
      await w.waitForState(name, 'node-1', 'WaitingForTraffic');
      const tcpdumps = await childPids(bigAgent.proc.pid);
      const window = Math.ceil(PACKETS / pps) + DRAIN_SECONDS;
      // The same window without traffic: what the agent costs doing nothing.
      const idle0 = await cpuSeconds(bigAgent.proc.pid);
      await pause(window);
      const idleCpu = (await cpuSeconds(bigAgent.proc.pid)) - idle0;
      const agent0 = await cpuSeconds(bigAgent.proc.pid);
      const threads0 = await threadCpuSeconds(bigAgent.proc.pid);
      const tcpdump0 = await sum(tcpdumps);
      // Resident memory sampled while it captures: flat in the rate and the length, or not.
      const rssBefore = await rssBytes(bigAgent.proc.pid);
      let rssPeak = rssBefore;
      const sampler = setInterval(() => {
        rssBytes(bigAgent.proc.pid).then((b) => { rssPeak = Math.max(rssPeak, b); }, () => undefined);
      }, 250);
      let sent = 0;
      try {
        sent = await traffic(pps);
        await pause(DRAIN_SECONDS);
      } finally {
        clearInterval(sampler);
      }
      const agentCpu = (await cpuSeconds(bigAgent.proc.pid)) - agent0;
      const threads = [...(await threadCpuSeconds(bigAgent.proc.pid))].map(([n, t]) => {
        const b = threads0.get(n) ?? { user: 0, sys: 0 };
        return `${n} ${(t.user - b.user).toFixed(2)} user + ${(t.sys - b.sys).toFixed(2)} sys`;
      });
      process.stdout.write(`    the agent's threads while capturing: ${threads.join(', ')}\n`);
      const tcpdumpCpu = (await sum(tcpdumps)) - tcpdump0;
      // Everything written, and tcpdump's drop count reported (every 5 s).
      let last = -1;
      const doneAt = Date.now();
      const packets = await waitFor(async () => {
        const n = await metric('kube_pcap_agent_packets_written_total', name);
        const settled = n === last && Date.now() - doneAt > 6000;
        last = n;
        return settled ? n : undefined;
      }, { what: 'the agent to write the last packets', timeoutMs: 30_000, intervalMs: 1000 });
      const drops = await metric('kube_pcap_agent_kernel_drops');
      await c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name });
      // The next rate starts from a clean disk: freeing this run's file is not its cost.
      await waitFor(async () => (await readdir(w.captureDir('node-1', name)).catch(() => undefined)) === undefined, { what: `the files of ${name} to be removed`, timeoutMs: 60_000 });
      return { sent, packets, drops, cpu: agentCpu + tcpdumpCpu, agentCpu, tcpdumpCpu, idleCpu, rss: { before: rssBefore, peak: rssPeak } };
    }

    /**
     * A short capture with traffic before the measured ones: the agent's first capture warms
     * its code up (measured: the first row's idle window took 0.9 CPU-s, the next ones 0.3).
     */
    async function warmUp(): Promise<void> {
      const name = 'bench-warm-up';
      await w.applyCapture(name, `  selector: app == "sender"\n  filters: [{protocol: UDP, ports: [5201]}]`);
      await w.waitForState(name, 'node-1', 'WaitingForTraffic');
      await send(10_000, SIZE, 2);
      await pause(2);
      await c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name });
      await waitFor(async () => (await readdir(w.captureDir('node-1', name)).catch(() => undefined)) === undefined, { what: `the files of ${name} to be removed`, timeoutMs: 60_000 });
    }

    const summary: string[] = [];
    let rotatingAgent = false;
    await warmUp();
    const rows: { pps: number; rotating: boolean }[] = [...rates.map((pps) => ({ pps, rotating: false })), ...ROTATION_RATES.map((pps) => ({ pps, rotating: true }))];
    for (const { pps, rotating } of rows) {
      if (rotating && !rotatingAgent) {
        rotatingAgent = true;
        // Every file kept for the count: 2 million packets make about fifty.
        await bigAgent.proc.stop(30_000);
        bigAgent = await w.startAgent(node, [`--capture-max-size-bytes=${ROTATION_BYTES}`, '--capture-max-files=200', ...args['agent-arg']]);
        await warmUp();
        process.stdout.write(`  with rotation: the agent with ${ROTATION_BYTES / 1e6} MB files against bare tcpdump writing one file, and bare tcpdump -C ${ROTATION_BYTES / 1e6} rotating its own\n`);
      }
      const b = await bare(pps);
      const bc = rotating ? await bare(pps, true) : undefined;
      const a = await viaAgent(pps);
      const perPacket = (x: number, n: number): number => (x / n) * 1e6;
      const cpuRatio = perPacket(a.cpu - a.idleCpu!, a.packets) / perPacket(b.cpu, b.packets);
      const rawRatio = perPacket(a.cpu, a.packets) / perPacket(b.cpu, b.packets);
      process.stdout.write([
        `  ${pps} packets/s${rotating ? `, ${ROTATION_BYTES / 1e6} MB files` : ''}:`,
        `    bare tcpdump -w file: ${b.sent} sent, ${b.packets} packets written, ${b.drops} kernel drops, ${b.cpu.toFixed(2)} CPU-s (${perPacket(b.cpu, b.packets).toFixed(2)} CPU-us/packet)`,
        ...(bc ? [`    bare tcpdump -w file -C ${ROTATION_BYTES / 1e6}: ${bc.sent} sent, ${bc.packets} packets written, ${bc.drops} kernel drops, ${bc.cpu.toFixed(2)} CPU-s (${perPacket(bc.cpu, bc.packets).toFixed(2)} CPU-us/packet); agent/tcpdump -C: ${(perPacket(a.cpu - a.idleCpu!, a.packets) / perPacket(bc.cpu, bc.packets)).toFixed(2)}`] : []),
        `    agent: ${a.sent} sent, ${a.packets} packets written, ${a.drops} kernel drops, ${a.cpu.toFixed(2)} CPU-s = tcpdump ${a.tcpdumpCpu!.toFixed(2)} + agent ${a.agentCpu!.toFixed(2)} (of which idle, measured over as long without traffic: ${a.idleCpu!.toFixed(2)})`,
        `    agent's resident memory: ${mib(a.rss!.before)} before, ${mib(a.rss!.peak)} at most while capturing`,
        `    packets written agent/bare ${(a.packets / b.packets).toFixed(3)} (target >= 0.999); capture CPU per packet agent/bare ${cpuRatio.toFixed(2)} without the idle CPU, ${rawRatio.toFixed(2)} with it (target <= 1.2)`,
        '',
      ].join('\n'));
      summary.push(`${pps}/s${rotating ? ` (${ROTATION_BYTES / 1e6} MB files)` : ''}: written ${(a.packets / b.packets).toFixed(3)} (of sent: agent ${(a.packets / a.sent).toFixed(4)}, bare ${(b.packets / b.sent).toFixed(4)}), drops ${a.drops} (bare ${b.drops}), CPU/packet ${cpuRatio.toFixed(2)} (${rawRatio.toFixed(2)} with idle), RSS ${mib(a.rss!.peak)}`);
    }

    // The latency of new pods is the default agent's: the one above reserves 3 GB of disk per
    // pod interface (1 GB files), and the scratch disk refused the fifth pod. Its exit also
    // writes the CPU profile, given time.
    await bigAgent.proc.stop(30_000);
    await w.startAgent(node);
    // Time from a new pod's IP to its first captured packet.
    await w.applyCapture('latency', '  selector: app == "latency"\n  filters: [{protocol: UDP, ports: [53]}]');
    const delays: number[] = [];
    for (let i = 0; i < Number(args.pods); i++) {
      const pod = await w.topo.addPod(node, w.ns, `latency-${i}`);
      startDnsSender(td, pod, w.dns.ip, `lat${i}`, 0, 10, w.logDir);
      const ipAt = Date.now() / 1000;
      await createPodObject(c, { namespace: w.ns, name: pod.name, node: w.nodeName('node-1'), ip: pod.ip, labels: { app: 'latency' } });
      const file = join(w.captureDir('node-1', 'latency'), `${pod.name}_${pod.hostIface}.pcap`);
      const first = await waitFor(async () => (await readPcap(file).catch(() => []))[0], { what: `the first packet of ${pod.name}`, timeoutMs: 20_000 }).catch(async (err: Error) => {
        throw new Error(`${err.message}\nthe agent's last words:\n${await [...w.agents.values()].pop()!.proc.logTail(60)}`);
      });
      delays.push((first.time - ipAt) * 1000);
    }
    process.stdout.write([
      '',
      `agent/bare tcpdump: ${summary.join('; ')}`,
      `new pod IP -> first captured packet, ${delays.length} pods: p50 ${percentile(delays, 50).toFixed(0)} ms, p95 ${percentile(delays, 95).toFixed(0)} ms (max ${Math.max(...delays).toFixed(0)} ms)`,
      '',
    ].join('\n'));
  } finally {
    await td.run();
  }
}

runBench(main);
