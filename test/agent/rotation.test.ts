// Rotation by size and by time, and captureMaxFiles: exactly the expected files, each
// readable by tshark, no packet lost or written twice across a rotation.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { agentRequester } from '../harness/agent-request.js';
import { cluster } from '../harness/cluster.js';
import { SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { allPackets, captureFiles, captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { answersReceived, queryCounts, startDnsSender } from '../harness/dns-sender.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
// The DNS server is on the only node: capture only the client's side.
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
const ROTATED = /^logging-a_cali[0-9a-f]{11}-(\d{16})\.pcap$/;

async function withAgent(t: TapTest, args: string[], capture: string): Promise<string> {
  const agent = await w.startAgent(node, args);
  t.teardown(() => agent.proc.stop());
  await w.applyCapture(capture, '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState(capture, 'node-1', 'WaitingForTraffic');
  return w.captureDir('node-1', capture);
}

// The agent rotates tcpdump's file by copy (docs/agent.md, "Capture workers"): queries padded
// to 1 200 bytes make a megabyte in a few hundred packets.
const PAD = 1200;
/** A rotated file holds at most the size after its header. */
const LIMIT = 24 + 1_000_000;

t.test('by size: every packet exactly once across many rotations, every file valid and within the limit', async (t) => {
  const dir = await withAgent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=1000'], 'by-size');
  const N = 4000;
  const sender = startDnsSender(t, client, w.dns.ip, 'size', N, 1, w.logDir, PAD);
  await sender.exited;
  // What was on the wire: every query, and the answers the sender got (the DNS server may
  // drop a few under load; the capture may not).
  const answered = await answersReceived(sender);
  t.ok(answered !== undefined && answered > N / 2, `the sender got ${answered} answers to ${N} queries`);
  const { queries, answers } = await waitFor(async () => {
    const packets = allPackets(await readCaptureDir(dir));
    const queries = queryCounts(packets.filter((p) => p.dstPort === 53).map((p) => p.query), 'size');
    const answers = queryCounts(packets.filter((p) => p.srcPort === 53).map((p) => p.query), 'size');
    if (queries.size === N && answers.size >= answered!) return { queries, answers };
    // Not yet: say what is missing, for the timeout's message (a lost packet or a slow disk).
    const none = Array.from({ length: N }, (_, i) => i).filter((i) => !queries.has(i));
    throw new Error(`${queries.size} of ${N} queries (first missing ${none.slice(0, 5).join(', ')}), ${answers.size} of ${answered} answers`);
  }, { what: `all ${N} queries and the ${answered} answers to be written`, timeoutMs: 30_000 });
  t.ok([...queries.values()].every((n) => n === 1), 'each query exactly once: none lost, none duplicated');
  t.ok([...answers.values()].every((n) => n === 1), 'each answer exactly once');
  const files = await captureFiles(dir);
  const rotated = files.filter((f) => ROTATED.test(f));
  t.ok(rotated.length >= 4, `${rotated.length} rotations`);
  t.equal(files.length, rotated.length + 1, 'plus the file being written');
  for (const f of rotated) t.ok((await stat(join(dir, f))).size <= LIMIT, `${f} within a million bytes`);
  const order = rotated.map((f) => BigInt(ROTATED.exec(f)![1]!));
  t.same(order, [...order].sort((a, b) => (a < b ? -1 : 1)), 'rotated names sort in time order');
  // The queries (sent in order) are in order, file after file.
  const seqs = await readCaptureDir(dir);
  const sent = [...rotated, files.find((f) => !ROTATED.test(f))!].flatMap((f) => seqs.get(f)!.filter((p) => p.dstPort === 53).map((p) => Number(/^size-(\d{6})\./.exec(p.query)?.[1] ?? -1)));
  t.same(sent, Array.from({ length: N }, (_, i) => i), 'queries in sending order across all files');
});

t.test('captureMaxFiles: only the newest rotated files are kept', async (t) => {
  const dir = await withAgent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=2'], 'max-files');
  const N = 3500;
  await startDnsSender(t, client, w.dns.ip, 'max', N, 1, w.logDir, PAD).exited;
  await waitFor(async () => queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'max').has(N - 1), { what: 'the last query to be written', timeoutMs: 20_000 });
  const files = await captureFiles(dir);
  t.equal(files.filter((f) => ROTATED.test(f)).length, 2, `exactly 2 rotated files: ${files.join(', ')}`);
  t.equal(files.length, 3, 'and the current one');
  const seen = [...queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'max').keys()].sort((a, b) => a - b);
  t.ok(seen[0]! > 0 && seen[seen.length - 1] === N - 1, `the newest packets are kept (${seen[0]}..${seen[seen.length - 1]}), the oldest were deleted first`);
  for (let i = 1; i < seen.length; i++) t.equal(seen[i], seen[i - 1]! + 1, 'a contiguous tail: nothing missing in what is kept');
});

t.test('by time: a file is rotated once it is older than captureRotationSeconds', async (t) => {
  const dir = await withAgent(t, ['--capture-rotation-seconds=1', '--capture-max-files=100'], 'by-time');
  const sender = startDnsSender(t, client, w.dns.ip, 'time', 0, 100, w.logDir);
  const rotated = await waitFor(async () => {
    const r = (await captureFiles(dir)).filter((f) => ROTATED.test(f));
    return r.length >= 3 ? r : undefined;
  }, { what: 'three rotations by time', timeoutMs: 15_000 });
  await sender.stop();
  // tcpdump's last file is taken up within a tick: read once everything sent is there (a
  // listing that races with a rotation's rename would miss the renamed file's packets).
  const files = await waitFor(async () => {
    const f = await readCaptureDir(dir);
    const counts = queryCounts(allPackets(f).map((p) => p.query), 'time');
    const max = Math.max(...counts.keys());
    for (let i = 0; i < max; i++) if (counts.get(i) !== 2) return undefined;
    return f;
  }, { what: 'every query sent, with its answer, in the files', timeoutMs: 10_000 });
  for (const f of rotated) {
    const packets = files.get(f) ?? [];
    t.ok(packets.length > 0, `${f}: ${packets.length} packets, readable`);
    const span = packets[packets.length - 1]!.time - packets[0]!.time;
    t.ok(span < 2.5, `${f} spans ${span.toFixed(2)} s of traffic (rotated about every second)`);
  }
  const counts = queryCounts(allPackets(files).map((p) => p.query), 'time');
  const max = Math.max(...counts.keys());
  for (let i = 0; i < max; i++) t.equal(counts.get(i), 2, `query ${i} once, with its answer`);
});

t.test('a pin of the file being written keeps its bytes through the rotations that follow; the listed generation is a 412 after', async (t) => {
  const agent = await w.startAgent(node, ['--capture-max-size-bytes=1000000', '--capture-max-files=1000']);
  t.teardown(() => agent.proc.stop());
  const capture = 'pinned';
  await w.applyCapture(capture, '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState(capture, 'node-1', 'WaitingForTraffic');
  const dir = w.captureDir('node-1', capture);
  const call = agentRequester(agent, w.pki, await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' }));
  const base = `/v1/captures/${w.ns}/${capture}`;
  // Half a megabyte: all of it in the file being written, no rotation yet.
  await startDnsSender(t, client, w.dns.ip, 'before', 300, 1, w.logDir, PAD).exited;
  await waitFor(async () => queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'before').size === 300, { what: 'the first 300 queries in the file', timeoutMs: 20_000 });
  const pinRes = await call(`${base}/pins`, { method: 'POST' });
  t.equal(pinRes.status, 201, pinRes.text);
  const pin = JSON.parse(pinRes.text) as { id: string; files: { name: string; size: number; identity: string }[] };
  t.equal(pin.files.length, 1, 'the file being written alone');
  const pinned = pin.files[0]!;
  const listed = (JSON.parse((await call(`${base}/files`)).text) as { name: string; identity: string }[]).find((f) => f.name === pinned.name)!;
  t.equal(listed.identity, pinned.identity, 'the pin lists what the file server lists');
  const expected = (await readFile(join(dir, pinned.name))).subarray(0, pinned.size);
  // Three megabytes more: the file is copied out and truncated behind tcpdump, again and again.
  await startDnsSender(t, client, w.dns.ip, 'after', 2500, 1, w.logDir, PAD).exited;
  await waitFor(async () => (await captureFiles(dir)).filter((f) => ROTATED.test(f)).length >= 2, { what: 'rotations', timeoutMs: 20_000 });
  const got = await call(`${base}/pins/${pin.id}/files/${pinned.name}`);
  t.equal(got.status, 200);
  t.equal(got.body.length, pinned.size, 'its listed size');
  t.ok(got.body.equals(expected), 'the bytes it pinned, though the file being written was truncated since');
  const now = (JSON.parse((await call(`${base}/files`)).text) as { name: string; identity: string }[]).find((f) => f.name === pinned.name)!;
  t.not(now.identity, listed.identity, `another generation under the same name and inode: ${listed.identity} then ${now.identity}`);
  const stale = await call(`${base}/files/${pinned.name}`, { headers: { 'if-match': `"${listed.identity}"` } });
  t.equal(stale.status, 412, 'the generation listed is not served under the name any more');
  const fresh = await call(`${base}/files/${pinned.name}`, { headers: { 'if-match': `"${now.identity}"` } });
  t.equal(fresh.status, 200, 'the one listed now is');
  t.equal(fresh.body.readUInt32LE(0), 0xa1b2c3d4, 'a pcap file, served from a copy of its whole records');
  t.equal((await call(`${base}/pins/${pin.id}`, { method: 'DELETE' })).status, 200);
});
