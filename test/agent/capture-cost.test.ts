// Capture at tcpdump's cost (docs/agent.md) without giving up what files promise: tcpdump
// buffers its output (no -U, a larger stdio buffer through stdbuf), so the agent has it
// flush every 250 ms, and only while it waits for packets (src/agent/parked-signal.ts). A
// lone packet still reaches its file within about a second; a burst with flushes landing
// throughout comes through whole, every packet once, in files tshark reads cleanly.
import { readdir, readFile } from 'node:fs/promises';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { queryCounts, startDnsSender } from '../harness/dns-sender.js';
import { reportedEntry } from '../harness/node-reports.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1 });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
await w.applyCapture('cost', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
await w.waitForState('cost', 'node-1', 'WaitingForTraffic');
const dir = w.captureDir('node-1', 'cost');

/** The command lines and environments of the agent's children (its tcpdumps, started through stdbuf). */
async function tcpdumps(): Promise<{ cmd: string[]; env: string[] }[]> {
  const agentPid = w.agents.get('node-1')!.proc.pid;
  const out: { cmd: string[]; env: string[] }[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== agentPid) continue;
    const words = async (f: string): Promise<string[]> => (await readFile(`/proc/${d}/${f}`, 'utf8')).split('\0').filter((a) => a !== '');
    out.push({ cmd: await words('cmdline'), env: await words('environ') });
  }
  return out.filter((p) => p.cmd.includes('-w'));
}

t.test('tcpdump writes whole buffers: no -U, a 256 KiB output buffer', async (t) => {
  const [p] = await waitFor(async () => {
    const l = await tcpdumps();
    return l.length > 0 ? l : undefined;
  }, { what: 'the capture\'s tcpdump', timeoutMs: 10_000 });
  t.notOk(p!.cmd.includes('-U'), `no per-packet flush: ${p!.cmd.join(' ')}`);
  // stdbuf execs tcpdump with its preload library and the size in the environment.
  t.ok(p!.env.includes('_STDBUF_O=262144'), 'stdbuf gave tcpdump a 256 KiB output buffer');
});

t.test('a lone packet reaches its file within about a second, though tcpdump buffers its output', async (t) => {
  const sent = Date.now();
  await dig(client, w.dns.ip, 'lone.storefront.example');
  const seenAfter = await waitFor(async () => {
    const packets = allPackets(await readCaptureDir(dir).catch(() => new Map()));
    return packets.some((p) => p.query === 'lone.storefront.example') ? Date.now() - sent : undefined;
  }, { what: 'the lone query in the file', timeoutMs: 5_000, intervalMs: 50 });
  // libpcap hands packets over within its 1 s block timeout; the flush follows within 250 ms.
  t.ok(seenAfter < 2_000, `on disk ${seenAfter} ms after it was sent`);
});

t.test('traffic with flushes landing throughout comes through whole: every packet once, every file clean', async (t) => {
  // About 2 000 packets a second for 5 s: tcpdump writes all the while, 20 flushes are asked for.
  const N = 5_000;
  await startDnsSender(t, client, w.dns.ip, 'burst', N, 1, w.logDir).exited;
  const sent = (p: { dstPort: number }): boolean => p.dstPort === 53;
  const counts = await waitFor(async () => {
    const q = queryCounts(allPackets(await readCaptureDir(dir)).filter(sent).map((p) => p.query), 'burst');
    return q.size === N ? q : undefined;
  }, { what: `all ${N} queries in the file`, timeoutMs: 30_000, intervalMs: 500 });
  t.ok([...counts.values()].every((n) => n === 1), 'each query once: no byte written twice');
  const answers = queryCounts(allPackets(await readCaptureDir(dir)).filter((p) => !sent(p)).map((p) => p.query), 'burst');
  t.ok([...answers.values()].every((n) => n === 1), `${answers.size} answers, none twice`);
  const entry = await reportedEntry(w.kube, w.ns, 'cost', w.nodeName('node-1'));
  t.equal(entry?.state, 'Capturing');
  t.notOk(entry?.message, `no error, no restart of tcpdump: ${entry?.message ?? ''}`);
});
