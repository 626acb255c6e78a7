// Accept-Encoding negotiation (RFC 9110 §12.5.3) and the encoders: real zlib zstd and gzip,
// decoded by the real decoders. A live stream flushes each chunk, so what was written is
// decodable before the stream ends.
import { PassThrough, Readable } from 'node:stream';
import { createGunzip, createZstdDecompress, gunzipSync, zstdDecompressSync } from 'node:zlib';
import t from 'tap';
import { encodeBody, encodingHeaders, negotiateCoding } from '../../src/http/content-encoding.js';

t.test('negotiation', async (t) => {
  t.equal(negotiateCoding(undefined), undefined, 'no header: identity');
  t.equal(negotiateCoding(''), undefined);
  t.equal(negotiateCoding('gzip'), 'gzip');
  t.equal(negotiateCoding('zstd'), 'zstd');
  t.equal(negotiateCoding('deflate, gzip, br, zstd'), 'zstd', 'curl --compressed: the gateway\'s choice among equals');
  t.equal(negotiateCoding('gzip, deflate, br, zstd'), 'zstd', 'order of the header does not set the preference, q does');
  t.equal(negotiateCoding('zstd;q=0.5, gzip'), 'gzip', 'higher q wins');
  t.equal(negotiateCoding('zstd;q=0, gzip;q=0.1'), 'gzip', 'q=0 refuses');
  t.equal(negotiateCoding('br, deflate'), undefined, 'nothing offered is accepted: identity');
  t.equal(negotiateCoding('*'), 'zstd', '* is any coding');
  t.equal(negotiateCoding('*;q=0.5, zstd;q=0'), 'gzip', '* covers what is not named; a named q=0 still refuses');
  t.equal(negotiateCoding('identity, gzip;q=0.5'), undefined, 'identity named with a higher q is honoured');
  t.equal(negotiateCoding('gzip;q=0.5'), 'gzip', 'an unnamed identity is only the fallback');
  t.equal(negotiateCoding('identity;q=0'), undefined, 'identity refused and nothing else offered: identity anyway, not 406');
  t.equal(negotiateCoding('x-gzip'), 'gzip', 'x-gzip is gzip (RFC 9110 §8.4.1.3)');
  t.equal(negotiateCoding('GZIP ; Q=1.0'), 'gzip', 'case and spaces');
  t.equal(negotiateCoding(['br', 'gzip']), 'gzip', 'the header given twice');
  t.equal(negotiateCoding('gzip;q=abc, zstd;q=2'), undefined, 'an element whose q is not a qvalue is left out');
  t.equal(negotiateCoding('gzip;q=abc, zstd;q=0.001'), 'zstd');
  t.same(encodingHeaders(undefined), { vary: 'accept-encoding' });
  t.same(encodingHeaders('zstd'), { vary: 'accept-encoding', 'content-encoding': 'zstd' });
});

/** Bytes that compress like a capture: repeated headers, varying payload. */
function captureLike(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 64 < 40 ? i % 64 : (i * 2654435761) >>> 24;
  return b;
}

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

t.test('a download: smaller, and decoded to the same bytes; encoded bytes counted', async (t) => {
  const data = captureLike(4 * 1024 * 1024);
  for (const coding of ['zstd', 'gzip'] as const) {
    let counted = 0;
    const encoded = await collect(encodeBody(Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]), coding, { flushEachChunk: false, onEncodedBytes: (n) => (counted += n) }));
    t.ok(encoded.length < data.length / 2, `${coding}: ${data.length} -> ${encoded.length} bytes`);
    t.equal(counted, encoded.length, `${coding}: every encoded byte counted`);
    t.ok((coding === 'zstd' ? zstdDecompressSync(encoded) : gunzipSync(encoded)).equals(data), `${coding}: decodes to the same bytes`);
  }
});

t.test('a live stream: each chunk decodable as soon as it is written, before the stream ends', async (t) => {
  for (const coding of ['zstd', 'gzip'] as const) {
    const source = new PassThrough();
    const decoded = encodeBody(source, coding, { flushEachChunk: true }).pipe(coding === 'zstd' ? createZstdDecompress() : createGunzip());
    const got: Buffer[] = [];
    decoded.on('data', (c: Buffer) => got.push(c));
    for (let i = 0; i < 3; i++) {
      const packet = Buffer.from(`packet ${i} `.repeat(20));
      source.write(packet);
      const deadline = Date.now() + 5000;
      while (Buffer.concat(got).length < (i + 1) * packet.length && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      t.ok(Buffer.concat(got).subarray(i * packet.length).equals(packet), `${coding}: packet ${i} came out while the stream is open`);
    }
    source.end();
    await new Promise((r) => decoded.once('end', r));
  }
});

t.test('a failing source destroys the encoded stream; an encoded stream closed early closes the source', async (t) => {
  const failing = new PassThrough();
  const encoded = encodeBody(failing, 'zstd', { flushEachChunk: false });
  const failed = new Promise<Error>((r) => encoded.once('error', r));
  failing.destroy(new Error('agent went away'));
  t.equal((await failed).message, 'agent went away');

  const source = new PassThrough();
  const out = encodeBody(source, 'gzip', { flushEachChunk: true, onEncodedBytes: () => undefined });
  const closed = new Promise((r) => source.once('close', r));
  out.destroy();
  await closed;
  t.ok(source.destroyed, 'the caller left: the source is closed');
});
