// The stored files.zip as written to a response (src/gateway/zip-stream.ts with
// chunk-writer.ts): bodies handed over as views of one reused buffer, in pieces that never
// line up with the 64 KiB chunks, to a client that takes its time, must give the same bytes
// as the zip written whole (zip-writer.ts, itself held to archiver's layout in
// zip-length.test.ts), with a fixed number of chunks in flight, and a failure on either side
// must end the download with the reason.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { crc32 } from 'node:zlib';
import t from 'tap';
import type { PushBody } from '../../src/gateway/push-body.js';
import { ZipWriter } from '../../src/gateway/zip-writer.js';
import { storedZipLength } from '../../src/gateway/zip-length.js';
import { CLIENT_GONE, StoredZipSender, type ZipSource } from '../../src/gateway/zip-stream.js';

const MODIFIED = new Date('2026-11-28T10:00:00Z');

/**
 * A body handed over as the file client does: each piece a view of one buffer that is
 * overwritten as soon as `onData` returns, piece sizes cycling through odd values, and a
 * pause honoured until `resume`.
 */
function reusedBufferBody(data: Buffer, events: { paused: number }): PushBody {
  const scratch = Buffer.alloc(16 * 1024);
  const sizes = [1, 7000, 16 * 1024, 3, 12_345];
  let at = 0;
  let piece = 0;
  let onData: ((v: Buffer) => boolean) | undefined;
  let settle: { resolve: () => void; reject: (e: Error) => void } | undefined;
  let destroyed = false;
  const run = (): void => {
    while (!destroyed && at < data.length) {
      const n = Math.min(sizes[piece++ % sizes.length]!, data.length - at);
      data.copy(scratch, 0, at, at + n);
      at += n;
      let more: boolean;
      try {
        more = onData!(scratch.subarray(0, n));
      } catch (err) {
        settle!.reject(err as Error);
        return;
      }
      scratch.fill(0xee); // the view is the producer's again
      if (!more) {
        events.paused++;
        return;
      }
    }
    if (!destroyed) settle!.resolve();
  };
  return {
    pump: (f) => new Promise<void>((resolve, reject) => {
      onData = f;
      settle = { resolve, reject };
      setImmediate(run);
    }),
    resume: () => setImmediate(run),
    destroy: (err) => {
      if (destroyed || at >= data.length) return;
      destroyed = true;
      settle?.reject(err ?? new Error('destroyed'));
    },
  };
}

/** A client that takes each write a little later, and notes how much it held at once. */
function slowClient(): { sink: Writable; bytes: () => Buffer; maxHeld: () => number } {
  const got: Buffer[] = [];
  let held = 0;
  let maxHeld = 0;
  const sink = new Writable({
    highWaterMark: 1 << 30, // never says "full" by itself: the sender must bound what it writes
    write(chunk: Buffer, _enc, done) {
      held += chunk.length;
      maxHeld = Math.max(maxHeld, held);
      got.push(Buffer.from(chunk));
      setImmediate(() => {
        held -= chunk.length;
        done();
      });
    },
  });
  return { sink, bytes: () => Buffer.concat(got), maxHeld: () => maxHeld };
}

const entries = [0, 1, 65_535, 65_536, 65_537, 200_000, 1_000_003].map((size, i) => ({ name: `node-${i % 2}/f${i}.pcap`, data: randomBytes(size) }));

function sources(events: { paused: number }, opened?: string[]): ZipSource[] {
  return entries.map((e) => ({
    name: e.name,
    modified: MODIFIED,
    size: e.data.length,
    open: async () => {
      opened?.push(e.name);
      return { body: reusedBufferBody(e.data, events), length: e.data.length };
    },
  }));
}

function wholeZip(): Buffer {
  const w = new ZipWriter(false);
  const parts: Buffer[] = [];
  for (const e of entries) parts.push(w.localHeader(e.name, MODIFIED), e.data, w.descriptor(crc32(e.data), e.data.length));
  parts.push(w.end());
  return Buffer.concat(parts);
}

t.test('pieces of reused buffers, a slow client: the same bytes as the zip written whole, a fixed number of chunks in flight', async (t) => {
  const events = { paused: 0 };
  const client = slowClient();
  const length = storedZipLength(entries.map((e) => ({ name: e.name, size: e.data.length })));
  const opened: string[] = [];
  const zip = new StoredZipSender(sources(events, opened), { length });
  await zip.openFirst();
  t.same(opened, [entries[0]!.name], 'openFirst opens the first entry only, writing nothing');
  await zip.send(client.sink);
  const bytes = client.bytes();
  t.equal(bytes.length, length);
  t.ok(bytes.equals(wholeZip()), 'byte for byte, CRCs included');
  t.ok(events.paused > 0, `the bodies were paused while the client held the chunks (${events.paused} times)`);
  t.ok(client.maxHeld() <= 3 * 64 * 1024, `the client never held more than three chunks' worth (${client.maxHeld()} bytes)`);
});

t.test('a client that goes away: the download ends with "client gone", and the body being read is cut', async (t) => {
  const events = { paused: 0 };
  let destroyedWith: Error | undefined;
  const big = randomBytes(4 * 1024 * 1024);
  const body = reusedBufferBody(big, events);
  const destroy = body.destroy;
  body.destroy = (err) => {
    destroyedWith ??= err;
    destroy(err);
  };
  let written = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      written += chunk.length;
      if (written > 1024 * 1024) {
        sink.destroy();
        return;
      }
      setImmediate(done);
    },
  });
  const errors: string[] = [];
  const zip = new StoredZipSender([{ name: 'n/a.pcap', modified: MODIFIED, size: big.length, open: async () => ({ body, length: big.length }) }], { onError: (e) => errors.push(e.message) });
  await t.rejects(zip.send(sink), new RegExp(CLIENT_GONE));
  t.same(errors, [CLIENT_GONE], 'reported once');
  t.match(destroyedWith?.message, CLIENT_GONE, 'the agent\'s body was cut');
});

t.test('a body longer than its listed size fails the download before the extra bytes go out', async (t) => {
  const data = randomBytes(100_000);
  const client = slowClient();
  const zip = new StoredZipSender([{ name: 'n/a.pcap', modified: MODIFIED, size: 50_000, open: async () => ({ body: reusedBufferBody(data, { paused: 0 }), length: 50_000 }) }], {});
  await t.rejects(zip.send(client.sink), /the agent sent \d+ of 50000 bytes/);
  t.ok(client.bytes().length < 50_000 + 64 * 1024, 'no more than the chunk in hand');
});
