// kube-pcap's capture limits (docs/agent.md, "Capture limits"), with real tcpdumps: snapLen
// keeps that many bytes of each packet and says so in the file header; maxPackets and
// maxBytes finish the capture on the node with exactly what fits written, over all its pods,
// and the count survives an agent restart and a deletion of the files.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { agentRequester } from '../harness/agent-request.js';
import { cluster } from '../harness/cluster.js';
import { captureFiles, captureWorld } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { reportedEntry } from '../harness/node-reports.js';
import { run } from '../harness/http.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1 });
const node = w.nodes[0]!;
const a = await w.addPod(node, 'logging-a', { app: 'logging' });
const b = await w.addPod(node, 'logging-b', { app: 'logging' });
const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
const DNS = '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]';
const ROTATED = /-\d{16}\.pcap$/;

/** Frames of every file of the capture on node-1: (captured length, length on the wire). */
async function frames(capture: string): Promise<{ capLen: number; len: number }[]> {
  const dir = w.captureDir('node-1', capture);
  const out: { capLen: number; len: number }[] = [];
  for (const f of await captureFiles(dir)) {
    const r = await run('tshark', ['-r', join(dir, f), '-T', 'fields', '-e', 'frame.cap_len', '-e', 'frame.len']);
    // The file tcpdump is writing may end in part of a record for a moment: its whole ones count.
    const tornTail = !ROTATED.test(f) && /cut short in the middle of a packet/.test(r.stderr) && !/damaged|appears to be/i.test(r.stderr);
    if (!tornTail && (r.code !== 0 || /cut short|damaged|appears to be/i.test(r.stderr))) throw new Error(`tshark cannot read ${f}: ${r.stderr}`);
    for (const l of r.stdout.split('\n').filter((x) => x.trim() !== '')) {
      const [capLen, len] = l.split('\t').map(Number);
      out.push({ capLen: capLen!, len: len! });
    }
  }
  return out;
}

/** Both pods query steadily until the test ends. */
function traffic(t: TapTest, prefix: string, intervalMs = 5): void {
  startDnsSender(t, a, w.dns.ip, `${prefix}-a`, 0, intervalMs, w.logDir);
  startDnsSender(t, b, w.dns.ip, `${prefix}-b`, 0, intervalMs, w.logDir);
}

t.test('snapLen: each packet cut to that many bytes, and the files say so', async (t) => {
  await w.applyCapture('heads', `${DNS}\n  snapLen: 60`);
  await w.waitForState('heads', 'node-1', 'WaitingForTraffic');
  traffic(t, 'heads', 20);
  const seen = await waitFor(async () => {
    const f = await frames('heads').catch(() => []);
    return f.length >= 20 ? f : undefined;
  }, { what: '20 packets', timeoutMs: 15_000 });
  t.ok(seen.every((f) => f.capLen <= 60), 'no packet kept beyond 60 bytes');
  t.ok(seen.some((f) => f.len > 60 && f.capLen === 60), 'longer packets cut at 60, their length on the wire kept');
  const dir = w.captureDir('node-1', 'heads');
  const header = await readFile(join(dir, (await captureFiles(dir))[0]!));
  t.equal(header.readUInt32LE(16), 60, 'the pcap header declares snaplen 60');

  // A new snapLen on a running capture: its tcpdumps start again with it, in new files.
  await c.kubectl(['patch', 'packetcapture', 'heads', '-n', w.ns, '--type', 'merge', '-p', '{"spec":{"snapLen":70}}']);
  await waitFor(async () => ((await frames('heads')).some((f) => f.capLen > 60) ? true : undefined), { what: 'packets kept to 70 bytes', timeoutMs: 15_000 });
  t.ok((await frames('heads')).every((f) => f.capLen <= 70));
  await c.kubectl(['delete', 'packetcapture', 'heads', '-n', w.ns]);
});

