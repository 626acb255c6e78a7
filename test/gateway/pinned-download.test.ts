// What you download is what was listed (docs/downloads.md, "Pinned files"), on busy captures
// that rotate every ~200 ms while a client reads slowly. The client reads at a fixed pace from
// a network namespace whose TCP receive buffers are capped, so the pace reaches the gateway
// and, through it, the agents' fetches (on loopback, autotuning took a whole 2 MB zip at once;
// curl's --limit-rate lets the first few hundred KiB through at full speed). Each node holds about 1 MiB, several times what the buffers on the way take. Every zip that arrives must hold, for every
// node, exactly the files its agent pinned at listing time, byte for byte up to their listed
// sizes (checked against the pins on the nodes: identity, first record, bytes), and the
// packets across each pod's entries must be one unbroken run of queries. On a busy capture
// without pins, the listed files are renamed and pruned long before the client gets to them.
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { captureWorld, readPcap } from '../harness/capture-fixture.js';
import { queryCounts, startDnsSender } from '../harness/dns-sender.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { https, run } from '../harness/http.js';
import { scratchDir, startGateway } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const TTL_SECONDS = 3;
const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 2, agents: false });
const ROTATED = /-(\d{16})\.pcap$/;
const pods = [await w.addPod(w.nodes[0]!, 'logging-a', { app: 'logging' }), await w.addPod(w.nodes[1]!, 'logging-b', { app: 'logging' })];
const MAX_FILES = 6;
for (const n of w.nodes) await w.startAgent(n, ['--capture-max-size-bytes=1000000', `--capture-max-files=${MAX_FILES}`, `--pin-ttl-seconds=${TTL_SECONDS}`]);
await w.applyCapture('busy', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
for (const n of ['node-1', 'node-2']) await w.waitForState('busy', n, 'WaitingForTraffic');
// About 1 000 queries of 1 400 bytes a second per pod: tcpdump's 1 MB file is full every ~0.7 s.
for (const p of pods) startDnsSender(t, p, w.dns.ip, p.name, 0, 1, w.logDir, 1400);
for (const n of ['node-1', 'node-2']) {
  await waitFor(async () => (await readdir(w.captureDir(n, 'busy')).catch(() => [] as string[])).filter((f) => ROTATED.test(f)).length >= MAX_FILES, { what: `${MAX_FILES} rotated files on ${n}`, timeoutMs: 60_000 });
}
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
const token = await c.tokenFor(w.ns, 'devops-sa');
// On every address: the slow client reaches it over the test bridge from its own namespace.
const gateway = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: ['--listen=0.0.0.0:0'] });
const url = `${gateway.url}/packet-capture/download/${w.ns}/busy/files.zip`;
const pinsDir = (short: string): string => join(w.captureDir(short, 'busy'), '..', '..', '.pins');

interface Pinned {
  bytes: Buffer;
  identity: string;
}

/** The pins on the nodes now (an earlier download's may linger until released or expired). */
async function pinIds(): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const short of ['node-1', 'node-2']) for (const id of await readdir(pinsDir(short)).catch(() => [] as string[])) ids.add(id);
  return ids;
}

/**
 * Reads every pin that appears on the nodes while `until` is pending, except those in
 * `before` (an earlier download's, on their way out): pin.json, and for each file its first
 * `size` bytes and its identity. A rotated file is pinned by a hard link: its identity is the
 * link's inode and birth time (and its first record's number); the file being written is
 * pinned by a copy (rotation moves its content): its identity is the original's, not the
 * copy's. Keyed by zip entry, <node>/<file>.
 */
