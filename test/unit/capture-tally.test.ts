// The capture's count on a node and its limits (src/agent/capture-tally.ts, limit-trim.ts):
// while tcpdumps write, their count may pass a limit; once none runs, the files are counted
// record by record and cut to the limits, in time order over all the capture's pod
// interfaces, without touching a pinned file's bytes; the count outlives deleted files and a
// restart, and another capture's file is not ours.
import { link, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CaptureTally, limitReached, TALLY_FILE } from '../../src/agent/capture-tally.js';
import { DiskFullError } from '../../src/agent/disk-full.js';
import { run } from '../harness/http.js';
import { pcapGlobalHeader, pcapRecord } from '../harness/pcap-fixtures.js';
import type { TapTest } from '../harness/tap.js';

const T0 = 1_700_000_000_000_000;
/** A pcap file of records of `size` bytes of packet (record: size + 16) at these times (ms after T0). */
function pcap(size: number, ms: number[]): Buffer {
  return Buffer.concat([pcapGlobalHeader(), ...ms.map((m) => pcapRecord(Buffer.alloc(size, 1), T0 + m * 1000))]);
}

async function dir(t: TapTest): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'tally-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const onDisk = async (d: string): Promise<{ uid: string; packets: number; bytes: number; bytesRefusedAt?: number; gone?: { packets: number; bytes: number } }> => JSON.parse(await readFile(join(d, TALLY_FILE), 'utf8'));
const pcaps = async (d: string): Promise<string[]> => (await readdir(d)).filter((f) => f.endsWith('.pcap')).sort();

t.test('maxPackets: the files are cut to exactly the limit, the earliest packets of every pod interface kept', async (t) => {
  const d = await dir(t);
  // Two pod interfaces; web has a rotated file and its current one.
  await writeFile(join(d, 'web-0_eth0-1700000000000000.pcap'), pcap(10, [0, 2, 4]));
  await writeFile(join(d, 'web-0_eth0.pcap'), pcap(10, [6, 8, 10]));
  await writeFile(join(d, 'db-0_eth0.pcap'), pcap(10, [1, 3, 5, 7, 9]));
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 7 });
  t.equal(tally.add(11, 11 * 26), 'maxPackets', 'the tcpdumps\' count went past');
  await tally.settle();
  t.same([tally.packets, tally.bytes], [7, 7 * 26], 'exactly the limit once counted');
  t.same(await onDisk(d), { uid: 'u1', packets: 7, bytes: 182, gone: { packets: 0, bytes: 0 } });
  // Kept in time order: 0..6 ms, so web keeps 0, 2, 4, 6 and db keeps 1, 3, 5.
  t.equal((await stat(join(d, 'web-0_eth0-1700000000000000.pcap'))).size, 24 + 3 * 26);
  t.equal((await stat(join(d, 'web-0_eth0.pcap'))).size, 24 + 26);
  t.equal((await stat(join(d, 'db-0_eth0.pcap'))).size, 24 + 3 * 26);
  t.equal(limitReached({ maxPackets: 7 }, tally), 'maxPackets');
  tally.setLimits({ maxPackets: 20 });
  t.equal(tally.reached(), undefined, 'a raised limit lets the capture go on');
});

t.test('maxBytes: the first record that does not fit ends it, even if a smaller one would', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, 'a_eth0.pcap'), Buffer.concat([pcap(40, [0]), pcapRecord(Buffer.alloc(40, 2), T0 + 1000), pcapRecord(Buffer.alloc(4, 3), T0 + 2000)]));
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxBytes: 100 });
  tally.add(3, 56 + 56 + 20);
  await tally.settle();
  t.same([tally.packets, tally.bytes], [1, 56], '56 + 56 > 100: the second does not fit, and nothing after it');
  t.equal(tally.reached(), 'maxBytes', 'reached although a 20-byte record would still fit');
  t.equal((await stat(join(d, 'a_eth0.pcap'))).size, 24 + 56);
  const again = await CaptureTally.load(d, 'u1');
  again.setLimits({ maxBytes: 100 });
  t.equal(again.reached(), 'maxBytes', 'and it stays reached after a restart');
});

t.test('a pinned file is not cut in place: the pin keeps its bytes, the name gets the cut copy with its source', async (t) => {
  const d = await dir(t);
  const file = join(d, 'a_eth0.pcap');
  await writeFile(file, pcap(10, [0, 1, 2, 3]));
  await link(file, join(d, 'pinned'));
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 2 });
  tally.add(4, 104);
  await tally.settle();
  t.equal((await stat(join(d, 'pinned'))).size, 24 + 4 * 26, 'the pin holds all it pinned');
  t.equal((await stat(file)).size, 24 + 2 * 26, 'the capture holds the limit');
  t.not((await stat(file)).ino, (await stat(join(d, 'pinned'))).ino);
});

t.test('deleted and pruned files stay counted; after a crash the files are counted again', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, 'a_eth0.pcap'), pcap(10, [0, 1, 2]));
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 10 });
  tally.add(3, 78);
  await tally.settle();
  // A file pruned by rotation: its records stay counted.
  await tally.forget(2, 52);
  // All files deleted through the API.
  await tally.forgetAll();
  for (const f of await pcaps(d)) await rm(join(d, f));
  await tally.settle();
  t.same([tally.packets, tally.bytes], [3, 78], 'the count stays when its files are gone');
  // A crash: tcpdumps wrote past the last count (the tally file is behind the files).
  await writeFile(join(d, 'a_eth0.pcap'), pcap(10, [3, 4, 5, 6, 7, 8, 9, 10, 11]));
  const restarted = await CaptureTally.load(d, 'u1');
  restarted.setLimits({ maxPackets: 10 });
  await restarted.settle();
  t.same([restarted.packets, restarted.bytes], [10, 260], 'counted again from the files, and cut to the limit');
  t.same(await pcaps(d), ['a_eth0.pcap']);
  t.equal((await stat(join(d, 'a_eth0.pcap'))).size, 24 + 7 * 26);
});

t.test('a file of another capture (same name, new uid) or a damaged one is a fresh start', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, TALLY_FILE), JSON.stringify({ uid: 'old', packets: 99, bytes: 999 }));
  t.equal((await CaptureTally.load(d, 'new')).packets, 0);
  await writeFile(join(d, TALLY_FILE), '{"uid":"new","packets":-3');
  t.equal((await CaptureTally.load(d, 'new')).packets, 0);
  await writeFile(join(d, TALLY_FILE), JSON.stringify({ uid: 'new', packets: 1.5, bytes: 3 }));
  t.equal((await CaptureTally.load(d, 'new')).packets, 0, 'not a count');
});

t.test('without limits nothing is read or written', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, 'a_eth0.pcap'), pcap(10, [0, 1, 2]));
  const tally = await CaptureTally.load(d, 'u1');
  tally.add(3, 78);
  await tally.settle();
  t.same(await pcaps(d), ['a_eth0.pcap']);
  await t.rejects(readFile(join(d, TALLY_FILE)), /ENOENT/);
});

t.test('a full disk fails the count\'s write as a full disk', async (t) => {
  const d = await dir(t);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'kube-pcap-tally', d]);
  t.teardown(() => run('umount', [d]).catch(() => undefined));
  await writeFile(join(d, 'filler'), Buffer.alloc(4096)).catch(() => undefined);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 100 });
  await t.rejects(tally.settle(), DiskFullError);
});
