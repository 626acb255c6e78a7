// npm run demo — the README's user story (Quick start), narrated, on this machine: the storefront's
// logging pods flood CoreDNS; a DevOps engineer without admin rights captures their DNS
// traffic on every node, is refused the download until the files Role is granted, then
// gets one zip with every node's pcap files. Everything runs in a sandbox that disappears
// at the end (or on Ctrl-C); only demo-output/files.zip is left, for you to open.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Teardowns } from '../../bench/lib.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { waitFor } from '../harness/wait.js';
import { allPackets, NAME, NS, readmeCurlCommand, StorefrontStory, type Narrator, type ZipContents } from './storefront-story.js';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
let stepNo = 0;
const narrator: Narrator = {
  step: (title) => process.stdout.write(`\n${bold(`[${++stepNo}] ${title}`)}\n`),
  say: (text) => process.stdout.write(`${text}\n`),
};

function podOf(story: StorefrontStory, ip: string): string {
  for (const [name, pod] of story.pods) if (pod.ip === ip) return name;
  return ip;
}

/** Who talked to whom, and DNS queries per pod, from tshark's reading of every file. */
async function summarize(story: StorefrontStory, z: ZipContents, crashed?: string): Promise<void> {
  const name = (ip: string): string => (ip === crashed ? 'logging-2 (before the crash)' : ip === story.coredns.ip ? 'coredns' : podOf(story, ip));
  const packets = allPackets(z.files);
  const pairs = new Map<string, number>();
  const queries = new Map<string, number>();
  for (const p of packets) {
    const client = p.dstPort === 53 ? p.src : p.dst;
    const key = `${name(client)} (${client}) <-> ${name(p.dstPort === 53 ? p.dst : p.src)}`;
    pairs.set(key, (pairs.get(key) ?? 0) + 1);
    if (p.dstPort === 53) queries.set(name(client), (queries.get(name(client)) ?? 0) + 1);
  }
  narrator.say(dim('  top talkers (packets):'));
  for (const [pair, n] of [...pairs].sort((a, b) => b[1] - a[1]).slice(0, 6)) narrator.say(`    ${pair.padEnd(52)} ${n}`);
  narrator.say(dim('  DNS queries, per pod:'));
  for (const [pod, n] of [...queries].sort()) narrator.say(`    ${pod.padEnd(30)} ${n}`);
  const other = packets.filter((p) => p.proto !== 'DNS' || (p.srcPort !== 53 && p.dstPort !== 53)).length;
  narrator.say(`  ${packets.length} packets in ${z.files.size} files, read by tshark; ${other === 0 ? 'every one UDP port 53 (the DNS-over-TCP and port-5353 traffic was not captured)' : `${other} that are not UDP 53 (!)`}`);
}