async function recordPins(until: Promise<unknown>, before: Set<string>): Promise<{ files: Map<string, Pinned>; problems: string[] }> {
  const files = new Map<string, Pinned>();
  const problems: string[] = [];
  const seen = new Set<string>(before);
  let done = false;
  void until.finally(() => (done = true));
  while (!done) {
    for (const short of ['node-1', 'node-2']) {
      for (const id of await readdir(pinsDir(short)).catch(() => [] as string[])) {
        if (seen.has(id)) continue;
        const meta = await readFile(join(pinsDir(short), id, 'pin.json'), 'utf8').catch(() => undefined);
        if (!meta) continue; // still being made
        seen.add(id);
        const pin = JSON.parse(meta) as { files: { name: string; size: number; identity: string }[] };
        for (const f of pin.files) {
          const path = join(pinsDir(short), id, f.name);
          const st = await stat(path, { bigint: true }).catch(() => undefined);
          const fh = await open(path).catch(() => undefined);
          if (!st || !fh) {
            problems.push(`${short} pin ${id}: ${f.name} was gone before the test could read it`);
            continue;
          }
          const bytes = Buffer.alloc(f.size);
          await fh.read(bytes, 0, f.size, 0);
          await fh.close();
          const identity = `${st.ino.toString(16)}-b${st.birthtimeNs.toString(16)}`;
          const linked = /-\d{16}\.pcap$/.test(f.name);
          if (linked && !new RegExp(`^${identity}(-n[0-9a-f]+)?$`).test(f.identity)) problems.push(`${short}/${f.name}: pinned as ${f.identity}, but the pinned file is ${identity}`);
          if (!linked && f.identity.startsWith(`${identity}-`)) problems.push(`${short}/${f.name}: the file being written pinned by a link (${identity}), not a copy`);
          files.set(`${w.nodeName(short)}/${f.name}`, { bytes, identity });
        }
      }
    }
    await new Promise((r) => setTimeout(r, 20)); // sampling the nodes' pin directories, not synchronizing
  }
  return { files, problems };
}

/**
 * The slow client: a Node script in a network namespace of its own on the test bridge, whose
 * TCP receive buffers are capped (net.ipv4.tcp_rmem is per namespace) so that autotuning cannot
 * take megabytes off the gateway at once. It reads at `bytesPerSecond`, writes what arrived to
 * `file` and its account to `file`.json.
 */
const CLIENT = `
import { request } from 'node:https';
import { readFileSync, writeFileSync } from 'node:fs';
const [url, ca, token, out, rate] = process.argv.slice(1);
const started = performance.now();
const chunks = []; let bytes = 0; let complete = false; let status = 0; let length;
try {
  const res = await new Promise((resolve, reject) => request(url, { ca: readFileSync(ca), servername: 'localhost', headers: { authorization: 'Bearer ' + token } }, resolve).on('error', reject).end());
  status = res.statusCode; length = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length']);
  for await (const chunk of res) {
    chunks.push(chunk); bytes += chunk.length;
    const ahead = (bytes / Number(rate)) * 1000 - (performance.now() - started);
    if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
  }
  complete = res.complete;
} catch {}
writeFileSync(out, Buffer.concat(chunks));
writeFileSync(out + '.json', JSON.stringify({ status, length, bytes, complete, seconds: (performance.now() - started) / 1000 }));
`;
const clientNet = await w.topo.addNode(`client-${randomBytes(3).toString('hex')}`);
await clientNet.ns.sysctl('net.ipv4.tcp_rmem', '4096 16384 32768');
const bridgeUrl = url.replace('https://127.0.0.1:', `https://${process.env.KUBE_PCAP_BRIDGE_IP}:`);

async function slowDownload(_target: string, file: string, bytesPerSecond: number): Promise<{ status: number; length: number | undefined; bytes: number; complete: boolean; seconds: number }> {
  const p = clientNet.ns.spawn(t, `slow-client-${randomBytes(3).toString('hex')}`, process.execPath, ['--input-type=module', '-e', CLIENT, bridgeUrl, w.pki.ca.certFile, token, file, String(bytesPerSecond)], w.logDir);
  await p.exited;
  return JSON.parse(await readFile(`${file}.json`, 'utf8')) as { status: number; length: number | undefined; bytes: number; complete: boolean; seconds: number };
}

/**
 * Each record's time and DNS query name (Ethernet, IPv4 without options, UDP: the name starts
 * 54 bytes into the frame), read here rather than by 80 tshark runs; tshark reads the first
 * and last entry of each node too.
 */
