// The pcapng pieces of the merged download (src/pcap/pcapng.ts, src/pcap/merge.ts), read by
// real tshark: several pods' classic pcap files (each pod's in rotation order) merged in
// timestamp order into one pcapng whose interfaces name the pods, whose Name Resolution Block
// names their IPs, with every packet of every file kept, a pod whose clock steps back included.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { mergeToPcapng, PcapFileSequence } from '../../src/pcap/merge.js';
import { interfaceDescriptionBlock, interfaceStatisticsBlock, nameResolutionBlock, PacketEncoder, sectionHeaderBlock } from '../../src/pcap/pcapng.js';
import { run } from '../harness/http.js';
import type { TapTest } from '../harness/tap.js';
import { dnsQueryFrame, pcapGlobalHeader, pcapRecord } from '../harness/pcap-fixtures.js';

/**
 * A pod's packets (DNS queries from `src` at these microsecond timestamps) as classic pcap
 * files of `perFile` records each, in the order they were written.
 */
async function podFiles(dir: string, pod: string, src: string, micros: number[], perFile = 2): Promise<{ name: string; path: string; size: number }[]> {
  const files = [];
  for (let f = 0; f * perFile < micros.length; f++) {
    const bytes = Buffer.concat([pcapGlobalHeader(), ...micros.slice(f * perFile, (f + 1) * perFile).map((us, j) => {
      const i = f * perFile + j;
      return pcapRecord(dnsQueryFrame(src, '192.0.2.53', 40000, i, `${src.replace(/\./g, '-')}-${i}.storefront.example`), us);
    })]);
    const name = `${pod}_eth0-${f}.pcap`;
    await writeFile(join(dir, name), bytes);
    files.push({ name, path: join(dir, name), size: bytes.length });
  }
  return files;
}

const pods = [
  { node: 'node-1', pod: 'web-0', ip: '192.0.2.10', micros: [1, 5, 9, 13, 17].map((x) => 1_700_000_000_000_000 + x * 1000) },
  { node: 'node-2', pod: 'web-1', ip: '192.0.2.11', micros: [2, 3, 10, 11, 30].map((x) => 1_700_000_000_000_000 + x * 1000) },
  // A kernel clock that steps back once (12 after 14): kept, in its own order.
  { node: 'node-2', pod: 'db-0', ip: '192.0.2.12', micros: [4, 14, 12, 20].map((x) => 1_700_000_000_000_000 + x * 1000) },
];

async function mergedFile(t: TapTest): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pcapng-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out: Buffer[] = [sectionHeaderBlock({ application: 'kube-pcap test', os: 'Linux' })];
  const inputs = [];
  for (const [i, p] of pods.entries()) {
    // A read buffer smaller than one record: every record is read across refills, and the buffer grows to fit.
    const records = new PcapFileSequence(await podFiles(dir, p.pod, p.ip, p.micros), undefined, 40);
    const h = await records.open();
    out.push(interfaceDescriptionBlock({ linkType: h!.linktype, snapLen: h!.snaplen, tsresol: 6, name: `${p.node}/shop/${p.pod}/eth0`, description: `k8s.node=${p.node};k8s.namespace=shop;k8s.pod=${p.pod};k8s.capture=cap` }));
    inputs.push({ records, interfaceId: i });
  }
  out.push(nameResolutionBlock(pods.map((p) => ({ ip: p.ip, names: [`${p.pod}.shop`] }))));
  for await (const chunk of mergeToPcapng(inputs, new PacketEncoder(1024))) out.push(chunk);
  out.push(interfaceStatisticsBlock({ interfaceId: 0, timestamp: 1_700_000_000_020_000n, kernelDrops: 3, comment: '0 packets skipped' }));
  const file = join(dir, 'merged.pcapng');
  await writeFile(file, Buffer.concat(out));
  return file;
}

t.test('tshark reads the merged pcapng cleanly: every packet, under its pod\'s interface, in time order', async (t) => {
  const file = await mergedFile(t);
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'frame.interface_description', '-e', 'frame.time_epoch', '-e', 'ip.src']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^Running as user/.test(l)).join('\n'), '', 'no warnings');
  const rows = r.stdout.trim().split('\n').map((l) => l.split('|'));
  t.equal(rows.length, pods.reduce((n, p) => n + p.micros.length, 0), 'the sum of the streams\' packets');
  for (const [name, description, , src] of rows) {
    const p = pods.find((x) => x.ip === src)!;
    t.equal(name, `${p.node}/shop/${p.pod}/eth0`);
    t.equal(description, `k8s.node=${p.node};k8s.namespace=shop;k8s.pod=${p.pod};k8s.capture=cap`);
  }
  const times = rows.map((row) => Math.round(Number(row[2]) * 1e6) - 1_700_000_000_000_000);
  t.same(times, [1, 2, 3, 4, 5, 9, 10, 11, 13, 14, 12, 17, 20, 30].map((x) => x * 1000), 'merged by time; the stepped-back packet comes right after its predecessor, not dropped');
});

t.test('with name resolution from the file, tshark shows pod names, not addresses', async (t) => {
  const file = await mergedFile(t);
  const r = await run('tshark', ['-r', file, '-N', 'n', '-T', 'fields', '-e', 'ip.src_host']);
  t.equal(r.code, 0, r.stderr);
  t.same([...new Set(r.stdout.trim().split('\n'))].sort(), ['db-0.shop', 'web-0.shop', 'web-1.shop']);
});

t.test('capinfos: one section by kube-pcap, three interfaces with their link type and snap length', async (t) => {
  const file = await mergedFile(t);
  const r = await run('capinfos', ['-M', file]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /File type:\s+(Wireshark\/\.\.\. - )?pcapng/);
  t.match(r.stdout, /Number of interfaces in file: 3/);
  t.match(r.stdout, /Capture application:\s+kube-pcap test/);
  t.match(r.stdout, /Encapsulation = Ethernet \(1 - ether\)/);
  t.match(r.stdout, /Capture length = 262144/);
  t.match(r.stdout, /Number of packets:\s+14\n/);
  t.match(r.stdout, /Number of resolved IPv4 addresses in file: 3/);
});
