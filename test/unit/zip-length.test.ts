// The promised Content-Length of a stored files.zip (src/gateway/zip-length.ts) against the
// bytes the gateway's zip stream really writes (src/gateway/zip-writer.ts), and those bytes
// against archiver's for the same entries: ordinary archives, more entries than classic zip
// can count, and one just under 4 GiB that is zip64 by the gateway's choice while no entry
// or offset needs it. Entries past 4 GiB, and offsets past it, are
// test/gateway/zip64.test.ts's, through a real download checked by unzip.
import { Readable, Writable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { ZipArchive } from 'archiver';
import t from 'tap';
import { pushBodyOf } from '../../src/gateway/push-body.js';
import { ZipWriter } from '../../src/gateway/zip-writer.js';
import { storedZipLength, ZIP64_FROM_BYTES } from '../../src/gateway/zip-length.js';
import { StoredZipSender, type ZipSource } from '../../src/gateway/zip-stream.js';

const ZEROS = Buffer.alloc(1 << 20);

/** A source of `size` zero bytes, without holding them. */
function zeros(name: string, size: number): ZipSource {
  return {
    name,
    modified: new Date('2026-11-27T12:00:00Z'),
    size,
    open: async () => {
      let left = size;
      const body = new Readable({
        read() {
          if (left === 0) {
            this.push(null);
            return;
          }
          const n = Math.min(left, ZEROS.length);
          left -= n;
          this.push(ZEROS.subarray(0, n));
        },
      });
      return { body: pushBodyOf(body), length: size };
    },
  };
}

/** Bytes the zip stream produces for these sources, as a client would count them. */
async function streamedLength(sources: ZipSource[], length?: number): Promise<number> {
  let n = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      n += chunk.length;
      done();
    },
  });
  await new StoredZipSender(sources, { length }).send(sink);
  return n;
}

t.test('ordinary archives: the promise is the size, to the byte', async (t) => {
  const cases: ZipSource[][] = [
    [zeros('node-1/a_cali1.pcap', 0)],
    [zeros('node-1/a_cali1.pcap', 24), zeros('node-1/a_cali1-1700000000000001.pcap', 10_000)],
    [zeros('MISSING.txt', 120), ...Array.from({ length: 50 }, (_, i) => zeros(`node-${i}.example.internal/pod-${i}_eth0-17000000000000${String(i).padStart(2, '0')}.pcap`, 1000 * i))],
  ];
  for (const sources of cases) {
    const promised = storedZipLength(sources.map((s) => ({ name: s.name, size: s.size! })));
    t.equal(await streamedLength(sources), promised, `${sources.length} entries: ${promised} bytes`);
  }
});

t.test('more entries than classic zip counts (65 535): zip64 end records, still exact', async (t) => {
  const sources = Array.from({ length: 65_537 }, (_, i) => zeros(`n/${i}.pcap`, i % 3));
  const promised = storedZipLength(sources.map((s) => ({ name: s.name, size: s.size! })));
  t.equal(await streamedLength(sources, promised), promised);
});

t.test('just under 4 GiB: zip64 by the gateway\'s choice, still exact', async (t) => {
  const total = ZIP64_FROM_BYTES + 16 * 1024 * 1024;
  const sources = [zeros('node-1/a_cali1-1700000000000001.pcap', total - 1000), zeros('node-1/a_cali1.pcap', 1000)];
  const promised = storedZipLength(sources.map((s) => ({ name: s.name, size: s.size! })));
  t.ok(promised < 2 ** 32, 'no offset needs zip64');
  t.equal(await streamedLength(sources, promised), promised);
});

t.test('a stream that would break its promise fails instead of sending a wrong length', async (t) => {
  const sources = [zeros('n/a.pcap', 100)];
  const promised = storedZipLength(sources.map((s) => ({ name: s.name, size: s.size! })));
  await t.rejects(streamedLength(sources, promised - 1), /grew past the \d+ bytes promised/);
  await t.rejects(streamedLength(sources, promised + 1), /ended at \d+ of the \d+ bytes promised/);
});

/** The archive archiver writes for these (name, date, bytes) entries, stored. */
async function archiverZip(entries: { name: string; date: Date; data: Buffer }[], forceZip64: boolean): Promise<Buffer> {
  const a = new ZipArchive({ store: true, forceZip64 });
  const chunks: Buffer[] = [];
  a.on('data', (d: Buffer) => chunks.push(d));
  for (const e of entries) {
    a.append(Readable.from([e.data]), { name: e.name, date: e.date, store: true });
    await new Promise((r) => a.once('entry', r));
  }
  await a.finalize();
  return Buffer.concat(chunks);
}

function writerZip(entries: { name: string; date: Date; data: Buffer }[], forceZip64: boolean): Buffer {
  const w = new ZipWriter(forceZip64);
  const parts: Buffer[] = [];
  for (const e of entries) parts.push(w.localHeader(e.name, e.date), e.data, w.descriptor(crc32(e.data), e.data.length));
  parts.push(w.end());
  return Buffer.concat(parts);
}

t.test('the gateway writes archiver\'s layout byte for byte: names, dates, empty entries, zip64 end records', async (t) => {
  const entries = [
    { name: 'node-1/logging-0_cali0.pcap', date: new Date('2026-11-27T12:34:57Z'), data: Buffer.from('pcap bytes') },
    { name: 'node-1/empty_cali1.pcap', date: new Date('1975-06-01T00:00:00Z'), data: Buffer.alloc(0) },
    { name: 'node-2/pöd-ü_eth0.pcap', date: new Date('2050-01-01T00:00:00Z'), data: Buffer.alloc(3000, 7) },
    { name: 'MISSING.txt', date: new Date('2026-01-31T23:59:59.999Z'), data: Buffer.from('node-3\tAgentUnreachable\n') },
  ];
  for (const zip64 of [false, true]) {
    const ours = writerZip(entries, zip64);
    t.same(ours.toString('hex'), (await archiverZip(entries, zip64)).toString('hex'), `zip64 end records: ${zip64}`);
    if (!zip64) t.equal(ours.length, storedZipLength(entries.map((e) => ({ name: e.name, size: e.data.length }))));
  }
});
