// One node's budgets are shared by every capture on it (docs/agent.md, "Budgets"): capture
// workers, disk reserved per worker, buffered bytes; a capture refused for budget is an Error
// naming the budget; the agent's /metrics is for those allowed to read it.
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { captureWorld } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { https } from '../harness/http.js';
import { AGENT_SERVER_NAME, agentMetric, metricsReaderToken, scratchDir, SYSTEM_NAMESPACE, type AgentHandle } from '../harness/kube-pcap.js';
import { agentRequester } from '../harness/agent-request.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import { shippedMemoryLimitMiB } from '../harness/shipped-privileges.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';
import { reportedEntry } from '../harness/node-reports.js';
import type { TopoPod } from '../harness/topology.js';

const run = promisify(execFile);
const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
const pods: TopoPod[] = [];
for (let i = 0; i < 4; i++) pods.push(await w.addPod(node, `logging-${i}`, { app: 'logging', pod: `logging-${i}` }));
const scraper = await metricsReaderToken(c);
/** What one worker reserves with --capture-max-size-bytes=1000000 --capture-max-files=1: (1 + 1) x (1 MB + 16 + 262 144 + 4 096). */
const PER_WORKER = 2 * (1_000_000 + 16 + 262_144 + 4096);
for (const p of pods) startDnsSender(t, p, w.dns.ip, p.name, 0, 100, w.logDir);

async function agent(t: TapTest, args: string[] = [], captureDir?: string): Promise<AgentHandle> {
  const a = await w.startAgent(node, args, captureDir);
  t.teardown(() => a.proc.stop());
  return a;
}

async function capture(t: TapTest, name: string, selector = 'app == "logging"'): Promise<void> {
  await w.applyCapture(name, `  selector: ${selector}\n  filters: [{protocol: UDP, ports: [53]}]`);
  t.teardown(() => c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name }).catch(() => undefined));
}

async function states(names: string[]): Promise<Map<string, { state?: string; message?: string; pods?: number }>> {
  const out = new Map<string, { state?: string; message?: string; pods?: number }>();
  for (const n of names) out.set(n, (await reportedEntry(w.kube, w.ns, n, node.name)) ?? {});
  return out;
}

t.test('a cap on capture workers per node: the capture past it is an Error naming the budget', async (t) => {
  await agent(t, ['--max-capture-workers=2']);
  await capture(t, 'cap-1');
  const e = await waitFor(async () => {
    const s = (await states(['cap-1'])).get('cap-1')!;
    return s.state === 'Error' && /not captured: logging-\d, logging-\d/.test(s.message ?? '') ? s : undefined;
  }, { what: 'the budget to refuse two of four workers', timeoutMs: 20_000 });
  t.match(e.message, /node budget: 2 capture workers \(pod interfaces\) already run on node .*--max-capture-workers allows; not captured: logging-\d, logging-\d$/);
  t.equal(e.pods, 2, 'the two admitted workers run');
});

