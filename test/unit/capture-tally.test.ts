// The capture's count on a node and its limits (src/agent/capture-tally.ts): batches are cut
// at the last record within maxPackets and maxBytes, the count on disk is always at least
// what was claimed, a graceful settle makes it exact, and another capture's file is not ours.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CaptureTally, limitReached, TALLY_FILE } from '../../src/agent/capture-tally.js';
import { DiskFullError } from '../../src/agent/rotating-pcap.js';
import { run } from '../harness/http.js';
import { pcapRecord } from '../harness/pcap-fixtures.js';
import type { TapTest } from '../harness/tap.js';

/** Records of the given packet sizes, back to back, and how to read their lengths. */
function block(sizes: number[]): Buffer {
  return Buffer.concat(sizes.map((n, i) => pcapRecord(Buffer.alloc(n, 1), 1_700_000_000_000_000 + i)));
}
/** The fixtures' records are little-endian. */
const LE = true;

async function dir(t: TapTest): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'tally-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const onDisk = async (d: string): Promise<{ uid: string; packets: number; bytes: number; bytesRefusedAt?: number }> => JSON.parse(await readFile(join(d, TALLY_FILE), 'utf8'));

t.test('maxPackets cuts a batch after the last record it allows, over several claims', async (t) => {
  const d = await dir(t);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 5 });
  t.same(await tally.claim(block([10, 10, 10]), 3, LE), { bytes: 78, records: 3 });
  t.equal(tally.reached(), undefined);
  t.same(await tally.claim(block([10, 10, 10]), 3, LE), { bytes: 52, records: 2 }, 'two of three fit');
  t.equal(tally.reached(), 'maxPackets');
  t.same(await tally.claim(block([10]), 1, LE), { bytes: 0, records: 0 }, 'nothing after');
  t.ok((await onDisk(d)).packets >= 5, 'the count on disk is never behind what was claimed');
});

t.test('maxBytes: a record that does not fit ends it, even if a smaller one would', async (t) => {
  const d = await dir(t);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxBytes: 100 });
  t.same(await tally.claim(block([40, 40]), 2, LE), { bytes: 56, records: 1 }, '56 + 56 > 100');
  t.equal(tally.reached(), 'maxBytes', 'reached although a 20-byte packet would still fit');
  t.same(await tally.claim(block([4]), 1, LE), { bytes: 0, records: 0 });
  t.equal((await onDisk(d)).bytesRefusedAt, 100, 'and it stays reached after a restart');
  const again = await CaptureTally.load(d, 'u1');
  again.setLimits({ maxBytes: 100 });
  t.equal(again.reached(), 'maxBytes');
  again.setLimits({ maxBytes: 1000 });
  t.equal(again.reached(), undefined, 'a raised limit lets the capture go on');
});

t.test('the count on disk runs ahead while writing, and is exact once settled', async (t) => {
  const d = await dir(t);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 640 });
  await tally.claim(block([10]), 1, LE);
  t.equal((await onDisk(d)).packets, 11, 'reserved 1/64 of the limit ahead');
  for (let i = 0; i < 10; i++) await tally.claim(block([10]), 1, LE);
  t.equal((await onDisk(d)).packets, 11, 'claims within the reservation write nothing');
  await tally.claim(block([10]), 1, LE);
  t.equal((await onDisk(d)).packets, 22, 'the 12th claim reserves the next 10');
  await tally.settle();
  t.same(await onDisk(d), { uid: 'u1', packets: 12, bytes: 12 * 26 });
  const restarted = await CaptureTally.load(d, 'u1');
  t.same([restarted.packets, restarted.bytes], [12, 312], 'a restart continues from the exact count');
  t.equal(limitReached({ maxPackets: 12 }, restarted), 'maxPackets');
});

t.test('workers of one capture claiming at once never share room', async (t) => {
  const d = await dir(t);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 100 });
  const claims = await Promise.all(Array.from({ length: 30 }, () => tally.claim(block([10, 10, 10, 10, 10]), 5, LE)));
  t.equal(claims.reduce((s, c) => s + c.records, 0), 100, 'exactly the limit, over 30 concurrent claims of 5');
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

t.test('a failed write fails the claim, and the next claim writes again', async (t) => {
  const d = await dir(t);
  const tally = await CaptureTally.load(join(d, 'gone'), 'u1');
  tally.setLimits({ maxPackets: 100 });
  await t.rejects(tally.claim(block([10]), 1, LE), /ENOENT/);
  await mkdir(join(d, 'gone'));
  await tally.claim(block([10]), 1, LE);
  t.ok((await onDisk(join(d, 'gone'))).packets >= 2, 'written on the next claim, with the failed one counted (the safe side)');
});

t.test('a full disk fails the claim as a full disk (the worker stops there, as when records do not fit)', async (t) => {
  const d = await dir(t);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'kube-pcap-tally', d]);
  t.teardown(() => run('umount', [d]).catch(() => undefined));
  await writeFile(join(d, 'filler'), Buffer.alloc(4096)).catch(() => undefined);
  const tally = await CaptureTally.load(d, 'u1');
  tally.setLimits({ maxPackets: 100 });
  await t.rejects(tally.claim(block([10]), 1, LE), DiskFullError);
});
