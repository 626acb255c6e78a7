// The live stream end to end (docs/pcapng.md, "Live"): real agents capturing real pods on two
// nodes, the gateway merging their live streams, curl piped into tshark reading a live
// capture from stdin (`-i -`, as Wireshark does with `-k -i <(curl …)`). A pod that starts
// matching after the stream began shows up under its name; a paused viewer costs the capture
// nothing; an idle stream stays open; deleting the capture ends the stream cleanly; a token
// without the files permission gets 403 before any byte.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { Agent, request } from 'undici';
import { cluster } from '../harness/cluster.js';
import { captureWorld, readCaptureDir, allPackets } from '../harness/capture-fixture.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { queryCounts, startDnsSender } from '../harness/dns-sender.js';
import { https } from '../harness/http.js';
import { agentMetric, gatewayMetric, metricsReaderToken, scratchDir, startGateway } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';
import { OwnedProcess, rssBytes } from '../harness/processes.js';
import { BlockType, PcapngBlockReader } from '../../src/pcap/pcapng-reader.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
// Connections idle this long are closed, at the agents and the gateway (default 120 s): the
// idle stream below must outlive it three times over on keep-alives alone.
const IDLE_TIMEOUT_S = 20;
const w = await captureWorld(t, c, { nodes: 2, agentArgs: ['--capture-max-size-bytes=1000000', '--capture-max-files=20', `--idle-timeout-seconds=${IDLE_TIMEOUT_S}`] });
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
const token = await c.tokenFor(w.ns, 'devops-sa');
const podA = await w.addPod(w.nodes[0]!, 'logging-a', { app: 'logging' });
await w.applyCapture('live', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
await w.applyCapture('idle', '  selector: app == "nothing-matches-this"');
await w.waitForState('live', 'node-1', 'WaitingForTraffic');
const gateway = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: [`--idle-timeout-seconds=${IDLE_TIMEOUT_S}`] });
const ca = w.pki.ca.certFile;
const url = (capture: string, prefix = '/packet-capture'): string => `${gateway.url}${prefix}/stream/${w.ns}/${capture}`;
const dispatcher = new Agent({ connect: { ca: await readFile(ca) } });
t.teardown(() => dispatcher.close());

