// npm run bench:live — the live stream's cost and delay with real traffic (iperf3 UDP between
// two pods on one node at a fixed rate), real agents and a real gateway, and a second node
// whose matching pod is quiet: the gateway must wait for its watermark before sending the
// busy node's packets, as it would in any cluster:
//   - latency from packet to viewer: the viewer's clock when a packet arrives minus the
//     packet's own (kernel) timestamp, same host; p50/p99/max, through the gateway, and at the
//     agent's own live stream (read as the gateway reads it): the difference is the
//     watermark's share, the rest is libpcap's buffering, tcpdump's flush, the agent's batch
//     and its follower's tick;
//   - CPU of the agent and the gateway per 10 000 packets/s while one viewer watches, against
//     the same traffic with nobody watching (run first, in the same script).
//
//   npm run bench:live [-- --rate 10000 --seconds 20 --size 200]
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { chunkTap } from '../src/flow/chunk-tap.js';
import { parseArgs } from 'node:util';
import { createZstdDecompress } from 'node:zlib';
import { Agent, request } from 'undici';
import { BlockType, PcapngBlockReader } from '../src/pcap/pcapng-reader.js';
import { captureWorld } from '../test/harness/capture-fixture.js';
import { REPO_ROOT } from '../test/harness/control-plane.js';
import { AGENT_SERVER_NAME, startGateway, SYSTEM_NAMESPACE } from '../test/harness/kube-pcap.js';
import { waitFor } from '../test/harness/wait.js';
import { benchControlPlane, cpuSeconds, percentile, runBench, Teardowns, udpPair } from './lib.js';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '20' },
    size: { type: 'string', default: '200' },
  },
});
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const SIZE = Number(args.size);

interface Watch { latenciesMs: number[]; packets: number; stop(): void; done: Promise<void> }

/** Reads a live pcapng as it comes, noting each packet's delay (now − its timestamp). */
function watch(res: Promise<{ body: AsyncIterable<Buffer> }>, abort: AbortController): Watch {
  const w: Watch = { latenciesMs: [], packets: 0, stop: () => abort.abort(), done: Promise.resolve() };
  w.done = (async () => {
    const r = new PcapngBlockReader(Readable.from((await res).body), 'live');
    while (await r.next()) {
      if (r.type !== BlockType.EPB) continue;
      const us = r.buf.readUInt32LE(r.at + 12) * 4294967296 + r.buf.readUInt32LE(r.at + 16);
      w.latenciesMs.push(Date.now() - us / 1000);
      w.packets++;
    }
  })().catch(() => undefined);
  return w;
}

