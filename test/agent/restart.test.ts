// Restarts: the agent killed with SIGKILL mid-capture leaves only valid files and goes on
// in a new file when it is back; the API server restarting mid-capture costs nothing: the
// capture goes on, the watches recover, and a pod created afterwards is captured; the
// tcpdumps of a killed agent are ended by the next one (src/agent/leftover-tcpdumps.ts).
import { readdir, readFile } from 'node:fs/promises';
import t from 'tap';
import { privateCluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { queryCounts, startDnsSender } from '../harness/dns-sender.js';
import { waitFor } from '../harness/wait.js';

// Its own control plane: this file stops the API server.
const c = await privateCluster(t);
const w = await captureWorld(t, c, { nodes: 1 });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
await w.applyCapture('dns', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
await w.waitForState('dns', 'node-1', 'WaitingForTraffic');
const dir = w.captureDir('node-1', 'dns');
const sender = startDnsSender(t, client, w.dns.ip, 'steady', 0, 20, w.logDir);
const seqs = async () => queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'steady');

t.test('agent killed with SIGKILL mid-capture and restarted', async (t) => {
  await w.waitForState('dns', 'node-1', 'Capturing');
  await waitFor(async () => (await seqs()).size > 20, { what: 'capture under way', timeoutMs: 10_000 });
  await w.agents.get('node-1')!.proc.kill();
  const before = await captureFiles(dir);
  t.same(before, [`logging-a_${client.hostIface}.pcap`], 'one file was being written');
  // Every file on disk is valid pcap right now (tshark reads them without complaint).
  const atKill = allPackets(await readCaptureDir(dir));
  t.ok(atKill.length > 0, `${atKill.length} packets readable after the kill`);

  await w.startAgent(node);
  const after = await waitFor(async () => {
    const files = await captureFiles(dir);
    return files.length === 2 ? files : undefined;
  }, { what: 'a new file next to the old one', timeoutMs: 15_000 });
  t.match(after[0], new RegExp(`^logging-a_${client.hostIface}-\\d{16}\\.pcap$`), 'the file of before the kill was rotated');
  t.equal(after[1], `logging-a_${client.hostIface}.pcap`, 'capture continues in a new file');
  const last = Math.max(...(await seqs()).keys());
  await waitFor(async () => Math.max(...(await seqs()).keys()) > last + 10, { what: 'the new file to grow', timeoutMs: 10_000 });
  const entry = await w.waitForState('dns', 'node-1', 'Capturing');
  t.same(entry.fileNames, after, 'status converged on both files');
  for (const [f, packets] of await readCaptureDir(dir)) t.ok(packets.length > 0, `${f} valid`);
});

/** The agent's retry waits logged since `from` (a byte offset of its log). */
async function retryWaits(from: number): Promise<number[]> {
  const log = (await readFile(w.agents.get('node-1')!.logFile, 'utf8')).slice(from);
  return [...log.matchAll(/"retryInMs":(\d+)/g)].map((m) => Number(m[1]));
}

t.test('API server restarted mid-capture: capture goes on, watches recover within seconds, no pod missed', async (t) => {
  const before = Math.max(...(await seqs()).keys());
  const logStart = (await readFile(w.agents.get('node-1')!.logFile, 'utf8')).length;
  await c.controlPlane!.stopApiServer();
  await waitFor(async () => Math.max(...(await seqs()).keys()) > before + 20, { what: 'capture to go on while the API server is down', timeoutMs: 10_000 });
  // Down long enough for an uncapped back-off to have grown past 16 s (three watches retry).
  await waitFor(async () => (await retryWaits(logStart)).length >= 15, { what: 'the agent to retry its watches many times', timeoutMs: 60_000, intervalMs: 200 });
  await c.controlPlane!.startApiServer();
  const back = Date.now();
  // A pod scheduled right after the restart: the agent's re-established pod watch sees it.
  const late = await w.addPod(node, 'logging-late', { app: 'logging' });
  startDnsSender(t, late, w.dns.ip, 'late', 0, 50, w.logDir);
  await waitFor(async () => queryCounts(allPackets(await readCaptureDir(dir)).map((p) => p.query), 'late').size > 0, { what: 'the pod created after the restart to be captured', timeoutMs: 30_000, intervalMs: 100 });
  t.comment(`a pod created when the API server was back was captured ${Date.now() - back} ms later`);
  const waits = await retryWaits(logStart);
  t.ok(Math.max(...waits) <= 5000, `every retry waited at most 5 s (full jitter, capped): max ${Math.max(...waits)} ms over ${waits.length} retries`);
  t.ok(new Set(waits).size > waits.length / 2, 'the waits are jittered, not a fixed schedule');
  const entry = await waitFor(async () => {
    const e = await w.waitForState('dns', 'node-1', 'Capturing');
    return e.pods === 2 ? e : undefined;
  }, { what: 'status to show both pods', timeoutMs: 20_000 });
  t.equal(entry.pods, 2, 'status written again after the outage');
  const log = await readFile(w.agents.get('node-1')!.logFile, 'utf8');
  t.match(log, /watch failed; will resume it|list\/watch failed; will list again/, 'the agent noticed the outage');
  await sender.stop();
});

/** tcpdumps capturing on a host interface, by pid (zombies are not running). */
async function tcpdumpsOn(iface: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const [cmd, stat] = await Promise.all([readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => ''), readFile(`/proc/${e}/stat`, 'utf8').catch(() => '')]);
    const args = cmd.split('\0');
    if (args.some((a) => a.endsWith('tcpdump')) && args[args.indexOf('-i') + 1] === iface && !/\) Z /.test(stat)) out.push(Number(e));
  }
  return out;
}

