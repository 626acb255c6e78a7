// files.zip as a stream: one agent file at a time is read into the archive, so memory stays
// flat whatever the capture's size, and back-pressure runs end to end (a slow client slows
// the archive, which slows the read from the agent). Any failure destroys the stream; the
// HTTP layer then cuts the connection, so the client sees a truncated transfer rather than
// a valid-looking zip that silently lacks files.
import { once } from 'node:events';
import { pipeline, Readable, Transform } from 'node:stream';
import { crc32 } from 'node:zlib';
import { ZipArchive } from 'archiver';
import { useNativeCrc32 } from './native-crc32.js';
import { StoredZipWriter } from './stored-zip.js';
import { forceZip64 } from './zip-length.js';

useNativeCrc32();

export interface ZipSource {
  /** Path inside the zip, e.g. "<node>/<file>". */
  name: string;
  modified: Date;
  /** Expected size when known; a shorter transfer is an error. */
  size?: number;
  open(signal: AbortSignal): Promise<{ body: Readable; length: number | undefined }>;
  /** Called once the entry is in the archive (e.g. to release what held its file). */
  done?: () => void;
}

export interface ZipOptions {
  deflate: boolean;
  /**
   * The archive's exact size, promised to the client (Content-Length): a byte more is never
   * sent and a byte short is an error, so a mismatch cuts the connection (zip-length.ts).
   */
  length?: number;
  onBytes?: (n: number) => void;
  onError?: (err: Error) => void;
}

/**
 * An agent's body arrives in TLS reads of at most 16 KiB; gathered into writes of this size
 * the client's TLS stream takes a quarter of the writes. Measured (bench:download, 2 GiB):
 * gateway CPU per GiB 1.76 s with 16 KiB writes, 1.64 with 64 KiB; 128 KiB saved little more
 * and took the gateway's peak RSS from 148 to 159 MB (its target is 150). One such buffer
 * per download in flight.
 */
const WRITE_BYTES = 64 * 1024;

/** The error a download ends with when its client went away. */
export const CLIENT_GONE = 'client gone';

export function zipStream(sources: ZipSource[], opts: ZipOptions): Readable {
  return opts.deflate ? deflatedZip(sources, opts) : storedZip(sources, opts);
}

/**
 * A stored zip (the default): one generator reads each agent's body, passes its chunks on as
 * they are (CRC-32 taken on the way, natively) and writes the headers around them
 * (stored-zip.ts). One stage per chunk instead of archiver's five: at several hundred MiB/s,
 * per-chunk stream overhead was the gateway's largest cost after TLS (bench:download).
 */
function storedZip(sources: ZipSource[], opts: ZipOptions): Readable {
  const abort = new AbortController();
  const promise = new SentLength(opts);
  const counted = (b: Buffer): Buffer => {
    promise.count(b.length);
    return b;
  };
  async function* archive(): AsyncGenerator<Buffer> {
    const zip = new StoredZipWriter(forceZip64(sources.map((s) => ({ name: s.name, size: s.size ?? 0 }))));
    for (const src of sources) {
      abort.signal.throwIfAborted();
      const { body, length } = await src.open(abort.signal);
      const expected = length ?? src.size;
      yield counted(zip.localHeader(src.name, src.modified));
      let crc = 0;
      let received = 0;
      try {
        let held: Buffer[] = [];
        let heldBytes = 0;
        for await (const chunk of body as AsyncIterable<Buffer>) {
          crc = crc32(chunk, crc);
          received += chunk.length;
          held.push(chunk);
          heldBytes += chunk.length;
          if (heldBytes >= WRITE_BYTES) {
            yield counted(held.length === 1 ? held[0]! : Buffer.concat(held, heldBytes));
            held = [];
            heldBytes = 0;
          }
        }
        if (heldBytes > 0) yield counted(Buffer.concat(held, heldBytes));
      } finally {
        body.destroy();
      }
      const short = shortBody(src.name, received, expected);
      if (short) throw short;
      yield counted(zip.descriptor(crc, received));
      src.done?.();
    }
    yield counted(zip.end());
    const broken = promise.broken();
    if (broken) throw broken;
  }
  const out = Readable.from(archive(), { objectMode: false, highWaterMark: 16 * 1024 });
  out.on('error', (err) => {
    if (abort.signal.aborted) return;
    abort.abort(err);
    opts.onError?.(err);
  });
  // The client went away (the HTTP layer destroys what it was sending): the agent's body is
  // cut at once, even while the generator waits for its next chunk.
  out.on('close', () => {
    if (out.readableEnded || abort.signal.aborted) return;
    const gone = new Error(CLIENT_GONE);
    abort.abort(gone);
    opts.onError?.(gone);
  });
  return out;
}

