// Nothing wedges the agent (docs/agent.md, "Nothing wedges it"), shown with real faults: a
// leftover file the agent may not read (EACCES), FIFOs in place of capture files, a frozen
// filesystem whose writes hang, pods whose interface cannot be found. Each stays that
// capture's problem. (A filter check that cannot run is test/unit/filter-checks.test.ts: fork
// failing with EAGAIN cannot be arranged for a root process, and EMFILE stops the agent's
// watches and files long before its filter check.)
import { execFile } from 'node:child_process';
import { chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { privateCluster } from '../harness/cluster.js';
import { captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { https } from '../harness/http.js';
import { AGENT_SERVER_NAME, agentMetric, metricsReaderToken, scratchDir, SYSTEM_NAMESPACE, type AgentHandle } from '../harness/kube-pcap.js';
import type { TapTest } from '../harness/tap.js';
import { caliName, createPodObject } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';
import type { NodeCaptureStatus } from '../../src/kube/packetcapture.js';
import { reportedEntry } from '../harness/node-reports.js';

const run = promisify(execFile);
// An API server of its own: the filter-check count below must not see other test files'
// captures (agents watch every namespace, and each new expression is one check).
const c = await privateCluster(t);
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
const iface = caliName(w.ns, 'logging-a');
const scraper = await metricsReaderToken(c);
const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
startDnsSender(t, client, w.dns.ip, 'steady', 0, 50, w.logDir);

async function agent(t: TapTest, args: string[] = [], captureDir?: string): Promise<AgentHandle> {
  const a = await w.startAgent(node, args, captureDir);
  t.teardown(() => a.proc.stop());
  return a;
}

async function capture(t: TapTest, name: string, spec: string): Promise<void> {
  await w.applyCapture(name, spec);
  t.teardown(() => c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name }).catch(() => undefined));
}

async function entry(name: string): Promise<NodeCaptureStatus | undefined> {
  return await reportedEntry(w.kube, w.ns, name, node.name);
}

function agentGet(a: AgentHandle, path: string, timeoutMs = 5000): ReturnType<typeof https> {
  return https(`https://${a.address}:${a.port}${path}`, { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME, clientCert: w.pki.gatewayClient, token: gatewayToken, timeoutMs });
}

function metric(a: AgentHandle, name: string): Promise<number> {
  return agentMetric(a, w.pki, scraper, name);
}

/** The processes whose parent is `pid` (the agent's tcpdumps). */
async function childPids(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
  }
  return out;
}

/** Threads of the process in uninterruptible sleep (a write waiting on a frozen filesystem). */
async function blockedThreads(pid: number): Promise<number> {
  let n = 0;
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const stat = await readFile(`/proc/${pid}/task/${task}/stat`, 'utf8').catch(() => '');
    if (/\) D /.test(stat)) n++;
  }
  return n;
}

