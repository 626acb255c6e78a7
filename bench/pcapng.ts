// npm run bench:pcapng — the merged files.pcapng against files.zip of the same capture, in one
// run, through the same gateway and agents, with the same client (curl):
//   - throughput in MiB/s and packets/s at 1500-byte and 200-byte packets (target: files.pcapng
//     >= 0.8x files.zip's MiB/s at 1500 bytes; merging is per-record work, the zip is not);
//   - the gateway's RSS while it merges >= 1 GiB, sampled every 100 ms (flat: the merge holds one
//     read buffer and one packet per node, whatever the capture's size);
//   - CPU seconds per GiB of the gateway and of the agents (who merge their own files first).
// Every pod's packets interleave in time with every other pod's, on every node, so the merge
// really alternates between sources; each pod's packets are spread over several rotated files.
//
//   npm run bench:pcapng [-- --nodes 2 --pods 2 --files 2 --gib 1 --small-mib 256 --rounds 2]
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeGlobalHeader } from '../src/pcap/format.js';
import { bridgeAddress } from '../test/harness/addresses.js';
import { run } from '../test/harness/http.js';
import { applyNodeStatus } from '../test/harness/node-reports.js';
import { dnsQueryFrame } from '../test/harness/pcap-fixtures.js';
import { rssBytes } from '../test/harness/processes.js';
import { publishAgents, scratchDir, startAgent, startGateway, type AgentHandle } from '../test/harness/kube-pcap.js';
import { benchCluster, cpuSeconds, percentile, runBench, Teardowns, threadCpuSeconds } from './lib.js';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '2' },
    pods: { type: 'string', default: '2' },
    files: { type: 'string', default: '2' },
    gib: { type: 'string', default: '1' },
    'small-mib': { type: 'string', default: '256' },
    rounds: { type: 'string', default: '2' },
  },
});
const NODES = Number(args.nodes);
const PODS = Number(args.pods);
const FILES = Number(args.files);
const ROUNDS = Number(args.rounds);
const BASE_MICROS = 1_700_000_000_000_000;

interface Workload { capture: string; frame: number; bytes: number; packets: number }

/**
 * One pod's files: `count` records of `frame` bytes, the pod's packet i at BASE + 10 µs × i +
 * `offset` µs (so every pod's packets interleave with every other's), cut into FILES files
 * named as rotation names them, the last one live.
 */
