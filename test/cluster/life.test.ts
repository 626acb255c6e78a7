// A capture's life in a real cluster, with nobody touching the capture: a Deployment scaled
// up and a pod deleted (the ReplicaSet makes another, with a new address); the agent pod of
// a node deleted and its container killed (the DaemonSet and the kubelet bring it back;
// capture resumes, every file stays readable, no tcpdump of the old agent is left); a node
// drained (its pods move, and are captured where they land); the PacketCapture deleted
// (every node stops, the garbage collector removes its node reports).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { readPcap, type Packet } from '../harness/capture-fixture.js';
import { waitFor } from '../harness/wait.js';
import { dnsClientDeployment } from './cluster-story.js';
import { realCluster, type ClusterHandle } from './handle.js';
import { AGENTS_NS, ensureKubePcap } from './install.js';

const NS = 'life';
const CAPTURE = 'dns';
const c = await realCluster(t);
await ensureKubePcap(c);
await c.kubectl(['create', 'namespace', NS]);
t.teardown(async () => {
  await c.kubectl(['uncordon', 'node-2']);
  await c.kubectl(['delete', 'namespace', NS, '--wait=false']);
});
// ScheduleAnyway: when a node is drained, its pods must be able to land on the other one.
await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('logging', NS, c.info.images.workload, 2).replace('whenUnsatisfiable: DoNotSchedule', 'whenUnsatisfiable: ScheduleAnyway') });
await c.waitForPods(NS, 'app=logging', 2);
await c.kubectlOk(['apply', '-f', '-'], {
  input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${CAPTURE}, namespace: ${NS}}\nspec:\n  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n`,
});

/** Every packet of the capture's files on a node, read by tshark from the node's disk. */
async function nodePackets(c: ClusterHandle, node: string): Promise<Map<string, Packet[]>> {
  const dir = c.nodePath(node, `/var/lib/kube-pcap/${NS}/${CAPTURE}`);
  const out = new Map<string, Packet[]>();
  for (const f of (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.pcap')).sort()) out.set(f, await readPcap(join(dir, f)));
  return out;
}

/** The highest query number of a pod seen in a node's files. */
async function lastQuery(c: ClusterHandle, node: string, pod: string): Promise<number> {
  let last = -1;
  for (const packets of (await nodePackets(c, node)).values()) {
    for (const p of packets) {
      const m = new RegExp(`^${pod}-(\\d{6})\\.`).exec(p.query);
      if (m) last = Math.max(last, Number(m[1]));
    }
  }
  return last;
}

/** Every file of the capture on a node is read whole by tshark (readPcap throws otherwise). */
async function everyFileWhole(t: Test, c: ClusterHandle, node: string): Promise<void> {
  const files = await nodePackets(c, node);
  const packets = [...files.values()].reduce((n, p) => n + p.length, 0);
  t.ok(files.size > 0 && packets > 0, `${files.size} files on ${node}, ${packets} packets, every one read whole by tshark`);
}

async function capturedOn(c: ClusterHandle, node: string, pod: string, after = -1, timeoutMs = 60_000): Promise<number> {
  return await waitFor(async () => {
    const n = await lastQuery(c, node, pod);
    return n > after ? n : undefined;
  }, { what: `${pod}'s queries past #${after} in ${node}'s files`, timeoutMs, intervalMs: 500 });
}

/** The host interfaces this capture has written files of on a node ("<pod>_<iface>.pcap"). */
async function captureInterfaces(c: ClusterHandle, node: string): Promise<Set<string>> {
  const names = await readdir(c.nodePath(node, `/var/lib/kube-pcap/${NS}/${CAPTURE}`)).catch(() => [] as string[]);
  return new Set(names.map((n) => /_([^_]+?)(-\d{16})?\.pcap$/.exec(n)?.[1]).filter((i): i is string => i !== undefined));
}

/** This capture's tcpdump processes on a node (other tests' captures may run beside it). */
async function tcpdumps(c: ClusterHandle, node: string, ifaces?: Set<string>): Promise<{ pid: number; iface: string }[]> {
  const mine = ifaces ?? await captureInterfaces(c, node);
  return (await c.nodeProcesses(node)).filter((p) => p.comm === 'tcpdump')
    .map((p) => ({ pid: p.pid, iface: p.args[p.args.indexOf('-i') + 1] ?? '' }))
    .filter((d) => mine.has(d.iface));
}

t.test('scaled up and a pod deleted: the new pod and the replacement are captured, untouched capture', async (t) => {
  for (const p of await c.pods(NS, 'app=logging')) await capturedOn(c, p.node, p.name);
  await c.kubectlOk(['scale', 'deployment/logging', '-n', NS, '--replicas=3']);
  const three = await c.waitForPods(NS, 'app=logging', 3);
  for (const p of three) t.ok(await capturedOn(c, p.node, p.name) >= 0, `${p.name} on ${p.node} captured`);
  const victim = three[0]!;
  await c.kubectlOk(['delete', 'pod', victim.name, '-n', NS, '--wait=false']);
  const replacement = await waitFor(async () => {
    const now = await c.pods(NS, 'app=logging');
    const fresh = now.filter((p) => !three.some((q) => q.name === p.name));
    return now.length === 3 && fresh.length === 1 && fresh[0]!.ready ? fresh[0] : undefined;
  }, { what: `a replacement for ${victim.name}`, timeoutMs: 120_000, intervalMs: 250 });
  t.not(replacement.ip, victim.ip, `a new pod at a new address (${victim.ip} -> ${replacement.ip})`);
  t.ok(await capturedOn(c, replacement.node, replacement.name) >= 0, `the replacement ${replacement.name} captured on ${replacement.node}`);
  t.ok(await lastQuery(c, victim.node, victim.name) >= 0, `the deleted pod's file is kept on ${victim.node}`);
});