function dnsRecords(pcap: Buffer): { time: number; query: string }[] {
  const out: { time: number; query: string }[] = [];
  for (let off = 24; off + 16 <= pcap.length;) {
    const len = pcap.readUInt32LE(off + 8);
    const frame = pcap.subarray(off + 16, off + 16 + len);
    const labels: string[] = [];
    for (let q = 54; q < frame.length && frame[q]! > 0; q += frame[q]! + 1) labels.push(frame.subarray(q + 1, q + 1 + frame[q]!).toString('latin1'));
    out.push({ time: pcap.readUInt32LE(off) + pcap.readUInt32LE(off + 4) / 1e6, query: labels.join('.') });
    off += 16 + len;
  }
  return out;
}

/** The first record of a pcap file: its 16-byte header and the packet. */
function firstRecord(pcap: Buffer): Buffer {
  if (pcap.length < 40) return Buffer.alloc(0);
  return pcap.subarray(24, 40 + pcap.readUInt32LE(24 + 8));
}

for (let i = 1; i <= 2; i++) {
  t.test(`download ${i} of a capture rotating every ~0.7 s, read slowly: every entry is the listed file`, { timeout: 120_000 }, async (t) => {
    const cwd = await scratchDir(t, `pinned-${i}`);
    const before = await pinIds();
    const download = slowDownload(url, join(cwd, 'files.zip'), 1024 * 1024);
    const pins = await recordPins(download, before);
    const dl = await download;
    t.equal(dl.status, 200);
    t.ok(dl.complete, 'the response ended as HTTP says it should');
    t.equal(dl.bytes, dl.length, `${dl.bytes} bytes, the Content-Length promised`);
    // Long enough that node-2's pin, untouched while node-1's files stream, lives only by the gateway's renewals.
    t.ok(dl.seconds > 2 * TTL_SECONDS, `the download took ${dl.seconds.toFixed(1)} s, more than twice a pin's ${TTL_SECONDS} s lifetime`);
    t.same(pins.problems, [], 'every pinned file is the identity its pin lists');
    t.equal((await run('unzip', ['-tq', 'files.zip'], { cwd })).code, 0, 'a valid zip');
    t.equal((await run('unzip', ['-q', 'files.zip', '-d', 'x'], { cwd })).code, 0);

    const entries: string[] = [];
    for (const node of (await readdir(join(cwd, 'x'))).sort()) for (const f of (await readdir(join(cwd, 'x', node))).sort()) entries.push(`${node}/${f}`);
    t.same(entries, [...pins.files.keys()].sort(), 'the zip holds exactly the pinned files of both nodes');
    let interval = Infinity;
    for (const short of ['node-1', 'node-2']) {
      const node = w.nodeName(short);
      const mine = entries.filter((e) => e.startsWith(`${node}/`));
      t.ok(mine.length > MAX_FILES / 2, `${node}: ${mine.length} files listed`);
      const queries: string[] = [];
      const starts: number[] = [];
      for (const e of mine) {
        const bytes = await readFile(join(cwd, 'x', e));
        const pinned = pins.files.get(e)!;
        t.ok(firstRecord(bytes).equals(firstRecord(pinned.bytes)), `${e}: the first record of the listed file (${pinned.identity})`);
        t.ok(bytes.equals(pinned.bytes), `${e}: byte for byte the listed file, ${pinned.bytes.length} bytes`);
        // Rotated entries in time order, then the live one: the names sort that way.
        const packets = dnsRecords(bytes);
        queries.push(...packets.map((p) => p.query));
        if (packets[0]) starts.push(packets[0].time);
      }
      for (const e of [mine[0]!, mine[mine.length - 1]!]) {
        const read = await readPcap(join(cwd, 'x', e));
        t.same(read.map((p) => p.query), dnsRecords(await readFile(join(cwd, 'x', e))).map((p) => p.query), `${e}: tshark reads the same packets`);
      }
      // From the first packet of the oldest file to that of the live one, one rotation per file.
      interval = Math.min(interval, (starts[starts.length - 1]! - starts[0]!) / (starts.length - 1));
      const prefix = short === 'node-1' ? 'logging-a' : 'logging-b';
      const counts = queryCounts(queries, prefix);
      const numbers = [...counts.keys()].sort((a, b) => a - b);
      const gaps = numbers.filter((n, k) => k > 0 && n !== numbers[k - 1]! + 1);
      t.ok(numbers.length > 100, `${node}: ${numbers.length} queries in ${mine.length} files`);
      t.same(gaps, [], `${node}: the files run on without a gap (queries ${numbers[0]}..${numbers[numbers.length - 1]})`);
      t.ok([...counts.values()].every((n) => n <= 2), `${node}: no packet twice`);
    }
    t.ok(interval < 1.5, `files rotated every ${interval.toFixed(3)} s on average`);
    for (const short of ['node-1', 'node-2']) {
      await waitFor(async () => (await readdir(pinsDir(short))).length === 0, { what: `${short}'s pins to be released`, timeoutMs: 10_000 });
    }
  });
}