/** A deflated zip (?compression=deflate), through archiver. */
function deflatedZip(sources: ZipSource[], opts: ZipOptions): Readable {
  const archive = new ZipArchive({
    store: false,
    zlib: { level: 6 },
    forceZip64: forceZip64(sources.map((s) => ({ name: s.name, size: s.size ?? 0 }))),
    // archiver buffers 1 MiB by default: enough for the network's chunks to outlive V8's
    // young generation, so that every streamed byte became old-space garbage (+50 MB RSS
    // and slower). Node's own 16 KiB keeps them short-lived; measured: RSS -45 MB, +15% MB/s.
    highWaterMark: 16 * 1024,
  });
  const abort = new AbortController();
  const promise = new SentLength(opts);
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      try {
        promise.count(chunk.length);
      } catch (err) {
        done(err as Error);
        return;
      }
      done(null, chunk);
    },
    flush(done) {
      done(promise.broken() ?? null);
    },
  });
  const fail = (err: Error): void => {
    if (abort.signal.aborted) return;
    abort.abort(err);
    opts.onError?.(err);
    archive.abort();
    counter.destroy(err);
  };
  archive.on('error', fail);
  archive.on('warning', fail);
  // The client went away (the HTTP layer destroys what it was sending): stop reading agents.
  // A broken length promise, first: then the close that follows is not taken for the client's.
  counter.on('error', fail);
  counter.on('close', () => {
    if (!counter.readableEnded) fail(new Error(CLIENT_GONE));
  });
  archive.pipe(counter);

  void (async () => {
    for (const src of sources) {
      if (abort.signal.aborted) return;
      const { body, length } = await src.open(abort.signal);
      const checked = lengthChecked(body, src.name, length ?? src.size);
      const failed = new Promise<never>((_, reject) => checked.once('error', reject));
      failed.catch(() => undefined);
      archive.append(checked, { name: src.name, date: src.modified, store: false });
      await Promise.race([once(archive, 'entry', { signal: abort.signal }), failed]);
      src.done?.();
    }
    await archive.finalize();
  })().catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))));

  return counter;
}

/** Passes the body through, failing when it errors or ends short of the expected length. */
function lengthChecked(body: Readable, name: string, expected: number | undefined): Transform {
  let received = 0;
  const check = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      done(shortBody(name, received, expected) ?? null);
    },
  });
  pipeline(body, check, () => undefined);
  return check;
}

/**
 * What a download sends, counted against the length promised to the client (Content-Length,
 * when there is one): a byte more is never sent, a byte short is an error.
 */
class SentLength {
  private sent = 0;

  constructor(private readonly opts: ZipOptions) {}

  /** Counts `n` bytes about to go out; throws rather than send past the promise. */
  count(n: number): void {
    this.sent += n;
    if (this.opts.length !== undefined && this.sent > this.opts.length) throw new Error(`files.zip grew past the ${this.opts.length} bytes promised (a bug): the connection is cut`);
    this.opts.onBytes?.(n);
  }

  /** At the end: the error if less than promised was sent. */
  broken(): Error | undefined {
    const promised = this.opts.length;
    return promised !== undefined && this.sent !== promised ? new Error(`files.zip ended at ${this.sent} of the ${promised} bytes promised (a bug): the connection is cut`) : undefined;
  }
}

/** The error for an agent's body that ended short of the length it was listed (or pinned) with. */
function shortBody(name: string, received: number, expected: number | undefined): Error | undefined {
  return expected !== undefined && received !== expected ? new Error(`${name}: the agent sent ${received} of ${expected} bytes`) : undefined;
}