t.test('the agent pod of a node deleted mid-capture: replaced, capture resumes, no tcpdump of it left', async (t) => {
  const node = 'node-1';
  const [old] = (await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent')).filter((p) => p.node === node);
  const client = (await c.pods(NS, 'app=logging')).find((p) => p.node === node)!;
  const before = await capturedOn(c, node, client.name);
  const oldDumps = await tcpdumps(c, node);
  t.ok(oldDumps.length > 0, `${oldDumps.length} tcpdumps ran on ${node}`);
  await c.kubectlOk(['delete', 'pod', old!.name, '-n', AGENTS_NS]);
  const fresh = await waitFor(async () => (await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent')).find((p) => p.node === node && p.name !== old!.name && p.ready), { what: `a new agent pod on ${node}`, timeoutMs: 120_000, intervalMs: 250 });
  t.ok(fresh, `the DaemonSet made ${fresh.name} in place of ${old!.name}`);
  const after = await capturedOn(c, node, client.name, before + 5);
  t.ok(after > before, `capture resumed: ${client.name}'s query #${after} after #${before}`);
  const now = await tcpdumps(c, node);
  t.same(now.filter((d) => oldDumps.some((o) => o.pid === d.pid)), [], 'no tcpdump of the old agent runs on');
  t.equal(new Set(now.map((d) => d.iface)).size, now.length, 'one tcpdump per captured interface');
  await everyFileWhole(t, c, node);
});

t.test('the agent container killed (SIGKILL): the kubelet restarts it, capture resumes, no tcpdump of it left', async (t) => {
  const node = 'node-2';
  const client = (await c.pods(NS, 'app=logging')).find((p) => p.node === node)!;
  const [pod] = (await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent')).filter((p) => p.node === node);
  const restarts = async (): Promise<number> => Number((await c.kubectlOk(['get', 'pod', pod!.name, '-n', AGENTS_NS, '-o', 'jsonpath={.status.containerStatuses[0].restartCount}'])).trim() || 0);
  const restartsBefore = await restarts();
  const before = await capturedOn(c, node, client.name);
  const oldDumps = await tcpdumps(c, node);
  const agent = (await c.nodeProcesses(node)).find((p) => p.args.includes('/app/dist/src/cli.js') && p.args.includes('agent'));
  t.ok(agent, 'the agent\'s process on the node');
  process.kill(agent!.pid, 'SIGKILL');
  await waitFor(async () => (await restarts()) > restartsBefore, { what: 'the kubelet to restart the agent container', timeoutMs: 60_000, intervalMs: 250 });
  await c.waitForPods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent', c.nodeNames.length);
  const after = await capturedOn(c, node, client.name, before + 5);
  t.ok(after > before, `capture resumed: ${client.name}'s query #${after} after #${before}`);
  const now = await tcpdumps(c, node);
  t.same(now.filter((d) => oldDumps.some((o) => o.pid === d.pid)), [], 'no tcpdump of the killed container runs on');
  await everyFileWhole(t, c, node);
});

t.test('a node drained: its logging pods move and are captured where they land', async (t) => {
  const before = await c.pods(NS, 'app=logging');
  const moving = before.filter((p) => p.node === 'node-2');
  t.ok(moving.length > 0, `${moving.length} logging pods on node-2`);
  const drain = await c.kubectl(['drain', 'node-2', '--ignore-daemonsets', '--delete-emptydir-data', '--timeout=120s']);
  t.equal(drain.code, 0, 'kubectl drain node-2');
  if (drain.code !== 0) t.comment(drain.stderr);
  const landed = await waitFor(async () => {
    const now = await c.pods(NS, 'app=logging');
    return now.length === 3 && now.every((p) => p.ready && p.node === 'node-1') ? now : undefined;
  }, { what: 'every logging pod Ready on node-1', timeoutMs: 120_000, intervalMs: 250 });
  const replacements = landed.filter((p) => !moving.some((m) => m.name === p.name) && !before.some((b) => b.name === p.name));
  t.equal(replacements.length, moving.length, 'a replacement on node-1 for each pod that left node-2');
  for (const p of replacements) t.ok(await capturedOn(c, 'node-1', p.name) >= 0, `${p.name} captured on node-1`);
  t.ok((await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent')).some((p) => p.node === 'node-2'), 'node-2 keeps its agent (drain leaves DaemonSet pods)');
  await waitFor(async () => (await tcpdumps(c, 'node-2')).length === 0, { what: 'node-2 to capture nothing of this capture, with no logging pod left on it', timeoutMs: 60_000 });
  t.pass('node-2\'s tcpdumps of the capture ended with its pods');
  await c.kubectlOk(['uncordon', 'node-2']);
});

t.test('the PacketCapture deleted: every node stops, the garbage collector removes its node reports', async (t) => {
  const reports = await c.kubectlOk(['get', 'packetcapturenodereports', '-n', NS, '-o', 'name']);
  t.ok(reports.trim().split('\n').length >= 1, `reports before: ${reports.trim().split('\n').join(', ')}`);
  const ifaces = new Map<string, Set<string>>();
  for (const node of c.nodeNames) ifaces.set(node, await captureInterfaces(c, node));
  t.ok([...ifaces.values()].some((s) => s.size > 0), 'the capture had files on the nodes');
  await c.kubectlOk(['delete', 'packetcapture', CAPTURE, '-n', NS]);
  for (const node of c.nodeNames) await waitFor(async () => (await tcpdumps(c, node, ifaces.get(node))).length === 0, { what: `the capture's tcpdumps on ${node} to end`, timeoutMs: 60_000 });
  t.pass('none of its tcpdumps runs on any node');
  await waitFor(async () => (await c.kubectlOk(['get', 'packetcapturenodereports', '-n', NS, '-o', 'name'])).trim() === '', { what: 'the node reports to be garbage-collected', timeoutMs: 60_000, intervalMs: 500 });
  t.pass('node reports removed by the garbage collector (their owner is gone)');
  for (const node of c.nodeNames) {
    await waitFor(async () => (await readdir(c.nodePath(node, `/var/lib/kube-pcap/${NS}/${CAPTURE}`)).catch(() => undefined)) === undefined, { what: `${node}'s files of the capture to go`, timeoutMs: 60_000 });
  }
  t.pass('the files went with the capture on every node');
});