/** A live stream read as it comes (bytes counted, blocks parsed), until it ends or is cut. */
function openStream(capture: string): { bytes: () => number; blocks: number[]; ended: Promise<{ clean: boolean; error?: string }>; close(): void } {
  const abort = new AbortController();
  let bytes = 0;
  const blocks: number[] = [];
  const ended = (async () => {
    const res = await request(url(capture), { dispatcher, headers: { authorization: `Bearer ${token}` }, signal: abort.signal, bodyTimeout: 0 });
    if (res.statusCode !== 200) return { clean: false, error: `HTTP ${res.statusCode}: ${await res.body.text()}` };
    const counted = (async function* (): AsyncGenerator<Buffer> {
      for await (const chunk of res.body) {
        bytes += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
    })();
    const r = new PcapngBlockReader(Readable.from(counted), 'the live stream');
    while (await r.next()) blocks.push(r.type);
    return { clean: true };
  })().catch((err: Error) => ({ clean: false, error: err.message }));
  return { bytes: () => bytes, blocks, ended, close: () => abort.abort() };
}

// Opened first, checked last: three idle timeouts of nothing to capture.
const idleStartedAt = Date.now();
const idle = openStream('idle');
t.teardown(() => idle.close());

t.test('403 before any byte for a token without the files permission', async (t) => {
  await c.createServiceAccount(w.ns, 'onlooker');
  const res = await https(url('live'), { caFile: ca, token: await c.tokenFor(w.ns, 'onlooker') });
  t.equal(res.status, 403);
  t.equal(res.json<{ reason: string }>().reason, 'Forbidden');
  await checkResponse('GET', '/packet-capture/stream/{namespace}/{name}', res.status, res.headers['content-type'] as string, res.body);
  const bad = await https(`${url('live')}?since=yesterday`, { caFile: ca, token });
  t.equal(bad.status, 400, 'a since that is not RFC 3339 is refused');
});

t.test('curl | tshark -i -: packets of a pod that starts matching after the stream began, under its pod name; the same compressed (zstd), packets arriving while the stream is open', async (t) => {
  const dir = await scratchDir(t, 'live-tshark');
  // Two viewers at once: plain, and `curl --compressed` (Accept-Encoding: deflate, gzip, br,
  // zstd) which the gateway answers with zstd flushed after every batch; tshark quits after
  // 25 s while the capture still runs, so every packet it shows came through an open stream.
  const viewers = ['plain', 'zstd'].map((kind) => {
    const out = join(dir, `tshark-${kind}.txt`);
    const script = `set -o pipefail; curl -sS -N ${kind === 'zstd' ? '--compressed' : ''} --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL" | tshark -i - -l -a duration:25 -N n -T fields -E separator='|' -e frame.interface_name -e ip.src -e ip.src_host > "$OUT"`;
    const viewer = new OwnedProcess('env', [`CA=${ca}`, `TOKEN=${token}`, `URL=${url('live')}`, `OUT=${out}`, 'bash', '-c', script], { name: `curl-tshark-${kind}`, logFile: join(dir, `viewer-${kind}.log`) });
    t.teardown(() => viewer.stop());
    return { kind, out, viewer, log: join(dir, `viewer-${kind}.log`) };
  });
  const encodedBefore = await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_encoded_bytes_total', 'coding="zstd"');
  await waitFor(async () => ((await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_live_streams')) >= 3 ? true : undefined), { what: 'the viewers\' streams to be open', timeoutMs: 10_000 });
  startDnsSender(t, podA, w.dns.ip, 'live-a', 0, 20, w.logDir);
  // Only now does a second pod, on the other node, start to match.
  const podB = await w.addPod(w.nodes[1]!, 'logging-b', { app: 'logging' });
  startDnsSender(t, podB, w.dns.ip, 'live-b', 0, 20, w.logDir);
  for (const v of viewers) {
    await v.viewer.exited;
    const rows = (await readFile(v.out, 'utf8')).trim().split('\n').filter((l) => l !== '').map((l) => l.split('|'));
    const log = await readFile(v.log, 'utf8');
    const b = rows.filter((r) => r[1] === podB.ip);
    t.ok(b.length > 5, `${v.kind}: packets of the pod that started later: ${b.length} (viewer said: ${log.slice(-300)})`);
    t.same([...new Set(b.map((r) => r[0]))], [`${w.nodeName('node-2')}/${w.ns}/logging-b/${podB.hostIface}`], `${v.kind}: under its own interface, named by node, namespace and pod`);
    t.equal(b[0]?.[2], `logging-b.${w.ns}`, `${v.kind}: its address shown as its name, from the stream's name records`);
    t.ok(rows.some((r) => r[1] === podA.ip && r[0] === `${w.nodeName('node-1')}/${w.ns}/logging-a/${podA.hostIface}`), `${v.kind}: and the first pod's packets, under its name`);
    t.notMatch(log, /aren't supported|isn't supported|malformed|cut short/i, `${v.kind}: tshark reading a pipe takes an interface block after packets`);
  }
  const encoded = (await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_encoded_bytes_total', 'coding="zstd"')) - encodedBefore;
  t.ok(encoded > 0, `the compressed viewer's stream went out as zstd (${encoded} bytes)`);
});

t.test('a paused viewer (curl stopped for 5 s) costs the capture nothing: no kernel drops, every packet in the files, the agent\'s memory bounded', async (t) => {
  const agent = w.agents.get('node-1')!;
  const reader = await metricsReaderToken(c);
  const dropsBefore = await agentMetric(agent, w.pki, reader, 'kube_pcap_agent_kernel_drops');
  const rssBefore = await rssBytes(agent.proc.pid!);
  const dir = await scratchDir(t, 'live-paused');
  const curl = new OwnedProcess('curl', ['-sS', '-N', '--cacert', ca, '-H', `Authorization: Bearer ${token}`, url('live'), '-o', join(dir, 'live.pcapng')], { name: 'curl-paused', logFile: join(dir, 'curl.log') });
  t.teardown(() => curl.stop());
  await waitFor(async () => ((await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_live_streams')) >= 2 ? true : undefined), { what: 'the stream to be open', timeoutMs: 10_000 });
  // A busy pod: about 1 000 packets a second while the viewer sleeps, 5 s of them more than the
  // pipe and socket buffers between agent and viewer hold. (At 2 000 a second a loaded 2-core CI
  // machine starved tcpdump itself now and then: drops that have nothing to do with the viewer.)
  const sender = startDnsSender(t, podA, w.dns.ip, 'paused', 0, 2, w.logDir);
  const sizeOf = async (): Promise<number> => (await readFile(join(dir, 'live.pcapng')).catch(() => Buffer.alloc(0))).length;
  await waitFor(async () => ((await sizeOf()) > 10_000 ? true : undefined), { what: 'packets to reach the viewer', timeoutMs: 15_000 });
  process.kill(curl.pid, 'SIGSTOP');
  const paused = Date.now();
  let peak = 0;
  while (Date.now() - paused < 5000) {
    peak = Math.max(peak, await rssBytes(agent.proc.pid!));
    await new Promise((r) => setTimeout(r, 200)); // sampling the agent's RSS while the viewer is stopped, not waiting on a condition
  }
  process.kill(curl.pid, 'SIGCONT');
  const atResume = await sizeOf();
  await waitFor(async () => ((await sizeOf()) > atResume + 10_000 ? true : undefined), { what: 'the stream to go on after the viewer woke', timeoutMs: 15_000 });
  await sender.stop();
  t.equal(await agentMetric(agent, w.pki, reader, 'kube_pcap_agent_kernel_drops'), dropsBefore, 'the kernel dropped nothing while the viewer slept');
  t.ok(peak - rssBefore < 64 * 2 ** 20, `the agent's RSS grew by ${((peak - rssBefore) / 2 ** 20).toFixed(1)} MiB at most while the viewer slept (bounded)`);
  // Every query the pod sent is in the files, in one unbroken run. The capture writes its
  // tail up to a second and a half after the sender stops, rotating meanwhile: read until a
  // listing is not overtaken by a rename (a real gap never closes, and times out).
  const ids = await waitFor(async () => {
    const counts = queryCounts(allPackets(await readCaptureDir(w.captureDir('node-1', 'live'))).map((p) => p.query), 'paused');
    const found = [...counts.keys()].sort((a, b) => a - b);
    const missing: number[] = [];
    for (let i = found[0]!; i <= found.at(-1)!; i++) if (!counts.has(i)) missing.push(i);
    if (missing.length > 0) {
      const drops = await agentMetric(agent, w.pki, reader, 'kube_pcap_agent_kernel_drops');
      throw new Error(`${missing.length} queries missing between ${found[0]} and ${found.at(-1)}, from ${missing[0]} (kernel drops now ${drops - dropsBefore})`);
    }
    return found;
  }, { what: 'every query in the files, in one unbroken run', timeoutMs: 20_000, intervalMs: 1000 });
  t.ok(ids.length > 1000, `${ids.length} queries written, none missing between the first (${ids[0]}) and the last (${ids.at(-1)})`);
});

t.test('deleting the PacketCapture ends its stream cleanly', async (t) => {
  const s = openStream('live');
  await waitFor(async () => (s.bytes() > 0 ? true : undefined), { what: 'the stream to start', timeoutMs: 10_000 });
  await c.kubectl(['delete', '-n', w.ns, 'packetcaptures.projectcalico.org', 'live']);
  const end = await Promise.race([s.ended, new Promise<{ clean: boolean; error?: string }>((r) => setTimeout(() => r({ clean: false, error: 'still open 20 s after the delete' }), 20_000))]);
  t.same(end, { clean: true }, 'the response ended, on a whole block');
  t.equal(s.blocks[0], BlockType.SHB);
});

t.test('an idle capture\'s stream is still open after three idle timeouts, kept alive, and ends when the capture finishes', async (t) => {
  const span = 3 * IDLE_TIMEOUT_S * 1000;
  await waitFor(async () => (Date.now() - idleStartedAt >= span ? true : undefined), { what: `${span / 1000} s`, timeoutMs: span + 20_000, intervalMs: 1000 });
  const state = await Promise.race([idle.ended, Promise.resolve(undefined)]);
  t.equal(state, undefined, `still open after ${span / 1000} s, with --idle-timeout-seconds=${IDLE_TIMEOUT_S} at the agents and the gateway`);
  t.ok(idle.blocks.length >= 4, `${idle.blocks.length} blocks so far: something every 10 s keeps it alive`);
  // Stopped (endTime in the past, as `kubectl pcap stop` does): the stream ends on its own.
  await w.applyCapture('idle', `  selector: app == "nothing-matches-this"\n  endTime: "${new Date(Date.now() - 1000).toISOString()}"`);
  const end = await Promise.race([idle.ended, new Promise<{ clean: boolean; error?: string }>((r) => setTimeout(() => r({ clean: false, error: 'still open 40 s after the capture finished' }), 40_000))]);
  t.same(end, { clean: true }, 'and it ends cleanly once the capture has finished');
});