t.test('a client that goes away leaves no pin behind', async (t) => {
  const cwd = await scratchDir(t, 'gone');
  const r = await run('curl', ['-sS', '--limit-rate', '4k', '--max-time', '2', '--cacert', w.pki.ca.certFile, '-H', `Authorization: Bearer ${token}`, '-o', 'files.zip', url], { cwd, timeoutMs: 30_000 });
  t.equal(r.code, 28, 'curl gave up mid-download');
  for (const short of ['node-1', 'node-2']) {
    await waitFor(async () => (await readdir(pinsDir(short))).length === 0, { what: `${short}'s pins to be released`, timeoutMs: 10_000 });
  }
});

t.test('files deleted under a download cut it: never a valid zip with other content', { timeout: 120_000 }, async (t) => {
  // The capture stops (files kept) and someone allowed to delete its files does, mid-download.
  await w.applyCapture('busy', `  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n  endTime: "${new Date(Date.now() - 1000).toISOString()}"`);
  for (const n of ['node-1', 'node-2']) await w.waitForState('busy', n, 'Finished');
  await c.applyManifest(JSON.stringify({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'files-delete', namespace: w.ns }, rules: [{ apiGroups: ['projectcalico.org'], resources: ['packetcaptures/files'], verbs: ['delete'] }] }));
  await c.applyManifest(JSON.stringify({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'files-delete', namespace: w.ns }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'files-delete' }, subjects: [{ kind: 'ServiceAccount', name: 'devops-sa', namespace: w.ns }] }));
  const cwd = await scratchDir(t, 'deleted');
  const download = slowDownload(url, join(cwd, 'files.zip'), 64 * 1024);
  let ended: string | undefined;
  void download.then(async (d) => {
    ended = `the download ended first: ${d.status}, ${d.bytes} bytes: ${(await readFile(join(cwd, 'files.zip'), 'utf8').catch(() => '')).slice(0, 300)}`;
  });
  for (const short of ['node-1', 'node-2']) {
    await waitFor(async () => {
      if (ended) throw new Error(ended);
      return (await readdir(pinsDir(short)).catch(() => [] as string[])).length > 0;
    }, { what: `${short}'s files to be pinned`, timeoutMs: 20_000 }).catch(async (err: Error) => {
      const tail = async (f: string): Promise<string> => (await readFile(f, 'utf8')).split('\n').slice(-12).map((l) => l.slice(0, 300)).join('\n');
      throw new Error(`${err.message}\ngateway:\n${await tail(gateway.logFile)}\nagent of ${short}:\n${await tail(w.agents.get(short)!.logFile)}`);
    });
  }
  const del = await waitFor(async () => {
    const r = await https(`${gateway.url}/packet-capture/files/${w.ns}/busy`, { method: 'DELETE', caFile: w.pki.ca.certFile, token });
    return r.status === 200 ? r : undefined;
  }, { what: 'the files to be deleted (the delete grant to show)', timeoutMs: 15_000 });
  t.ok(del.json<{ removed: unknown[] }>().removed.length > 0);
  const dl = await download;
  t.notOk(dl.complete, 'the transfer was cut');
  t.ok(dl.bytes < dl.length!, `${dl.bytes} of the ${dl.length} bytes promised: a client sees it was cut by its length alone`);
  t.not((await run('unzip', ['-tq', 'files.zip'], { cwd })).code, 0, 'what arrived is no valid zip');
  for (const short of ['node-1', 'node-2']) t.same(await readdir(pinsDir(short)), [], `${short}: the pins went with the files`);
});
