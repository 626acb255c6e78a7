// What goes wrong is reported in status (state Error with a message saying what to do),
// never a crash loop and never "capture everything": an invalid selector, a disk too small
// to start, a disk that fills up, no tcpdump, a pod without a route on this node.
import { execFile } from 'node:child_process';
import { mkdir, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, readCaptureDir } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { https } from '../harness/http.js';
import { AGENT_SERVER_NAME, scratchDir, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import type { TapTest } from '../harness/tap.js';
import { createPodObject } from '../harness/topology.js';
import { waitFor } from '../harness/wait.js';
import { reportedEntry } from '../harness/node-reports.js';

const run = promisify(execFile);
const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });

/** A small filesystem of its own for the agent's capture directory (unmounted after). */
async function smallDisk(t: TapTest, size: string): Promise<string> {
  const dir = await scratchDir(t, 'small-disk');
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'kube-pcap-small', dir]);
  t.teardown(() => run('umount', [dir]).catch(() => undefined));
  return dir;
}

async function agent(t: TapTest, args: string[] = [], captureDir?: string): Promise<void> {
  const a = await w.startAgent(node, args, captureDir);
  t.teardown(() => a.proc.stop());
}

/** A capture for one subtest only: gone before the next one starts. */
async function capture(t: TapTest, name: string, spec: string): Promise<void> {
  await w.applyCapture(name, spec);
  t.teardown(() => c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name }));
}

t.test('an invalid selector: Error with the parser\'s message, nothing captured', async (t) => {
  await agent(t);
  await capture(t, 'bad-selector', '  selector: app = "logging"');
  const e = await w.waitForState('bad-selector', 'node-1', 'Error');
  t.match(e.message, /invalid selector at position 4: expected "==" \(a single "=" is not an operator\)/);
  t.equal(e.pods, 0);
  t.same(await captureFiles(w.captureDir('node-1', 'bad-selector')), []);
});

t.test('not enough disk to start: Error naming free and needed space', async (t) => {
  await agent(t, [], await smallDisk(t, '1m'));
  await capture(t, 'no-room', '  selector: app == "logging"');
  const e = await w.waitForState('no-room', 'node-1', 'Error');
  t.match(e.message, /not enough disk space on node node-1-[0-9a-f]{6}: .* free in .*, a capture of one pod interface needs \(captureMaxFiles \+ 2\) x \(captureMaxSizeBytes \+ 4 KiB for each file's source record\) = 40\.0 MB/);
  t.equal(e.pods, 0, 'no capture was started');
});

t.test('a disk that fills up: the capture stops cleanly, with valid files and an Error', async (t) => {
  // Room for one capture of one pod interface: 3 x (1 MB + a packet + its source record).
  const disk = await smallDisk(t, '8m');
  await agent(t, ['--capture-max-size-bytes=1000000', '--capture-max-files=2'], disk);
  await capture(t, 'fills-up', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState('fills-up', 'node-1', 'WaitingForTraffic');
  // Someone else takes the disk while the capture runs: 32 KiB stay free, far less than the
  // megabytes the capture's rotation could need.
  await mkdir(join(disk, 'other'), { recursive: true });
  const fs = await statfs(disk);
  await writeFile(join(disk, 'other', 'ballast'), Buffer.alloc(fs.bavail * fs.bsize - 32 * 1024));
  const sender = startDnsSender(t, client, w.dns.ip, 'fill', 0, 5, w.logDir);
  const e = await w.waitForState('fills-up', 'node-1', 'Error', 30_000);
  await sender.stop();
  t.match(e.message, /no space left on the device/);
  const dir = w.captureDir('node-1', 'fills-up');
  const files = await readCaptureDir(dir);
  t.ok(files.size > 0, 'files were written before the disk filled');
  t.ok(allPackets(files).length > 0, `and every one is valid pcap (${allPackets(files).length} packets read from ${[...files.keys()].join(', ')}; ${e.message})`);
  // Stopped by the full disk, the capture is no longer "capturing": its files can go.
  const a = w.agents.get('node-1')!;
  const token = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
  const del = await https(`https://${a.address}:${a.port}/v1/captures/${w.ns}/fills-up/files`, { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME, clientCert: w.pki.gatewayClient, token, method: 'DELETE' });
  t.equal(del.status, 200, `DELETE of the files: ${del.status} ${del.body.toString().slice(0, 200)}`);
  t.same(await captureFiles(dir), [], 'the files are gone');
});

t.test('no tcpdump on the node: Error saying so', async (t) => {
  await agent(t, ['--tcpdump=/nonexistent/tcpdump']);
  await capture(t, 'no-tcpdump', '  selector: app == "logging"');
  const e = await w.waitForState('no-tcpdump', 'node-1', 'Error');
  t.match(e.message, /tcpdump not found/);
  await capture(t, 'no-tcpdump-filtered', '  selector: app == "logging"\n  filters: [{protocol: TCP}]');
  const f = await w.waitForState('no-tcpdump-filtered', 'node-1', 'Error');
  t.match(f.message, /tcpdump not found/);
});

t.test('a matching pod without a route on this node is named in the message, never its uplink captured', async (t) => {
  await agent(t);
  // The API server says the pod runs here with this IP, but no CNI wired it (yet).
  await createPodObject(c, { namespace: w.ns, name: 'logging-unwired', node: w.nodeName('node-1'), ip: '192.0.2.60', labels: { app: 'unwired' } });
  await capture(t, 'unwired', '  selector: app == "unwired"');
  const e = await waitFor(async () => {
    const entry = await reportedEntry(w.kube, w.ns, 'unwired', w.nodeName('node-1'));
    return entry?.message?.includes('logging-unwired') ? entry : undefined;
  }, { what: 'a message about the unwired pod', timeoutMs: 15_000 });
  t.match(e.message, /pod logging-unwired: the pod's IP 192\.0\.2\.60 is routed through the gateway/);
  t.equal(e.pods, 0, 'nothing is captured');
  t.equal(e.state, 'WaitingForTraffic');
});
