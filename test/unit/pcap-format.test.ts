import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parseGlobalHeader } from '../../src/pcap/format.js';
import { completePrefixLength, wholeRecords } from '../../src/pcap/records.js';
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

t.test('wholeRecords walks whole records within a bound and a count, and stops at a corrupt one', async (t) => {
  const block = Buffer.concat(records);
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
  // From a record boundary found before: the walk goes on from there (a file being written).
  await writeFile(p, file.subarray(0, file.length - 5));
  const first = 24 + records[0]!.length;
  t.equal(await completePrefixLength(p, first), file.length - records[records.length - 1]!.length, 'from a known boundary');
});
