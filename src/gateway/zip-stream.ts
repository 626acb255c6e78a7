// files.zip, one agent file at a time read into the archive, so memory stays flat whatever
// the capture's size, and back-pressure runs end to end (a slow client slows the archive,
// which slows the read from the agent). Any failure after the first byte cuts the
// connection, so the client sees a truncated transfer rather than a valid-looking zip that
// silently lacks files.
import { pipeline, Readable, Transform, type Writable } from 'node:stream';
import { crc32, createDeflateRaw } from 'node:zlib';
import { ChunkWriter } from './chunk-writer.js';
import { streamOf, type PushBody } from './push-body.js';
import { ZipWriter } from './zip-writer.js';
import { forceZip64 } from './zip-length.js';

/** zlib's default: most of the gain for a fraction of level 9's CPU (pcap compresses well). */
const DEFLATE_LEVEL = 6;

export interface ZipSource {
  /** Path inside the zip, e.g. "<node>/<file>". */
  name: string;
  modified: Date;
  /** Expected size when known; a shorter transfer is an error. */
  size?: number;
  open(signal: AbortSignal): Promise<OpenedBody>;
  /** Called once the entry is in the archive (e.g. to release what held its file). */
  done?: () => void;
}

export interface OpenedBody {
  body: PushBody;
  length: number | undefined;
}

export interface ZipOptions {
  /**
   * The archive's exact size, promised to the client (Content-Length): a byte more is never
   * sent and a byte short is an error, so a mismatch cuts the connection (zip-length.ts).
   */
  length?: number;
  onBytes?: (n: number) => void;
  onError?: (err: Error) => void;
}

/**
 * An agent's body arrives in TLS records of at most 16 KiB; gathered into chunks of this size
 * the client's TLS stream takes a quarter of the writes. Measured (bench:download, 2 GiB):
 * gateway CPU per GiB 1.76 s with 16 KiB writes, 1.64 with 64 KiB; 128 KiB saved little more
 * and took the gateway's peak RSS from 148 to 159 MB (its target is 150).
 */
const WRITE_BYTES = 64 * 1024;
/** Per download: one chunk filling, two in flight to the client. */
const WRITE_CHUNKS = 3;

/** The error a download ends with when its client went away. */
export const CLIENT_GONE = 'client gone';

/**
 * A stored zip (the default), written straight to the response. Each agent's body is pushed
 * in (push-body.ts) and copied once into a reused chunk (chunk-writer.ts), whose CRC-32 is
 * taken natively before it is written; the headers around it are zip-writer.ts's. When both
 * chunks in flight are still with the client, the agent's socket is paused until one comes
 * back: no stream stage, promise or allocation per TLS record (docs/downloads.md, "Throughput").
 */
export class StoredZipSender {
  private readonly abort = new AbortController();
  private readonly promise: SentLength;
  private first: OpenedBody | undefined;
  /** The body being read, resumed when a chunk is free. */
  private reading: PushBody | undefined;

  constructor(private readonly sources: ZipSource[], private readonly opts: ZipOptions) {
    this.promise = new SentLength(opts);
  }

  /**
   * Opens the first entry's body, writing nothing: a failure here comes before the response's
   * head, so the caller can still answer it with an error status.
   */
  async openFirst(): Promise<void> {
    const src = this.sources[0];
    if (src && !this.first) this.first = await src.open(this.abort.signal);
  }

  /** Writes the whole zip to `out` and ends it; rejects on any failure (the caller then cuts the connection). */
  async send(out: Writable): Promise<void> {
    const onClose = (): void => {
      if (!out.writableFinished) this.fail(new Error(CLIENT_GONE));
    };
    out.once('close', onClose);
    try {
      if (out.destroyed) throw new Error(CLIENT_GONE);
      await this.archive(out);
    } catch (err) {
      const e = this.abort.signal.aborted ? (this.abort.signal.reason as Error) : err instanceof Error ? err : new Error(String(err));
      this.fail(e);
      throw e;
    } finally {
      out.removeListener('close', onClose);
    }
  }

  /** Gives up: the body being read is cut, and the error reported once. */
  fail(err: Error): void {
    if (this.abort.signal.aborted) return;
    this.abort.abort(err);
    this.first?.body.destroy(err);
    this.reading?.destroy(err);
    this.opts.onError?.(err);
  }