/** Until no packet has arrived for two seconds. */
async function settled(v: Watch): Promise<void> {
  let last = -1;
  await waitFor(async () => {
    const now = v.packets;
    if (now === last) return true;
    last = now;
    return undefined;
  }, { what: 'the stream to settle', timeoutMs: 20_000, intervalMs: 2000 });
}

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    process.stdout.write(`kube-pcap live stream benchmark: ${RATE} UDP packets/s of ${SIZE} bytes for ${SECONDS} s per phase; two nodes, one busy, one quiet\n`);
    const c = await benchControlPlane(td);
    const w = await captureWorld(td, c, { nodes: 2 });
    const { send } = await udpPair(td, w, w.nodes[0]!);
    await w.addPod(w.nodes[1]!, 'quiet', { app: 'sender' });
    const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
    for (const f of ['devops-serviceaccount.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
    const token = await c.tokenFor(w.ns, 'devops-sa');
    await w.applyCapture('live', '  selector: app == "sender"\n  filters: [{protocol: UDP, ports: [5201]}]');
    for (const n of ['node-1', 'node-2']) await w.waitForState('live', n, 'WaitingForTraffic');
    const gw = await startGateway(td, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: ['--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0'], sourceMaps: false });
    const agent = w.agents.get('node-1')!;
    const traffic = async (): Promise<void> => {
      await send(RATE, SIZE, SECONDS);
    };
    const agents = [...w.agents.values()];
    const cpu = async (): Promise<{ agent: number; gateway: number }> => ({ agent: (await Promise.all(agents.map((x) => cpuSeconds(x.proc.pid)))).reduce((x, y) => x + y, 0), gateway: await cpuSeconds(gw.proc.pid) });
    const delta = (a: { agent: number; gateway: number }, b: { agent: number; gateway: number }): { agent: number; gateway: number } => ({ agent: b.agent - a.agent, gateway: b.gateway - a.gateway });

    // 1. Nobody watching.
    const c0 = await cpu();
    await traffic();
    const idle = delta(c0, await cpu());

    // 2. One viewer through the gateway; 2b. the same viewer asking for zstd (flushed after
    // every batch): what compression adds.
    const ca = await readFile(w.pki.ca.certFile);
    const gwDispatcher = new Agent({ connect: { ca } });
    td.teardown(() => gwDispatcher.close());
    /** A viewer through the gateway during one round of traffic: what it saw, what it cost, its bytes on the wire. */
    const viewer = async (coding?: 'zstd'): Promise<{ v: Watch; cost: { agent: number; gateway: number }; wireBytes: number }> => {
      const abort = new AbortController();
      let wireBytes = 0;
      const v = watch(request(`${gw.url}/packet-capture/stream/${w.ns}/live`, { dispatcher: gwDispatcher, headers: { authorization: `Bearer ${token}`, ...(coding ? { 'accept-encoding': coding } : {}) }, signal: abort.signal, bodyTimeout: 0 }).then((res) => {
        if (res.headers['content-encoding'] !== coding) throw new Error(`asked for ${coding ?? 'identity'}, got Content-Encoding ${String(res.headers['content-encoding'])}`);
        const counted = res.body.pipe(chunkTap((chunk) => (wireBytes += chunk.length)));
        return { body: coding ? counted.pipe(createZstdDecompress()) : counted };
      }), abort);
      td.teardown(() => v.stop());
      const c0 = await cpu();
      await traffic();
      await waitFor(async () => (v.packets > 0 ? true : undefined), { what: `packets through the gateway${coding ? `, ${coding}` : ''}`, timeoutMs: 10_000 });
      const cost = delta(c0, await cpu());
      // What is still on its way arrives within the watermark's lag.
      await settled(v);
      v.stop();
      return { v, cost, wireBytes };
    };
    const { v: g, cost: watched } = await viewer();
    const { v: z, cost: watchedZstd, wireBytes: zstdWireTotal } = await viewer('zstd');

    // 3. The agent's own live stream, read as the gateway reads it.
    const agentToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
    const agentDispatcher = new Agent({ connect: { ca, cert: await readFile(w.pki.gatewayClient.certFile), key: await readFile(w.pki.gatewayClient.keyFile), servername: AGENT_SERVER_NAME } });
    td.teardown(() => agentDispatcher.close());
    const direct = new AbortController();
    const a = watch(request(`https://${agent.address}:${agent.port}/v1/captures/${w.ns}/live/stream`, { dispatcher: agentDispatcher, headers: { authorization: `Bearer ${agentToken}` }, signal: direct.signal, bodyTimeout: 0 }), direct);
    td.teardown(() => a.stop());
    await traffic();
    await waitFor(async () => (a.packets > 0 ? true : undefined), { what: 'packets from the agent', timeoutMs: 10_000 });
    await settled(a);
    a.stop();

    const ms = (xs: number[], p: number): string => percentile(xs, p).toFixed(0);
    const per10k = (x: number): string => ((x / SECONDS) * (10_000 / RATE)).toFixed(3);
    process.stdout.write([
      '',
      `packets seen: through the gateway ${g.packets}, from the agent ${a.packets} (${RATE * SECONDS} sent per phase)`,
      `latency packet -> viewer through the gateway: p50 ${ms(g.latenciesMs, 50)} ms, p99 ${ms(g.latenciesMs, 99)} ms, max ${ms(g.latenciesMs, 100)} ms  (target p99 < 3000 ms)`,
      `latency packet -> the busy node's agent's live stream: p50 ${ms(a.latenciesMs, 50)} ms, p99 ${ms(a.latenciesMs, 99)} ms  (libpcap's buffer timeout, tcpdump's flush every 250 ms, the agent's batch, its follower's 100 ms tick)`,
      `the gateway's share (waiting for the quiet node's watermark, which trails its clock by about half a second once its tcpdump's flush is proven; the merge): p50 ${(percentile(g.latenciesMs, 50) - percentile(a.latenciesMs, 50)).toFixed(0)} ms, p99 ${(percentile(g.latenciesMs, 99) - percentile(a.latenciesMs, 99)).toFixed(0)} ms`,
      `CPU seconds per second per 10 000 packets/s (both agents + the gateway): nobody watching agents ${per10k(idle.agent)} + gateway ${per10k(idle.gateway)}; one viewer agents ${per10k(watched.agent)} + gateway ${per10k(watched.gateway)}; the stream's own cost agents ${per10k(watched.agent - idle.agent)} + gateway ${per10k(watched.gateway - idle.gateway)}`,
      `the same viewer with Accept-Encoding: zstd (${z.packets} packets, ${(zstdWireTotal / 2 ** 20).toFixed(1)} MiB on the wire): latency p50 ${ms(z.latenciesMs, 50)} ms, p99 ${ms(z.latenciesMs, 99)} ms, max ${ms(z.latenciesMs, 100)} ms; gateway ${per10k(watchedZstd.gateway)} (identity ${per10k(watched.gateway)})`,
      '',
    ].join('\n'));
  } finally {
    await td.run();
  }
}

runBench(main);