t.test('a leftover file the agent may not read is that capture\'s Error, not the end of the agent', async (t) => {
  // The capture exists before the agent starts (else its directory is garbage to the agent).
  await capture(t, 'locked', '  selector: app == "logging"');
  const dir = w.captureDir('node-1', 'locked');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const leftover = join(dir, `logging-a_${iface}.pcap`);
  await writeFile(leftover, Buffer.alloc(100), { mode: 0o600 });
  await chown(leftover, 12345, 12345); // the agent (root without CAP_DAC_OVERRIDE) gets EACCES
  const a = await agent(t);
  await capture(t, 'fine', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  const e = await w.waitForState('locked', 'node-1', 'Error');
  t.match(e.message, /recovering the files of an earlier run: EACCES: permission denied/);
  await w.waitForState('fine', 'node-1', 'Capturing');
  t.ok(a.proc.running, 'the agent is still running');
  t.equal((await https(`https://${a.address}:${a.port}/healthz`, { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME })).status, 200);
});

t.test('FIFOs in place of capture files block nothing: other captures, the file server and shutdown go on', async (t) => {
  // Five captures whose current file is a FIFO nothing reads: opened for reading or writing
  // the ordinary way, each would hold one of libuv's threads for good.
  for (let i = 1; i <= 5; i++) {
    await capture(t, `fifo-${i}`, `  selector: app == "logging"\n  filters: [{protocol: UDP}]`);
    const dir = w.captureDir('node-1', `fifo-${i}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await run('mkfifo', [join(dir, `logging-a_${iface}.pcap`)]);
  }
  const a = await agent(t);
  await capture(t, 'beside', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  for (let i = 1; i <= 5; i++) t.match((await w.waitForState(`fifo-${i}`, 'node-1', 'Error')).message, /is not a regular file; remove it/);
  await w.waitForState('beside', 'node-1', 'Capturing');
  const listing = await agentGet(a, `/v1/captures/${w.ns}/beside/files`);
  t.equal(listing.status, 200, 'the file server answers');
  const started = Date.now();
  await a.proc.stop(30_000);
  t.ok(Date.now() - started < 20_000, `stopped in ${Date.now() - started} ms`);
  t.match(await readFile(a.logFile, 'utf8'), /"msg":"captures stopped"/);
});

t.test('writes hanging on a frozen filesystem hold their captures only: health, file listing and shutdown go on', async (t) => {
  const image = join(await scratchDir(t, 'frozen'), 'disk.img');
  const mnt = await scratchDir(t, 'frozen-mnt');
  await run('truncate', ['-s', '64M', image]);
  await run('mkfs.ext4', ['-q', '-F', image]);
  await run('mount', ['-o', 'loop', image, mnt]);
  t.teardown(async () => {
    await run('fsfreeze', ['-u', mnt]).catch(() => undefined);
    await run('umount', [mnt]).catch(() => undefined);
  });
  const a = await agent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=1'], mnt);
  for (let i = 1; i <= 6; i++) await capture(t, `frozen-${i}`, `  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]`);
  for (let i = 1; i <= 6; i++) await w.waitForState(`frozen-${i}`, 'node-1', 'Capturing');
  await run('fsfreeze', ['-f', mnt]);
  t.teardown(() => run('fsfreeze', ['-u', mnt]).catch(() => undefined));
  // Traffic keeps coming; every capture's tcpdump writes (its next flush) now wait on the frozen disk.
  const hung = await waitFor(async () => {
    let n = 0;
    for (const pid of await childPids(a.proc.pid)) n += await blockedThreads(pid);
    return n >= 4 ? n : undefined;
  }, { what: 'capture writes to hang', timeoutMs: 15_000 });
  t.ok(hung >= 4, `${hung} tcpdumps wait on the frozen disk`);
  t.equal((await https(`https://${a.address}:${a.port}/readyz`, { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME, timeoutMs: 5000 })).status, 200, 'ready');
  const listing = await agentGet(a, `/v1/captures/${w.ns}/frozen-1/files`);
  t.equal(listing.status, 200, 'the file server lists files on the frozen disk');
  t.ok(listing.json<{ name: string }[]>().length > 0);
  const started = Date.now();
  void a.proc.stop(60_000);
  await waitFor(async () => (await readFile(a.logFile, 'utf8')).includes('"msg":"captures stopped"'), { what: 'the agent to stop its captures', timeoutMs: 30_000, intervalMs: 200 });
  t.ok(Date.now() - started < 30_000, `captures stopped in ${Date.now() - started} ms with writes still hanging`);
  t.match(await readFile(a.logFile, 'utf8'), /hangs \(is the disk hung\?\)/, 'and it said what it left behind');
  // The process itself can only end once the kernel lets its hung threads go.
  await run('fsfreeze', ['-u', mnt]);
  await waitFor(async () => !a.proc.running, { what: 'the agent to exit after the thaw', timeoutMs: 20_000 });
});

t.test('resyncs re-run no filter check; failed interface lookups back off per pod', async (t) => {
  const a = await agent(t, ['--resync-seconds=5']);
  await createPodObject(c, { namespace: w.ns, name: 'logging-unwired', node: node.name, ip: '192.0.2.61', labels: { app: 'unwired' } });
  await capture(t, 'resynced', '  selector: app == "logging" || app == "unwired"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState('resynced', 'node-1', 'Capturing');
  const checks = await metric(a, 'kube_pcap_agent_filter_checks_total');
  const first = Date.now();
  const lookupsAtStart = await metric(a, 'kube_pcap_agent_interface_lookups_total');
  await waitFor(async () => (await readFile(a.logFile, 'utf8')).split('"msg":"resync: every capture queued"').length - 1 >= 2, { what: 'two resyncs', timeoutMs: 20_000, intervalMs: 250 });
  t.equal(await metric(a, 'kube_pcap_agent_filter_checks_total'), checks, `still ${checks} tcpdump -d run(s) after two resyncs`);
  const lookups = (await metric(a, 'kube_pcap_agent_interface_lookups_total')) - lookupsAtStart;
  const seconds = (Date.now() - first) / 1000;
  // One pod without a route, retried at 1, 2, 4, 8 s...: a handful, not one per second.
  t.ok(lookups <= Math.ceil(Math.log2(seconds + 1)) + 1, `${lookups} lookups of the unwired pod in ${seconds.toFixed(1)} s`);
  t.match((await entry('resynced'))?.message, /pod logging-unwired: the pod's IP 192\.0\.2\.61 is routed through the gateway/);
});

t.test('an interface that vanishes is looked up again: a pod rewired under a new veth is captured there', async (t) => {
  const a = await agent(t);
  const pod = await w.addPod(node, 'rewired', { app: 'rewired' });
  await capture(t, 'rewired', '  selector: app == "rewired"\n  filters: [{protocol: UDP, ports: [53]}]');
  const sender = startDnsSender(t, pod, w.dns.ip, 'before', 0, 20, w.logDir);
  await w.waitForState('rewired', 'node-1', 'Capturing');
  await sender.stop();
  // Same pod, same uid, same IP; its veth is another one now.
  const moved = await w.topo.rewirePod(pod, 'calirewired01');
  startDnsSender(t, moved, w.dns.ip, 'after', 0, 20, w.logDir);
  const dir = w.captureDir('node-1', 'rewired');
  await waitFor(async () => {
    const files = await readCaptureDir(dir);
    return (files.get('rewired_calirewired01.pcap') ?? []).some((p) => p.query.startsWith('after-'));
  }, { what: 'packets on the new veth', timeoutMs: 20_000 });
  t.pass('captured on calirewired01');
  const e = await waitFor(async () => {
    const s = await entry('rewired');
    return s?.state === 'Capturing' && s.pods === 1 && !s.message ? s : undefined;
  }, { what: 'the old interface to be forgotten', timeoutMs: 20_000 });
  t.equal(e.pods, 1, 'one interface captured, the new one');
  t.ok((await metric(a, 'kube_pcap_agent_interface_lookups_total')) >= 2, 'looked up again');
});

t.test('a tcpdump that does not stop on SIGINT is killed after the grace period, and nothing waits meanwhile', async (t) => {
  await agent(t);
  await capture(t, 'stuck-tcpdump', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: ["5300:5399"]}]');
  await capture(t, 'alongside', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState('stuck-tcpdump', 'node-1', 'WaitingForTraffic');
  await w.waitForState('alongside', 'node-1', 'Capturing');
  const pid = Number((await run('pgrep', ['-f', '--', `tcpdump -i ${iface} .*portrange 5300-5399`])).stdout.trim().split('\n')[0]);
  // Never `kill -STOP 0`: that is the test's own process group.
  if (!(pid > 0)) throw new Error(`no tcpdump of the capture (${pid})`);
  // A stopped process holds SIGINT pending: it ends only by SIGKILL.
  await run('kill', ['-STOP', String(pid)]);
  t.teardown(() => run('kill', ['-CONT', String(pid)]).catch(() => undefined));
  const started = Date.now();
  await c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name: 'stuck-tcpdump' });
  // Meanwhile the other capture is worked on as usual: its status follows a change at once.
  await w.applyCapture('alongside', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n  endTime: "2000-01-01T00:00:00Z"');
  await w.waitForState('alongside', 'node-1', 'Finished', 5000);
  t.ok(Date.now() - started < 3000, `the other capture finished ${Date.now() - started} ms after, not behind the stuck one`);
  await waitFor(async () => (await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')) === '', { what: 'the stopped tcpdump to be killed and reaped', timeoutMs: 15_000 });
  const elapsed = Date.now() - started;
  t.ok(elapsed >= 2500 && elapsed < 10_000, `killed after the 3 s grace period (${elapsed} ms)`);
  await waitFor(async () => (await readdir(w.captureDir('node-1', 'stuck-tcpdump')).catch(() => undefined)) === undefined, { what: 'its files to be removed', timeoutMs: 10_000 });
});