async function writePod(dir: string, base: string, frame: number, count: number, offset: number): Promise<number> {
  const payload = Buffer.alloc(frame);
  dnsQueryFrame('192.0.2.10', '192.0.2.53', 40000, 1, 'bulk.storefront.example').copy(payload);
  const recLen = 16 + frame;
  const perBlock = Math.max(1, Math.floor((1 << 20) / recLen));
  const block = Buffer.alloc(perBlock * recLen);
  for (let r = 0; r < perBlock; r++) {
    block.writeUInt32LE(frame, r * recLen + 8);
    block.writeUInt32LE(frame, r * recLen + 12);
    payload.copy(block, r * recLen + 16);
  }
  let bytes = 0;
  const perFile = Math.ceil(count / FILES);
  for (let f = 0; f < FILES; f++) {
    const name = f === FILES - 1 ? `${base}.pcap` : `${base}-${BASE_MICROS + 1_000_000_000 + f}.pcap`;
    const fh = await open(join(dir, name), 'w');
    try {
      bytes += (await fh.write(encodeGlobalHeader())).bytesWritten;
      for (let i = f * perFile; i < Math.min(count, (f + 1) * perFile);) {
        const n = Math.min(perBlock, Math.min(count, (f + 1) * perFile) - i);
        for (let r = 0; r < n; r++) {
          const us = BASE_MICROS + (i + r) * 10 + offset;
          block.writeUInt32LE(Math.floor(us / 1e6), r * recLen);
          block.writeUInt32LE(us % 1e6, r * recLen + 4);
        }
        bytes += (await fh.write(block, 0, n * recLen)).bytesWritten;
        i += n;
      }
    } finally {
      await fh.close();
    }
  }
  return bytes;
}

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    const loads: Workload[] = [
      { capture: 'bench-1500', frame: 1500, bytes: Number(args.gib) * 2 ** 30, packets: 0 },
      { capture: 'bench-200', frame: 200, bytes: Number(args['small-mib']) * 2 ** 20, packets: 0 },
    ];
    process.stdout.write(`kube-pcap merged pcapng benchmark: ${NODES} nodes x ${PODS} pods x ${FILES} files; ${loads.map((l) => `${(l.bytes / 2 ** 20).toFixed(0)} MiB of ${l.frame}-byte packets`).join(', ')}\n`);
    const { c, kube, pki, logDir, ns } = await benchCluster(td, 'bench-logs', loads.map((l) => l.capture));
    const roots = await scratchDir(td, 'bench-pcapng');
    const agents: AgentHandle[] = [];
    for (let n = 0; n < NODES; n++) {
      const node = `node-${n + 1}`;
      const root = join(roots, node);
      for (const l of loads) {
        const dir = join(root, ns, l.capture);
        await mkdir(dir, { recursive: true });
        const perPod = Math.floor(l.bytes / (NODES * PODS) / (16 + l.frame));
        const names: string[] = [];
        for (let p = 0; p < PODS; p++) {
          const base = `pod-${n}-${p}_cali${n}x${p}`;
          await writePod(dir, base, l.frame, perPod, n * PODS + p);
          l.packets += perPod;
          for (let f = 0; f < FILES; f++) names.push(f === FILES - 1 ? `${base}.pcap` : `${base}-${BASE_MICROS + 1_000_000_000 + f}.pcap`);
        }
        await applyNodeStatus(kube, { namespace: ns, name: l.capture }, `kube-pcap-agent/${node}`, { node, fileNames: names.sort(), state: 'Finished' });
      }
      agents.push(await startAgent(td, c, { node, address: await bridgeAddress(td), captureDir: root, pki, logDir, extraArgs: ['--log-level=info'], sourceMaps: false }));
    }
    await publishAgents(c, 'bench-agents', agents);
    const gw = await startGateway(td, c, { pki, logDir, agentService: 'bench-agents', extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0'], sourceMaps: false });
    const token = await c.tokenFor(ns, 'devops-sa');
    const cpuOf = async (pids: number[]): Promise<number> => (await Promise.all(pids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
    const mib = (b: number): string => (b / 2 ** 20).toFixed(0);

    /** The agents' CPU seconds by thread name (Node's main thread, libuv's pool, V8's helpers), user+sys. */
    const agentThreads = async (): Promise<Map<string, number>> => {
      const out = new Map<string, number>();
      for (const a of agents) for (const [n, t] of await threadCpuSeconds(a.proc.pid)) out.set(n, (out.get(n) ?? 0) + t.user + t.sys);
      return out;
    };
    /** The last round's CPU by thread, per download and packet size. */
    const threadLines = new Map<string, string>();

    async function download(l: Workload, file: 'files.zip' | 'files.pcapng'): Promise<{ bytes: number; seconds: number; gwCpu: number; agentCpu: number }> {
      const [g0, a0, t0] = [await cpuOf([gw.proc.pid]), await cpuOf(agents.map((a) => a.proc.pid)), await agentThreads()];
      const r = await run('curl', ['-sS', '--fail', '--cacert', pki.ca.certFile, '-w', '%{size_download} %{time_total}', '-H', `Authorization: Bearer ${token}`, `${gw.url}/packet-capture/download/${ns}/${l.capture}/${file}`, '-o', '/dev/null'], { timeoutMs: 900_000 });
      if (r.code !== 0) throw new Error(`curl ${file} failed: ${r.stderr}`);
      const [bytes, seconds] = r.stdout.trim().split(' ').map(Number) as [number, number];
      if (file === 'files.pcapng') {
        // Every packet is there: its EPBs alone take this much, the header blocks a little more.
        const epbs = l.packets * (32 + ((l.frame + 3) & ~3));
        if (bytes < epbs || bytes > epbs + 65536) throw new Error(`files.pcapng of ${l.capture} is ${bytes} bytes; ${l.packets} packets take ${epbs}`);
      }
      const t1 = await agentThreads();
      threadLines.set(`${file} ${l.frame}`, `  ${file} of ${l.frame}-byte packets (last round), agents' CPU s by thread: ${[...t1].map(([n, t]) => [n, t - (t0.get(n) ?? 0)] as const).filter(([, t]) => t >= 0.01).sort((a, b) => b[1] - a[1]).map(([n, t]) => `${n} ${t.toFixed(2)}`).join(', ')}`);
      return { bytes, seconds, gwCpu: (await cpuOf([gw.proc.pid])) - g0, agentCpu: (await cpuOf(agents.map((a) => a.proc.pid))) - a0 };
    }

    const idle = await rssBytes(gw.proc.pid);
    const lines: string[] = [];
    for (const l of loads) {
      const zip: { mibs: number; gw: number; ag: number }[] = [];
      const png: { mibs: number; pps: number; gw: number; ag: number }[] = [];
      const samples: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        // Interleaved, so that neither always runs on a warmer machine.
        const z = await download(l, 'files.zip');
        zip.push({ mibs: z.bytes / 2 ** 20 / z.seconds, gw: z.gwCpu / (z.bytes / 2 ** 30), ag: z.agentCpu / (z.bytes / 2 ** 30) });
        const sampler = setInterval(() => void rssBytes(gw.proc.pid).then((r) => samples.push(r), () => undefined), 100);
        const p = await download(l, 'files.pcapng').finally(() => clearInterval(sampler));
        png.push({ mibs: p.bytes / 2 ** 20 / p.seconds, pps: l.packets / p.seconds, gw: p.gwCpu / (p.bytes / 2 ** 30), ag: p.agentCpu / (p.bytes / 2 ** 30) });
        process.stdout.write(`  ${l.frame}-byte packets, round ${i + 1}: files.zip ${zip[i]!.mibs.toFixed(0)} MiB/s (${mib(z.bytes)} MiB), files.pcapng ${png[i]!.mibs.toFixed(0)} MiB/s (${mib(p.bytes)} MiB, ${(png[i]!.pps / 1000).toFixed(0)}k packets/s)\n`);
      }
      const med = (xs: number[]): number => percentile(xs, 50);
      const zMibs = med(zip.map((x) => x.mibs));
      const pMibs = med(png.map((x) => x.mibs));
      lines.push(
        `${l.frame}-byte packets (${l.packets} packets, ${mib(l.bytes)} MiB, median of ${ROUNDS}): files.zip ${zMibs.toFixed(0)} MiB/s (${((l.packets * zMibs * 2 ** 20) / l.bytes / 1000).toFixed(0)}k packets/s); files.pcapng ${pMibs.toFixed(0)} MiB/s (${(med(png.map((x) => x.pps)) / 1000).toFixed(0)}k packets/s); ratio pcapng/zip ${(pMibs / zMibs).toFixed(2)}${l.frame === 1500 ? '  (target >= 0.80)' : ''}`,
        `  CPU s per GiB: files.zip gateway ${med(zip.map((x) => x.gw)).toFixed(2)} + agents ${med(zip.map((x) => x.ag)).toFixed(2)}; files.pcapng gateway ${med(png.map((x) => x.gw)).toFixed(2)} + agents ${med(png.map((x) => x.ag)).toFixed(2)}`,
        `  gateway RSS while merging (every 100 ms): idle before ${mib(idle)} MiB, p50 ${mib(percentile(samples, 50))} MiB, max ${mib(Math.max(...samples))} MiB`,
      );
    }
    process.stdout.write(['', ...lines, ...threadLines.values(), ''].join('\n'));
  } finally {
    await td.run();
  }
}

runBench(main);