t.test('maxPackets: Finished on the node with exactly that many packets over both pods', async (t) => {
  await w.applyCapture('counted', `${DNS}\n  maxPackets: 1001`);
  await w.waitForState('counted', 'node-1', 'WaitingForTraffic');
  traffic(t, 'counted');
  const entry = await w.waitForState('counted', 'node-1', 'Finished', 30_000);
  t.match(entry.message, /spec\.maxPackets \(1001\) reached on node .*: 1001 packets written/);
  t.equal(entry.packets, 1001, 'the status counts what the node wrote');
  t.equal((await frames('counted')).length, 1001, '1001 packets in the files, not one more');
  const pods = new Set((await captureFiles(w.captureDir('node-1', 'counted'))).map((f) => f.split('_')[0]));
  t.same([...pods].sort(), ['logging-a', 'logging-b'], 'both pods wrote into the count');

  // Deleting the files keeps the count: the capture stays Finished and writes nothing new.
  const agent = w.agents.get('node-1')!;
  const call = agentRequester(agent, w.pki, gatewayToken);
  const del = await call(`/v1/captures/${w.ns}/counted/files`, { method: 'DELETE' });
  t.equal(del.status, 200, del.text);
  await waitFor(async () => ((await reportedEntry(w.kube, w.ns, 'counted', w.nodeName('node-1')))?.fileNames?.length === 0 ? true : undefined), { what: 'the report to list no files', timeoutMs: 10_000 });
  t.equal((await reportedEntry(w.kube, w.ns, 'counted', w.nodeName('node-1')))?.state, 'Finished');
  t.same(await captureFiles(w.captureDir('node-1', 'counted')), [], 'no capture started again');
  await c.kubectl(['delete', 'packetcapture', 'counted', '-n', w.ns]);
});

t.test('maxBytes: Finished at the first packet that would go past it', async (t) => {
  const MAX = 20_000;
  await w.applyCapture('sized', `${DNS}\n  maxBytes: ${MAX}`);
  await w.waitForState('sized', 'node-1', 'WaitingForTraffic');
  traffic(t, 'sized');
  const entry = await w.waitForState('sized', 'node-1', 'Finished', 30_000);
  t.match(entry.message, /spec\.maxBytes \(20000\) reached/);
  const f = await frames('sized');
  const recordBytes = f.reduce((s, x) => s + 16 + x.capLen, 0);
  t.ok(recordBytes <= MAX, `${recordBytes} record bytes written, at most ${MAX}`);
  t.ok(recordBytes > MAX - 16 - Math.max(...f.map((x) => x.capLen)) * 2, `${recordBytes} bytes: stopped near the limit, not long before`);
  t.equal(entry.bytes, recordBytes, 'the status counts the record bytes');
  await c.kubectl(['delete', 'packetcapture', 'sized', '-n', w.ns]);
});

t.test('the count survives a restart of the agent: a stopped agent resumes it, a killed one never overshoots', async (t) => {
  const MAX = 600;
  await w.applyCapture('kept', `${DNS}\n  maxPackets: ${MAX}`);
  await w.waitForState('kept', 'node-1', 'WaitingForTraffic');
  traffic(t, 'kept', 40);
  await waitFor(async () => ((await frames('kept').catch(() => [])).length >= 100 ? true : undefined), { what: '100 packets written', timeoutMs: 20_000 });
  // A graceful stop (a rolling update) writes the exact count.
  await w.agents.get('node-1')!.proc.stop();
  const tally = JSON.parse(await readFile(join(w.captureDir('node-1', 'kept'), '.tally.json'), 'utf8')) as { packets: number };
  const onDisk = (await frames('kept')).length;
  t.equal(tally.packets, onDisk, `the stopped agent's count is what its files hold (${onDisk})`);
  t.ok(onDisk < MAX, 'stopped before the limit');
  await w.startAgent(node);
  await waitFor(async () => ((await frames('kept')).length > onDisk + 20 ? true : undefined), { what: 'capture to go on after the restart', timeoutMs: 20_000 });
  // Killed mid-capture: the count on disk ran ahead of the files, so the capture can only stop early.
  await w.agents.get('node-1')!.proc.kill();
  await w.startAgent(node);
  const entry = await w.waitForState('kept', 'node-1', 'Finished', 60_000);
  const total = (await frames('kept')).length;
  t.ok(total <= MAX, `${total} packets over three agent runs, never past ${MAX}`);
  t.ok(total >= MAX - Math.ceil(MAX / 64) - 64, `${total}: a crash costs at most a reservation and a batch`);
  t.match(entry.message, /spec\.maxPackets \(600\) reached/);
});

t.test('a manifest without the limits captures as before: whole packets, no end', async (t) => {
  await w.applyCapture('plain', DNS);
  traffic(t, 'plain', 20);
  await w.waitForState('plain', 'node-1', 'Capturing');
  const seen = await waitFor(async () => {
    const f = await frames('plain').catch(() => []);
    return f.length >= 20 ? f : undefined;
  }, { what: '20 packets', timeoutMs: 15_000 });
  t.ok(seen.every((f) => f.capLen === f.len), 'every packet whole');
  const dir = w.captureDir('node-1', 'plain');
  t.equal((await readFile(join(dir, (await captureFiles(dir))[0]!))).readUInt32LE(16), 262_144, 'tcpdump\'s default snaplen');
  await c.kubectl(['delete', 'packetcapture', 'plain', '-n', w.ns]);
});
