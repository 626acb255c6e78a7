// Where each capture file's packets come from (src/agent/file-source.ts), recorded by the
// agent when it starts the file and returned in its listings and pins: node, namespace,
// capture, pod (name, uid, IPs), interface, link type, snap length, timestamp resolution.
// The record stays with the file through rotation and goes with it when it is pruned.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { agentRequester } from '../harness/agent-request.js';
import { cluster } from '../harness/cluster.js';
import { captureFiles, captureWorld } from '../harness/capture-fixture.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
// Small files and few kept: many rotations and prunes within seconds.
const w = await captureWorld(t, c, { nodes: 1, agentArgs: ['--capture-max-size-bytes=8192', '--capture-max-files=2'] });
const node = w.nodes[0]!;
const pod = await w.addPod(node, 'logging-a', { app: 'logging' });
const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
const call = agentRequester(w.agents.get('node-1')!, w.pki, gatewayToken);
await w.applyCapture('sourced', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n  snapLen: 128');
await w.waitForState('sourced', 'node-1', 'WaitingForTraffic');
startDnsSender(t, pod, w.dns.ip, 'src', 0, 5, w.logDir);
const dir = w.captureDir('node-1', 'sourced');

interface Listed { name: string; source?: Record<string, unknown> }

t.test('every file says which node, pod, interface, link type and snap length its packets come from', async (t) => {
  const podObject = await c.core.readNamespacedPod({ name: 'logging-a', namespace: w.ns });
  // Rotated more than twice: the oldest files were pruned.
  const files = await waitFor(async () => {
    const r = await call(`/v1/captures/${w.ns}/sourced/files`);
    const l = JSON.parse(r.text) as Listed[];
    return l.length === 3 ? l : undefined;
  }, { what: 'two rotated files and the live one', timeoutMs: 20_000 });
  for (const f of files) {
    t.same(f.source, {
      node: w.nodeName('node-1'), namespace: w.ns, capture: 'sourced', pod: 'logging-a', podUID: podObject.metadata!.uid,
      podIPs: [pod.ip], iface: pod.hostIface, linkType: 1, snapLen: 128, tsresol: 6,
    }, f.name);
  }
});

t.test('sources go with pruned files: no more records than files, and a pin carries them', async (t) => {
  await waitFor(async () => {
    const names = (await readdir(dir)).filter((f) => f.endsWith('.pcap'));
    return names.some((f) => /-\d{16}\.pcap$/.test(f)) ? true : undefined;
  }, { what: 'rotations', timeoutMs: 20_000 });
  // Many rotations later, the records are those of the files there (one more at most while a rotation is under way).
  const [files, sources] = [await captureFiles(dir), await readdir(join(dir, '.sources'))];
  t.ok(sources.filter((s) => s.endsWith('.json')).length <= files.length + 1, `${sources.length} source records for ${files.length} files`);
  const pin = await call(`/v1/captures/${w.ns}/sourced/pins`, { method: 'POST' });
  t.equal(pin.status, 201, pin.text);
  const body = JSON.parse(pin.text) as { id: string; files: Listed[] };
  t.ok(body.files.length > 0 && body.files.every((f) => f.source?.pod === 'logging-a' && f.source.snapLen === 128), 'the pinned listing has every file\'s source');
  await call(`/v1/captures/${w.ns}/sourced/pins/${body.id}`, { method: 'DELETE' });
});
