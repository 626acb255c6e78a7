import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parseGlobalHeader } from '../../src/pcap/format.js';
import { completePrefixLength, wholeRecords } from '../../src/pcap/records.js';
import { RecordArena } from '../../src/agent/record-arena.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { dnsQueryFrame, pcapGlobalHeader, pcapRecord } from '../harness/pcap-fixtures.js';

const records = Array.from({ length: 50 }, (_, i) => pcapRecord(dnsQueryFrame('192.0.2.1', '192.0.2.53', 40000 + i, i, `r${i}.example`), 1_700_000_000_000_000 + i));
const file = Buffer.concat([pcapGlobalHeader(), ...records]);

t.test('global header: both byte orders, micro- and nanosecond magic', async (t) => {
  t.same(parseGlobalHeader(pcapGlobalHeader(65535, 1)), { littleEndian: true, nanoseconds: false, snaplen: 65535, linktype: 1 });
  const be = Buffer.alloc(24);
  be.writeUInt32BE(0xa1b23c4d, 0);
  be.writeUInt32BE(262144, 16);
  be.writeUInt32BE(113, 20);
  t.same(parseGlobalHeader(be), { littleEndian: false, nanoseconds: true, snaplen: 262144, linktype: 113 });
  t.equal(parseGlobalHeader(Buffer.from('0a0d0d0a' + '00'.repeat(20), 'hex')), undefined, 'pcapng is not classic pcap');
});

t.test('RecordArena hands over whole records however the bytes are cut, without a buffer per read', async (t) => {
  for (const chunk of [1, 7, 16, 17, 100, 4096, 65536]) {
    const a = new RecordArena(4096);
    const out: Buffer[] = [];
    let count = 0;
    for (let i = 0; i < file.length; i += chunk) {
      let piece = file.subarray(i, i + chunk);
      // As the worker does: take a batch whenever the next piece would not fit.
      while (piece.length > 0) {
        const n = Math.min(piece.length, a.room);
        a.push(piece.subarray(0, n));
        piece = piece.subarray(n);
        if (a.room === 0 || piece.length > 0) {
          const b = a.take();
          if (b) {
            out.push(Buffer.from(b.bytes));
            count += b.records;
          }
        }
      }
    }
    const last = a.take();
    if (last) {
      out.push(Buffer.from(last.bytes));
      count += last.records;
    }
    t.equal(count, records.length, `chunks of ${chunk}: every record`);
    t.ok(Buffer.concat(out).equals(Buffer.concat(records)), 'byte for byte');
    t.equal(a.partialBytes, 0);
    t.ok(a.headerBytes?.equals(pcapGlobalHeader()));
  }
  t.throws(() => new RecordArena(4096).push(Buffer.alloc(64, 0x41)), /not a classic pcap stream/);
  const huge = new RecordArena(4096);
  huge.push(pcapGlobalHeader());
  const h = Buffer.alloc(16);
  h.writeUInt32LE(10_000_000, 8);
  t.throws(() => huge.push(h), /corrupt/);
  t.throws(() => new RecordArena(64).push(Buffer.alloc(65)), /overrun/, 'never past its room');
});

t.test('wholeRecords walks whole records within a bound and a count, and stops at a corrupt one', async (t) => {
  const a = new RecordArena(1 << 16);
  a.push(file);
  const block = a.take()!.bytes;
  const two = records[0]!.length + records[1]!.length;
  t.same(wholeRecords(block, 0, 0, true), { bytes: 0, records: 0, corrupt: false });
  t.same(wholeRecords(block, 0, records[0]!.length - 1, true), { bytes: 0, records: 0, corrupt: false }, 'not even the first');
  t.same(wholeRecords(block, 0, two + 5, true), { bytes: two, records: 2, corrupt: false });
  t.same(wholeRecords(block, 0, block.length, true, 2), { bytes: two, records: 2, corrupt: false }, 'at most two');
  t.same(wholeRecords(block, 0, block.length, true), { bytes: block.length, records: records.length, corrupt: false });
  t.same(wholeRecords(block, records[0]!.length, block.length, true).records, records.length - 1, 'from an offset');
  const bad = Buffer.concat([records[0]!, Buffer.alloc(16, 0xff)]);
  t.same(wholeRecords(bad, 0, bad.length, true), { bytes: records[0]!.length, records: 1, corrupt: true }, 'a record claiming 4 GiB is not walked over');
});

t.test('completePrefixLength stops at the last complete record', async (t) => {
  const dir = await scratchDir(t, 'prefix');
  const p = join(dir, 'f.pcap');
  for (const cut of [0, 10, 24, 30, 24 + records[0]!.length, file.length - 5, file.length]) {
    await writeFile(p, file.subarray(0, cut));
    let expected = cut < 24 ? 0 : 24;
    for (const r of records) if (expected + r.length <= cut && expected >= 24) expected += r.length;
    t.equal(await completePrefixLength(p), expected, `file cut at ${cut}`);
  }
  await writeFile(p, Buffer.alloc(100, 1));
  t.equal(await completePrefixLength(p), 0, 'not pcap at all');
});