  private async archive(out: Writable): Promise<void> {
    const zip = zipWriterFor(this.sources);
    let crc = 0;
    const writer = new ChunkWriter(out, {
      chunkBytes: WRITE_BYTES,
      chunks: WRITE_CHUNKS,
      onChunk: (data) => {
        crc = crc32(data, crc);
      },
      onWrite: (n) => this.promise.count(n),
      onRoom: () => this.reading?.resume(),
    });
    for (const src of this.sources) {
      this.abort.signal.throwIfAborted();
      const opened = this.first ?? (await src.open(this.abort.signal));
      this.first = undefined;
      const { body } = opened;
      const expected = opened.length ?? src.size;
      let received = 0;
      try {
        this.abort.signal.throwIfAborted();
        writer.writeOwned(zip.localHeader(src.name, src.modified));
        crc = 0;
        this.reading = body;
        await body.pump((view) => {
          received += view.length;
          if (expected !== undefined && received > expected) throw shortBody(src.name, received, expected);
          return writer.add(view);
        });
        writer.flush();
      } finally {
        this.reading = undefined;
        body.destroy();
      }
      const short = shortBody(src.name, received, expected);
      if (short) throw short;
      writer.writeOwned(zip.descriptor(crc, received));
      if (writer.error) throw writer.error;
      src.done?.();
    }
    writer.writeOwned(zip.end());
    const broken = this.promise.broken();
    if (broken) throw broken;
    // A response whose connection closes never finishes: the close (send's listener) aborts.
    const signal = this.abort.signal;
    signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      out.end(() => {
        signal.removeEventListener('abort', onAbort);
        if (writer.error) reject(writer.error);
        else resolve();
      });
    });
  }
}

/**
 * A deflated zip (?compression=deflate), as a stream: the same writer as the stored zip
 * (zip-writer.ts), each entry's bytes through zlib's raw deflate. Its length is not known
 * before the end, so it goes out chunked; back-pressure runs from the client to the agent's
 * body through the stream's pulls.
 */
export function deflatedZipStream(sources: ZipSource[], opts: ZipOptions): Readable {
  const abort = new AbortController();
  const promise = new SentLength(opts);
  let reading: PushBody | undefined;
  const fail = (err: Error): void => {
    if (abort.signal.aborted) return;
    abort.abort(err);
    opts.onError?.(err);
    reading?.destroy(err);
  };
  const counted = (b: Buffer): Buffer => {
    promise.count(b.length);
    return b;
  };
  async function* bytes(): AsyncGenerator<Buffer> {
    const zip = zipWriterFor(sources);
    try {
      for (const src of sources) {
        abort.signal.throwIfAborted();
        const { body, length } = await src.open(abort.signal);
        reading = body;
        const expected = length ?? src.size;
        let crc = 0;
        let size = 0;
        let compressed = 0;
        const tap = new Transform({
          transform(chunk: Buffer, _enc, done) {
            crc = crc32(chunk, crc);
            size += chunk.length;
            done(expected !== undefined && size > expected ? shortBody(src.name, size, expected) : null, chunk);
          },
          flush(done) {
            done(shortBody(src.name, size, expected) ?? null);
          },
        });
        const deflate = createDeflateRaw({ level: DEFLATE_LEVEL });
        pipeline(streamOf(body), tap, deflate, () => undefined);
        try {
          yield counted(zip.localHeader(src.name, src.modified, 'deflate'));
          for await (const chunk of deflate) {
            compressed += (chunk as Buffer).length;
            yield counted(chunk as Buffer);
          }
        } finally {
          reading = undefined;
          body.destroy();
          deflate.destroy();
        }
        yield counted(zip.descriptor(crc, size, compressed));
        src.done?.();
      }
      yield counted(zip.end());
      const broken = promise.broken();
      if (broken) throw broken;
    } catch (err) {
      const e = abort.signal.aborted ? (abort.signal.reason as Error) : err instanceof Error ? err : new Error(String(err));
      fail(e);
      throw e;
    }
  }
  const out = Readable.from(bytes(), { objectMode: false, highWaterMark: 16 * 1024 });
  // The client went away (the HTTP layer destroys what it was sending): stop reading agents.
  out.on('close', () => {
    if (!out.readableEnded) fail(new Error(CLIENT_GONE));
  });
  return out;
}

/** The writer for these entries: zip64 end records when their pinned sizes call for them (zip-length.ts). */
function zipWriterFor(sources: ZipSource[]): ZipWriter {
  return new ZipWriter(forceZip64(sources.map((s) => ({ name: s.name, size: s.size ?? 0 }))));
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