t.test('disk is reserved over all captures: together they never take more than the disk has', async (t) => {
  const disk = await scratchDir(t, 'budget-disk');
  await run('mount', ['-t', 'tmpfs', '-o', 'size=7m', 'kube-pcap-budget', disk]);
  t.teardown(() => run('umount', [disk]).catch(() => undefined));
  // Each worker may hold (1 + 2) x (1 MB + a 4 KiB source record) = 3.01 MB (its rotated file,
  // the file being written, a rotation's copy): two fit in 7 MiB (less the capture
  // directories' own small files), a third does not.
  const a = await agent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=1'], disk);
  const names = ['disk-a', 'disk-b', 'disk-c'];
  for (const n of names) await capture(t, n, 'pod == "logging-0"');
  const refused = await waitFor(async () => {
    const s = await states(names);
    const errors = [...s.entries()].filter(([, e]) => e.state === 'Error');
    return errors.length === 1 && [...s.values()].every((e) => e.state !== undefined) ? { s, errors } : undefined;
  }, { what: 'the budget to refuse one capture', timeoutMs: 20_000 });
  t.match(refused.errors[0]![1].message, /not enough disk space on node .*: .* free in .*, .* of it reserved by running captures/);
  const running = [...refused.s.values()].reduce((n, e) => n + (e.pods ?? 0), 0);
  t.ok(running <= 2, `${running} workers run: what 7 MiB holds at 3.01 MB each`);
  // Padded queries from the pod both captures select: megabytes in seconds.
  startDnsSender(t, pods[0]!, w.dns.ip, 'fill', 0, 1, w.logDir, 1400);
  // Traffic fills and rotates their files; the disk never holds more than the reservation.
  await waitFor(async () => [...(await states(names)).values()].filter((e) => e.state === 'Capturing').length === 2, { what: 'traffic in the admitted captures', timeoutMs: 20_000 });
  // Let each admitted capture fill and rotate its files a few times: its disk use then is
  // at its most (a full rotated file, a current one growing towards full).
  const rotations = (): Promise<number> => agentMetric(a, w.pki, scraper, 'kube_pcap_agent_rotations_total');
  await waitFor(async () => (await rotations()) >= running * 2, { what: 'the files to fill and rotate', timeoutMs: 60_000, intervalMs: 500 });
  const used = Number((await run('du', ['-sb', disk])).stdout.split('\t')[0]);
  t.comment(`disk: ${used} bytes used by ${running} admitted workers, reservation ${running * PER_WORKER}`);
  t.ok(used <= running * PER_WORKER + 16 * 1024, `${used} bytes on the disk, reservation ${running * PER_WORKER}`);
});

