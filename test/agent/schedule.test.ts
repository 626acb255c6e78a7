// The schedule and the end of a capture: Scheduled before startTime, Capturing from it;
// endTime moved to the past stops at once and keeps the files; deleting the resource
// stops and removes them.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureFiles, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { https } from '../harness/http.js';
import { AGENT_SERVER_NAME, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1 });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
const dir = w.captureDir('node-1', 'later');
const spec = (start: string, end?: string) => `  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n  startTime: "${start}"${end ? `\n  endTime: "${end}"` : ''}`;

t.test('Scheduled before startTime, then capturing from it', async (t) => {
  const start = new Date(Date.now() + 4000);
  await w.applyCapture('later', spec(start.toISOString()));
  const scheduled = await w.waitForState('later', 'node-1', 'Scheduled');
  t.equal(scheduled.pods, 0, 'no capture runs yet');
  await dig(client, w.dns.ip, 'too-early.storefront.example');
  await w.waitForState('later', 'node-1', 'WaitingForTraffic', 15_000);
  t.ok(Date.now() >= start.getTime(), 'not before startTime');
  await waitFor(async () => {
    await dig(client, w.dns.ip, 'on-time.storefront.example');
    return allPackets(await readCaptureDir(dir)).some((p) => p.query === 'on-time.storefront.example');
  }, { what: 'a query after startTime to be captured', timeoutMs: 10_000, intervalMs: 300 });
  await w.waitForState('later', 'node-1', 'Capturing');
  t.notOk(allPackets(await readCaptureDir(dir)).some((p) => p.query === 'too-early.storefront.example'), 'nothing from before startTime');
});

t.test('DELETE of the files is refused with 409 by the agent itself while it captures', async (t) => {
  // Straight to the agent, as the gateway calls it: the gateway's own 409 check (on the
  // status) is not the only guard; the agent knows what it is writing.
  const agent = w.agents.get('node-1')!;
  const token = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
  const res = await https(`https://${agent.address}:${agent.port}/v1/captures/${w.ns}/later/files`, { caFile: w.pki.ca.certFile, servername: AGENT_SERVER_NAME, clientCert: w.pki.gatewayClient, token, method: 'DELETE' });
  t.equal(res.status, 409);
  t.match(res.json<{ message: string }>().message, /still capturing on this node/);
  t.ok((await captureFiles(dir)).length > 0, 'the files are still there');
});

t.test('endTime moved to the past: Finished at once, files kept, nothing more written', async (t) => {
  const sender = startDnsSender(t, client, w.dns.ip, 'stream', 0, 50, w.logDir);
  await waitFor(async () => allPackets(await readCaptureDir(dir)).some((p) => p.query.startsWith('stream-')), { what: 'the stream to be captured', timeoutMs: 10_000 });
  const pc = await c.custom.getNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name: 'later' }) as { spec: { startTime: string } };
  await w.applyCapture('later', spec(pc.spec.startTime, new Date(Date.now() - 1000).toISOString()));
  const finished = await w.waitForState('later', 'node-1', 'Finished', 10_000);
  t.equal(finished.pods, 0, 'no capture runs');
  t.ok((finished.fileNames ?? []).length > 0, 'the files are listed');
  const files = await captureFiles(dir);
  const sizes = await Promise.all(files.map(async (f) => (await stat(join(dir, f))).size));
  // Traffic goes on; once Finished, files do not change.
  await waitFor(async () => (await dig(client, w.dns.ip, 'after-end.storefront.example')).includes('203.0.113.10'), { what: 'more traffic', timeoutMs: 5000 });
  t.same(await Promise.all(files.map(async (f) => (await stat(join(dir, f))).size)), sizes, 'no file grew');
  t.notOk(allPackets(await readCaptureDir(dir)).some((p) => p.query === 'after-end.storefront.example'));
  await sender.stop();
});

t.test('deleting the PacketCapture stops it and removes its files on the node', async (t) => {
  await c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name: 'later' });
  await waitFor(async () => (await stat(dir).catch(() => undefined)) === undefined, { what: 'the capture directory to be removed', timeoutMs: 10_000 });
  t.pass('removed');
});