t.test('tcpdumps of a killed agent do not run on: the next agent ends them (5 kills in a row)', async (t) => {
  // Nothing is sent on this pod: its tcpdump never writes to its channel, so it never
  // learns of the agent's death from SIGPIPE.
  const quiet = await w.addPod(node, 'quiet-a', { app: 'quiet' });
  await w.applyCapture('idle', '  selector: app == "quiet"');
  let survived = 0;
  for (let i = 0; i < 5; i++) {
    const [old] = await waitFor(async () => {
      const pids = await tcpdumpsOn(quiet.hostIface);
      return pids.length === 1 ? pids : undefined;
    }, { what: `one tcpdump on ${quiet.hostIface}`, timeoutMs: 20_000 });
    await w.agents.get('node-1')!.proc.kill();
    const outlived = (await tcpdumpsOn(quiet.hostIface)).includes(old!);
    if (outlived) survived++;
    await w.startAgent(node);
    await waitFor(async () => !(await tcpdumpsOn(quiet.hostIface)).includes(old!), { what: `the tcpdump of the killed agent (pid ${old}) to end`, timeoutMs: 20_000 });
    // Each agent's log is its own: the one that ended this kill's leftover says so.
    const logFile = w.agents.get('node-1')!.logFile;
    if (outlived) await waitFor(async () => /ended the tcpdumps an earlier agent left running/.test(await readFile(logFile, 'utf8')), { what: `agent ${i + 2} to say it ended tcpdump ${old}`, timeoutMs: 10_000 });
  }
  t.comment(`${survived} of 5 tcpdumps were still running when their agent was gone`);
  const left = await waitFor(async () => {
    const pids = await tcpdumpsOn(quiet.hostIface);
    return pids.length === 1 ? pids : undefined;
  }, { what: `the capture of ${quiet.hostIface} to run again`, timeoutMs: 20_000 });
  t.equal(left.length, 1, 'exactly one tcpdump on the quiet pod\'s interface: the new agent\'s');
  t.pass(`each agent that found a leftover tcpdump (${survived} of 5) said it ended it`);
});