t.test('pinned files count against the disk budget: a capture refused while a download holds them starts when it ends', async (t) => {
  const disk = await scratchDir(t, 'pin-disk');
  await run('mount', ['-t', 'tmpfs', '-o', 'size=5m', 'kube-pcap-pins', disk]);
  t.teardown(() => run('umount', [disk]).catch(() => undefined));
  // A finished capture's files, 2 MB of them, that a download is about to pin.
  await capture(t, 'pinned-old', 'app == "nothing-here"');
  const dir = join(disk, w.ns, 'pinned-old');
  await mkdir(dir, { recursive: true });
  const held = (await writeDnsPcap(join(dir, 'old-0_cali0-1700000000000001.pcap'), 20_000)).length;
  t.ok(held > 1_900_000, `${held} bytes of files`);
  const a = await agent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=1'], disk);
  const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
  const call = agentRequester(a, w.pki, gatewayToken);
  const made = await call(`/v1/captures/${w.ns}/pinned-old/pins`, { method: 'POST' });
  t.equal(made.status, 201, made.text);
  const pin = JSON.parse(made.text) as { id: string };
  t.equal(await agentMetric(a, w.pki, scraper, 'kube_pcap_agent_pinned_bytes'), held);
  // ~3.2 MB free would hold a worker's 2.53 MB, but not beside the 2 MB the pin may come to hold alone.
  await capture(t, 'after-pin', 'pod == "logging-0"');
  const refused = await waitFor(async () => {
    const e = (await states(['after-pin'])).get('after-pin')!;
    return e.state === 'Error' ? e : undefined;
  }, { what: 'the capture to be refused for disk', timeoutMs: 20_000 });
  t.match(refused.message, /not enough disk space on node .* reserved by running captures and downloads' pinned files/);
  t.equal((await call(`/v1/captures/${w.ns}/pinned-old/pins/${pin.id}`, { method: 'DELETE' })).status, 200);
  await w.waitForState('after-pin', 'node-1', 'Capturing');
  t.pass('released: the refused capture started');
});

t.test('a pin refused for disk measures free space again first: space freed since the last reconcile counts', async (t) => {
  const disk = await scratchDir(t, 'stale-disk');
  await run('mount', ['-t', 'tmpfs', '-o', 'size=5m', 'kube-pcap-stale', disk]);
  t.teardown(() => run('umount', [disk]).catch(() => undefined));
  // Someone else's 2 000 KiB on the disk: about 3.2 MB free, enough for one worker's 3.01 MB.
  const junk = join(disk, 'someone-elses.bin');
  await run('dd', ['if=/dev/zero', `of=${junk}`, 'bs=1024', 'count=2000']);
  const a = await agent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=1'], disk);
  await capture(t, 'stale-cap', 'pod == "logging-0"');
  await w.waitForState('stale-cap', 'node-1', 'Capturing');
  startDnsSender(t, pods[0]!, w.dns.ip, 'stale', 0, 10, w.logDir, 1400);
  const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
  const call = agentRequester(a, w.pki, gatewayToken);
  // Its files grow past what is left beside the worker's reservation: a pin is refused.
  const refused = await waitFor(async () => {
    const r = await call(`/v1/captures/${w.ns}/stale-cap/pins`, { method: 'POST' });
    if (r.status === 201) await call(`/v1/captures/${w.ns}/stale-cap/pins/${(JSON.parse(r.text) as { id: string }).id}`, { method: 'DELETE' });
    return r.status === 507 ? r : undefined;
  }, { what: 'a pin to be refused for disk', timeoutMs: 20_000, intervalMs: 200 });
  t.match(refused.text, /not enough disk space on node .* to pin/);
  // The user frees the disk. Nothing reconciles the capture (no pod or capture changed):
  // only a fresh measurement sees it.
  await run('rm', [junk]);
  const made = await call(`/v1/captures/${w.ns}/stale-cap/pins`, { method: 'POST' });
  t.equal(made.status, 201, `pinned once the space is free: ${made.text.slice(0, 300)}`);
});

t.test('with the default worker cap reached under traffic, the agent stays well inside its memory limit', async (t) => {
  const a = await agent(t);
  const names = Array.from({ length: 8 }, (_, i) => `mem-${i}`);
  for (const n of names) await capture(t, n, `app == "logging" && !has(x${n.replace('-', '')})`);
  await waitFor(async () => [...(await states(names)).values()].every((e) => e.state === 'Capturing' && e.pods === 4), { what: '32 workers capturing', timeoutMs: 60_000, intervalMs: 500 });
  const metric = (name: string): Promise<number> => agentMetric(a, w.pki, scraper, name);
  await waitFor(async () => (await metric('kube_pcap_agent_capture_interfaces')) === 32, { what: 'the gauge to show the default cap, 32 workers', timeoutMs: 15_000, intervalMs: 500 });
  const written = await metric('kube_pcap_agent_packets_written_total');
  await waitFor(async () => (await metric('kube_pcap_agent_packets_written_total').catch(() => 0)) >= written + 5000, { what: 'more traffic through all workers', timeoutMs: 60_000, intervalMs: 500 });
  const status = await readFile(`/proc/${a.proc.pid}/status`, 'utf8');
  const hwmKiB = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
  const limitMiB = await shippedMemoryLimitMiB('DaemonSet', 'kube-pcap-agent', 'agent');
  t.comment(`agent peak RSS with 32 workers under traffic: ${(hwmKiB / 1024).toFixed(0)} MiB (limit ${limitMiB} MiB)`);
  t.ok(hwmKiB / 1024 < 0.75 * limitMiB, `agent peak RSS ${(hwmKiB / 1024).toFixed(0)} MiB < 75% of the DaemonSet's ${limitMiB} MiB limit`);
});

t.test('/metrics: 401 without a token, 403 without get /metrics, 200 for a reader', async (t) => {
  const a = await agent(t);
  const url = `https://${a.address}:${a.port}/metrics`;
  const opts = { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME };
  t.equal((await https(url, opts)).status, 401);
  const nobody = await c.tokenFor(w.ns, 'default');
  const denied = await https(url, { ...opts, token: nobody });
  t.equal(denied.status, 403);
  t.match(denied.json<{ message: string }>().message, /cannot get the non-resource URL \/metrics/);
  const ok = await https(url, { ...opts, token: scraper });
  t.equal(ok.status, 200);
  t.match(ok.body.toString(), /kube_pcap_agent_capture_interfaces/);
  t.equal((await https(`https://${a.address}:${a.port}/healthz`, opts)).status, 200, 'health stays open for the kubelet');
});