async function main(): Promise<void> {
  const td = new Teardowns();
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    process.stdout.write('\nInterrupted: cleaning up...\n');
    void td.run().finally(() => process.exit(130));
  });
  try {
    process.stdout.write(bold('kube-pcap demo: the storefront\'s logging pods flood CoreDNS\n'));
    const story = await StorefrontStory.setup(td, narrator);
    const command = await readmeCurlCommand();

    narrator.step('The DevOps engineer (devops-sa, no admin rights) applies the PacketCapture, with their own token');
    narrator.say(dim('  $ kubectl apply -f deploy/examples/pc-storefront-logging-dns.yaml'));
    narrator.say(`  ${await story.applyCapture()}`);
    await waitFor(async () => (await story.nodeStatus()).filter((f) => f.state === 'Capturing').length === 2, { what: 'both nodes to capture', timeoutMs: 30_000 });
    const get = await story.c.kubectl(['get', 'packetcaptures', '-n', NS, '-o', 'wide']);
    narrator.say(dim('  $ kubectl get packetcaptures -n storefront -o wide'));
    narrator.say(get.stdout.trimEnd().split('\n').map((l) => `  ${l}`).join('\n'));
    for (const f of await story.nodeStatus()) narrator.say(`  ${f.node}: ${f.state}, ${f.fileNames?.join(', ')} (${f.packets} packets so far)`);

    narrator.step('They download the files, exactly as the README says, and are refused: the capture Role does not include the packets');
    narrator.say(dim(`  $ ${command.replace(/\s*\\\n\s*/g, ' ')}`));
    const refused = await story.download(story.devopsToken, 'refused');
    narrator.say(`  HTTP ${refused.status?.code} ${refused.status?.reason}: ${refused.status?.message}`);

    narrator.step('The namespace owner grants them packetcaptures/files (rbac-examples/files-role.yaml)');
    narrator.say(dim('  $ kubectl apply -f rbac-examples/files-role.yaml'));
    narrator.say((await story.grantFiles()).split('\n').map((l) => `  ${l}`).join('\n'));
    await story.otherTraffic();
    const allowed = await waitFor(async () => {
      const d = await story.download(story.devopsToken, 'allowed');
      return d.status === undefined ? d : undefined;
    }, { what: 'the download to be allowed', timeoutMs: 20_000, intervalMs: 500 });
    narrator.say(`  the same curl: HTTP 200, files.zip of ${allowed.body.length} bytes`);
    const first = await story.unpack(allowed.body, 'allowed');
    narrator.say(dim('  $ unzip -l files.zip'));
    for (const k of first.files.keys()) narrator.say(`    ${k}`);
    await summarize(story, first);

    narrator.step('Autoscaling adds logging-3 on node-1; logging-2 crashes and comes back with a new IP');
    const scaled = await story.scaleUp();
    const { before, after } = await story.crash();
    narrator.say(`  logging-3 at ${scaled.ip}; logging-2 ${before.ip} -> ${after.ip}`);
    const second = await waitFor(async () => {
      const d = await story.download(story.devopsToken, 'after-churn');
      if (d.status) return undefined;
      const z = await story.unpack(d.body, 'after-churn');
      const clients = new Set(allPackets(z.files).map((p) => (p.dstPort === 53 ? p.src : p.dst)));
      return clients.has(scaled.ip) && clients.has(after.ip) ? { d, z } : undefined;
    }, { what: 'the new pods in the capture', timeoutMs: 30_000, intervalMs: 1000 });
    narrator.say(`  the next download (${second.d.body.length} bytes) has them, without anybody touching the capture:`);
    for (const k of second.z.files.keys()) narrator.say(`    ${k}`);
    await summarize(story, second.z, before.ip);

    narrator.step('Everyone else is refused');
    const outsider = await story.download(await story.outsiderToken(), 'outsider');
    narrator.say(`  devops-sa of namespace checkout: HTTP ${outsider.status?.code} ${outsider.status?.reason}`);
    const anonymous = await story.download(undefined, 'anonymous');
    narrator.say(`  no token: HTTP ${anonymous.status?.code} ${anonymous.status?.reason} (${anonymous.status?.message})`);

    const out = join(REPO_ROOT, 'demo-output');
    await mkdir(out, { recursive: true });
    await copyFile(join(story.work, 'after-churn.zip'), join(out, 'files.zip'));
    await writeFile(join(out, 'README.txt'), `files.zip from kube-pcap's demo: ${NS}/${NAME}, entries <node>/<pod>_<interface>[-<unixMicros>].pcap\n`);

    narrator.step('kubectl delete packetcapture stops the capture (and, as in Calico, removes its files from the nodes)');
    narrator.say(dim(`  $ kubectl delete packetcapture ${NAME} -n ${NS}`));
    narrator.say(`  ${await story.deleteCapture()}`);
    await waitFor(async () => (await story.tcpdumps()) === 0, { what: 'the captures to stop', timeoutMs: 15_000 });
    narrator.say('  every tcpdump has stopped');

    process.stdout.write([
      '',
      bold('Done.') + ` The last download is in ${join(out, 'files.zip')}. To look at it in Wireshark:`,
      `  unzip -o demo-output/files.zip -d demo-output/files`,
      `  mergecap -w demo-output/storefront-dns.pcap demo-output/files/*/*.pcap   # one file, all nodes`,
      `  wireshark demo-output/storefront-dns.pcap        # or: tshark -r demo-output/storefront-dns.pcap`,
      'Everything else the demo started (API server, agents, gateways, namespaces) is gone with it.',
      '',
    ].join('\n'));
  } finally {
    if (!interrupted) await td.run();
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
