// The acceptance test: the README's user story (Quick start), every step asserted, every part real.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { allPackets, NAME, NS, StorefrontStory, type ZipContents } from './storefront-story.js';
import { waitFor } from '../harness/wait.js';

// Its own control plane: the story needs the literal namespace "storefront".
const story = await StorefrontStory.setup(t);
const [node1, node2] = story.nodes.map((n) => n.name) as [string, string];
const ipOf = (pod: string) => story.pods.get(pod)!.ip;

/** The pod each packet belongs to: its source for queries, its destination for answers. */
function clientOf(p: { src: string; dst: string; dstPort: number }): string {
  return p.dstPort === 53 ? p.src : p.dst;
}

t.test('1. devops-sa applies the PacketCapture with its own token; both nodes capture', async (t) => {
  t.match(await story.applyCapture(), new RegExp(`packetcapture.projectcalico.org/${NAME} created`));
  await waitFor(async () => {
    const files = await story.nodeStatus();
    return [node1, node2].every((n) => files.find((f) => f.node === n)?.state === 'Capturing');
  }, { what: 'both nodes to capture', timeoutMs: 20_000 });
  t.pass('node-1 and node-2 are Capturing');
});

t.test('2. with only the capture Role, the README\'s curl gets 403', async (t) => {
  const d = await story.download(story.devopsToken, 'step2');
  t.equal(d.curlExit, 0);
  t.equal(d.status?.code, 403);
  t.equal(d.status?.reason, 'Forbidden');
  t.match(d.status?.message, `system:serviceaccount:${NS}:devops-sa" cannot get packetcaptures/files`);
});

let first: ZipContents;
t.test('3. after the files Role is bound, the same curl gets a zip of both nodes\' files, UDP 53 of logging pods only', async (t) => {
  await story.grantFiles();
  await story.otherTraffic();
  const d = await waitFor(async () => {
    const r = await story.download(story.devopsToken, 'step3');
    return r.status === undefined ? r : undefined;
  }, { what: 'the download to be allowed', timeoutMs: 15_000, intervalMs: 500 });
  t.equal(d.curlExit, 0);
  first = await story.unpack(d.body, 'step3');
  const nodes = new Set([...first.files.keys()].map((k) => k.split('/')[0]));
  t.same([...nodes].sort(), [node1, node2], 'files from both nodes');
  t.ok([...first.files.keys()].some((k) => k.startsWith(`${node1}/logging-1_`)) && [...first.files.keys()].some((k) => k.startsWith(`${node2}/logging-2_`)), 'one per logging pod');
  const packets = allPackets(first.files);
  t.ok(packets.length > 20, `${packets.length} packets, every one read by tshark`);
  const logging = new Set([ipOf('logging-1'), ipOf('logging-2')]);
  t.ok(packets.every((p) => p.proto === 'DNS' && (p.srcPort === 53 || p.dstPort === 53)), 'every packet is DNS on UDP port 53');
  t.ok(packets.every((p) => logging.has(clientOf(p))), 'every packet is to or from a logging pod');
  t.notOk(packets.some((p) => p.query.includes('over-tcp') || p.query.includes('port-5353')), 'no DNS over TCP, no other UDP port');
  t.notOk(packets.some((p) => p.query.startsWith('web-1')), 'nothing of the web pod');
});

t.test('4. autoscaling and a crash: the next download has the new pod and the recreated one', async (t) => {
  const scaled = await story.scaleUp();
  const { before, after } = await story.crash();
  t.not(after.ip, before.ip, `logging-2 came back with a new IP (${before.ip} -> ${after.ip})`);
  const contents = await waitFor(async () => {
    const d = await story.download(story.devopsToken, 'step4');
    if (d.status) return undefined;
    const z = await story.unpack(d.body, 'step4');
    const clients = new Set(allPackets(z.files).map(clientOf));
    return clients.has(scaled.ip) && clients.has(after.ip) ? z : undefined;
  }, { what: 'a download with the new pods\' traffic', timeoutMs: 30_000, intervalMs: 1000 });
  const clients = new Set(allPackets(contents.files).map(clientOf));
  t.ok(clients.has(scaled.ip), 'the autoscaled logging-3');
  t.ok(clients.has(after.ip), 'the recreated logging-2');
  t.ok(clients.has(before.ip), 'and the first logging-2, whose file was kept');
  t.ok(allPackets(contents.files).every((p) => p.proto === 'DNS'), 'still only DNS');
});

t.test('5. a user of another namespace gets 403, an unauthenticated caller 401', async (t) => {
  const outsider = await story.download(await story.outsiderToken(), 'step5-outsider');
  t.equal(outsider.status?.code, 403);
  const anonymous = await story.download(undefined, 'step5-anonymous');
  t.equal(anonymous.status?.code, 401);
});

t.test('6. kubectl delete packetcapture stops the capture', async (t) => {
  t.match(await story.deleteCapture(), /deleted/);
  await waitFor(async () => (await story.tcpdumps()) === 0, { what: 'every tcpdump of the capture to stop', timeoutMs: 15_000 });
  for (const agent of story.agents) {
    await waitFor(async () => (await stat(story.captureDir(agent)).catch(() => undefined)) === undefined, { what: `${agent.node}'s files to go, with the capture`, timeoutMs: 15_000 });
  }
  // Traffic goes on; no file appears or grows any more.
  await story.otherTraffic();
  // .pins holds downloads' pinned files (docs/downloads.md), empty once they ended; .run is
  // where tcpdumps' output channels are made (unlinked at once).
  for (const agent of story.agents) t.same((await readdir(agent.captureDir)).filter((f) => f !== '.pins' && f !== '.run'), [], `${agent.node}: nothing captured any more`);
  for (const agent of story.agents) t.same(await readdir(join(agent.captureDir, '.run')).catch(() => []), [], `${agent.node}: no channel left behind`);
  for (const agent of story.agents) t.same(await readdir(join(agent.captureDir, '.pins')).catch(() => []), [], `${agent.node}: no pin left behind`);
  // Two gateway replicas: the one that answered step 2 may still hold that denial for
  // --authz-deny-ttl-seconds (5 s), which steps 3 to 6 can take less than.
  const seen: number[] = [];
  const gone = await waitFor(async () => {
    const d = await story.download(story.devopsToken, 'step6');
    seen.push(d.status?.code ?? 200);
    return d.status?.code === 404 ? d : undefined;
  }, { what: 'the download to answer 404', timeoutMs: 15_000, intervalMs: 500 });
  t.equal(gone.status?.code, 404, 'and the download says so');
  t.same(seen.filter((code) => code !== 404 && code !== 403), [], `nothing but a cached denial before it (${seen.join(', ')})`);
});
