// A response body handed over by push rather than read as a stream: the producer calls
// `onData` with each piece as it arrives, and the consumer copies what it keeps before
// returning. This is how agents' file bodies reach the zip (src/gateway/file-get.ts): the
// bytes go from the TLS socket's one reused buffer into the zip's output chunk, with no
// stream, promise or allocation per TLS record in between (docs/downloads.md, "Throughput").
import { Readable } from 'node:stream';

export interface PushBody {
  /**
   * Hands every byte of the body to `onData`, in order, once. A view is valid only until
   * `onData` returns; `onData` returns false to pause the body until `resume()`, and
   * whatever it throws fails the body. Resolves once the whole body was handed over;
   * rejects if it cannot be (a cut connection, a timeout, `destroy`).
   */
  pump(onData: (view: Buffer) => boolean): Promise<void>;
  /** Asks for more after `onData` returned false. */
  resume(): void;
  /** Gives the body up (its connection cannot be reused); a pump in progress rejects with `err`. */
  destroy(err?: Error): void;
}

/** A stream as a PushBody (for bodies that are not agents' files, e.g. a manifest). */
export function pushBodyOf(stream: Readable): PushBody {
  return {
    pump: (onData) => new Promise<void>((resolve, reject) => {
      stream.on('data', (chunk: Buffer) => {
        let more: boolean;
        try {
          more = onData(chunk);
        } catch (err) {
          stream.destroy(err as Error);
          return;
        }
        if (!more) stream.pause();
      });
      stream.once('end', resolve);
      stream.once('error', reject);
      stream.once('close', () => {
        if (!stream.readableEnded) reject(new Error('the body was closed before its end'));
      });
    }),
    resume: () => stream.resume(),
    destroy: (err) => stream.destroy(err),
  };
}

/** A PushBody as a stream (for the deflated zip, through zlib); each piece is copied, as views are transient. */
export function streamOf(body: PushBody): Readable {
  let ended = false;
  const stream = new Readable({
    read: () => body.resume(),
    destroy: (err, done) => {
      if (!ended) body.destroy(err ?? new Error('the body was not read to its end'));
      done(err);
    },
  });
  body.pump((view) => stream.push(Buffer.from(view))).then(
    () => {
      ended = true;
      stream.push(null);
    },
    (err: unknown) => stream.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return stream;
}
