// The file tcpdump writes, rotated by copy under the file layout's names
// (src/agent/tcpdump-files.ts). Real tcpdump writes: it reads a pcap (-r) and writes it to
// its standard output, the descriptor the agent's TcpdumpFiles opened, as it would a capture.
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { link, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { TcpdumpFiles } from '../../src/agent/tcpdump-files.js';
import { whileStopped } from '../../src/agent/parked-signal.js';
import { wholeRecords } from '../../src/pcap/records.js';
import { RotationGate } from '../../src/agent/rotation-gate.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { pcapGlobalHeader, pcapRecord } from '../harness/pcap-fixtures.js';

const RECORDS = 3500;
/** 3500 records of 1 016 bytes, numbered in their payload's first byte pair. */
const input = Buffer.concat([pcapGlobalHeader(), ...Array.from({ length: RECORDS }, (_, i) => {
  const payload = Buffer.alloc(1000, i % 256);
  payload.writeUInt16BE(i, 0);
  return pcapRecord(payload, 1_700_000_000_000_000 + i * 1000);
})]);

/** The record numbers a file holds, in order; fails the test when it does not end on a whole record. */
async function numbersIn(t: Test, path: string): Promise<number[]> {
  const b = await readFile(path);
  const w = wholeRecords(b, 24, b.length, true);
  t.equal(w.bytes, b.length - 24, `${path} ends on a whole record`);
  const out: number[] = [];
  for (let off = 24; off < b.length; off += 16 + b.readUInt32LE(off + 8)) out.push(b.readUInt16BE(off + 16));
  return out;
}

/** tcpdump -r <in> -w - with the agent's file as its standard output; resolves when it is done. */
async function tcpdumpInto(fd: number, inPath: string, extra: string[] = []): Promise<void> {
  const child = spawn('tcpdump', ['-r', inPath, '-w', '-', '-Z', 'root', ...extra], { stdio: ['ignore', fd, 'ignore'] });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tcpdump exited ${code}`))));
  });
}

const run = async (op: () => Promise<void>): Promise<boolean> => {
  await op();
  return true;
};

t.test('rotation by size: whole records up to the size copied out, the rest moved to the front, every record once, oldest pruned', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-size');
  await writeFile(join(dir, 'in.pcap'), input);
  const events: string[] = [];
  const removed: bigint[] = [];
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 1_000_000, rotationSeconds: 3600, maxFiles: 2 }, {
    started: async (_ino, _birth, header, n) => {
      t.equal(header.linktype, 1, 'its header, read from the file');
      events.push(`started ${n.firstRecord}`);
    },
    copied: async (_ino, _birth, n) => void events.push(`copied ${n.firstRecord}`),
    generation: async (_ino, _birth, n) => void events.push(`generation ${n.firstRecord}`),
    removed: async (ino) => void removed.push(ino),
  }, new RotationGate());
  await files.recover();
  const fd = await files.create();
  const ino = (await stat(files.currentPath, { bigint: true })).ino;
  await tcpdumpInto(fd, join(dir, 'in.pcap'));
  // 3.5 MB written at once: the look after it rotates until the file is within the size.
  await files.tick(run);
  t.same(events, ['started 0', 'copied 0', 'generation 984', 'copied 984', 'generation 1968', 'copied 1968', 'generation 2952'], 'a copy per million bytes, numbered');
  t.equal(removed.length, 1, 'the oldest rotated file went (maxFiles 2)');
  t.ok(files.isCurrent(ino), 'the file being written keeps its inode');
  t.equal(files.generationOf(ino), 2952, 'its generation: its first record\'s number');
  const names = (await readdir(dir)).filter((n) => /^pod_veth1/.test(n)).sort();
  t.equal(names.length, 3);
  t.match(names[0], /^pod_veth1-\d{16}\.pcap$/);
  t.match(names[1], /^pod_veth1-\d{16}\.pcap$/);
  t.equal(names[2], 'pod_veth1.pcap');
  const numbers: number[] = [];
  for (const n of names) {
    const path = join(dir, n);
    if (n !== 'pod_veth1.pcap') t.ok((await stat(path)).size <= 24 + 1_000_000, `${n} is within the size`);
    numbers.push(...(await numbersIn(t, path)));
  }
  t.same(numbers, Array.from({ length: RECORDS - 984 }, (_, i) => i + 984), 'every record kept once, in order (the first 984, pruned, aside)');
  t.equal(await files.committedLength(ino), (await stat(files.currentPath)).size, 'the file being written: all of it whole');
  t.equal(await files.ended(), (await stat(files.currentPath)).size);
  t.notOk(files.isCurrent(ino), 'done with once tcpdump ended');
});

t.test('rotation by time takes every whole record; a generation with none starts over', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-time');
  await writeFile(join(dir, 'in.pcap'), input);
  let now = 1_000_000;
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 100_000_000, rotationSeconds: 60, maxFiles: 5 }, {}, new RotationGate(), () => now);
  await files.recover();
  const fd = await files.create();
  await tcpdumpInto(fd, join(dir, 'in.pcap'), ['-c', '100']);
  await files.tick(run);
  t.same((await readdir(dir)).filter((n) => n.endsWith('.pcap') && n !== 'in.pcap'), ['pod_veth1.pcap'], 'not yet: within the period and the size');
  now += 60_000;
  await files.tick(run);
  const rotated = (await readdir(dir)).filter((n) => /^pod_veth1-\d+\.pcap$/.test(n));
  t.equal(rotated.length, 1);
  t.same(await numbersIn(t, join(dir, rotated[0]!)), Array.from({ length: 100 }, (_, i) => i), 'all it had');
  t.equal((await stat(files.currentPath)).size, 24, 'the file being written: its header alone');
  now += 60_000;
  await files.tick(run);
  t.equal((await readdir(dir)).filter((n) => /^pod_veth1-\d+\.pcap$/.test(n)).length, 1, 'nothing to rotate: no empty file');
});

t.test('with real tcpdump writing meanwhile, stopped for each rotation: every packet once, in order', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-live');
  const big = Buffer.concat([pcapGlobalHeader(), ...Array.from({ length: 20 }, () => input.subarray(24))]);
  await writeFile(join(dir, 'in.pcap'), big);
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 1_000_000, rotationSeconds: 3600, maxFiles: 1000 }, {}, new RotationGate());
  await files.recover();
  const fd = await files.create();
  const child = spawn('tcpdump', ['-r', join(dir, 'in.pcap'), '-w', '-', '-Z', 'root'], { stdio: ['ignore', fd, 'ignore'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let done = false;
  void exited.then(() => (done = true));
  let stops = 0;
  while (!done) {
    await files.tick(async (op) => {
      const r = await whileStopped(child.pid!, op);
      if (r.ran) stops++;
      return r.ran;
    });
  }
  await files.ended();
  await files.recover();
  const names = (await readdir(dir)).filter((n) => /^pod_veth1-\d+\.pcap$/.test(n)).sort();
  const numbers: number[] = [];
  for (const n of names) numbers.push(...(await numbersIn(t, join(dir, n))));
  t.equal(numbers.length, 20 * RECORDS, `every record (${names.length} files, ${stops} rotations while tcpdump ran)`);
  t.ok(numbers.every((v, i) => v === i % RECORDS), 'each once, in the order written');
});

t.test('a rotation while a pin holds a hard link to a rotated file keeps the pinned bytes', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-pin');
  await writeFile(join(dir, 'in.pcap'), input);
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 1_000_000, rotationSeconds: 3600, maxFiles: 1 }, {}, new RotationGate());
  await files.recover();
  const fd = await files.create();
  await tcpdumpInto(fd, join(dir, 'in.pcap'), ['-c', '1500']);
  await files.tick(run);
  const first = (await readdir(dir)).find((n) => /^pod_veth1-\d+\.pcap$/.test(n))!;
  const before = await readFile(join(dir, first));
  await link(join(dir, first), join(dir, 'pin.hold'));
  // tcpdump writes on (its records, as it appends them).
  writeSync(fd, input.subarray(24));
  await files.tick(run);
  t.notOk((await readdir(dir)).includes(first), 'the pinned file was pruned');
  t.same(await readFile(join(dir, 'pin.hold')), before, 'the pin still holds what it pinned, byte for byte');
  t.equal((await numbersIn(t, join(dir, 'pin.hold'))).length, 984);
});

t.test('what a killed tcpdump left is made whole and rotated before the next starts; a half-made copy goes', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-crash');
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 1_000_000, rotationSeconds: 3600, maxFiles: 5 });
  const torn = input.subarray(0, 24 + 10 * 1016 + 500);
  await writeFile(join(dir, 'pod_veth1.pcap'), torn);
  await writeFile(join(dir, '.rotating-pod_veth1.pcap'), torn);
  await files.recover();
  const names = (await readdir(dir)).sort();
  t.equal(names.length, 1, `rotated, the copy gone: ${names.join(' ')}`);
  t.match(names[0], /^pod_veth1-\d{16}\.pcap$/);
  t.equal((await numbersIn(t, join(dir, names[0]!))).length, 10, 'its whole records, the torn one cut');
  await files.create();
  t.equal((await stat(files.currentPath)).size, 0, 'a new, empty file for the next tcpdump');
});

t.test('an agent that died in a rotation after the copy got its name: the copied records are taken out of the file being written', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-mid-rotation');
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 1_000_000, rotationSeconds: 3600, maxFiles: 5 });
  // The copy of records 0-99 under its rotated name; the file being written still holds 0-149.
  await writeFile(join(dir, 'pod_veth1-1700000000000000.pcap'), input.subarray(0, 24 + 100 * 1016));
  await writeFile(join(dir, 'pod_veth1.pcap'), input.subarray(0, 24 + 150 * 1016));
  await files.recover();
  const names = (await readdir(dir)).sort();
  t.equal(names.length, 2, names.join(' '));
  const numbers: number[] = [];
  for (const n of names) numbers.push(...(await numbersIn(t, join(dir, n))));
  t.same(numbers, Array.from({ length: 150 }, (_, i) => i), 'every record once');
});

t.test('a record larger than the size is rotated alone, never split', async (t) => {
  const dir = await scratchDir(t, 'tcpdump-files-big-record');
  const files = new TcpdumpFiles(dir, 'pod_veth1', { maxSizeBytes: 500, rotationSeconds: 3600, maxFiles: 100 });
  await files.recover();
  const fd = await files.create();
  writeSync(fd, input.subarray(0, 24 + 5 * 1016));
  await files.tick(run);
  await files.tick(run);
  const rotated = (await readdir(dir)).filter((n) => /^pod_veth1-\d+\.pcap$/.test(n)).sort();
  const held: number[][] = [];
  for (const n of rotated) held.push(await numbersIn(t, join(dir, n)));
  t.same(held.slice(0, 4), [[0], [1], [2], [3]], 'one record per rotated file');
  t.equal(await files.ended(), 24 + (rotated.length === 5 ? 0 : 1016), 'the rest in the file being written');
});
