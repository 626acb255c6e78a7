// A byte rate shared by several streams (--export-max-bytes-per-second, docs/export.md): an
// export to a bucket across the internet must not take the node's whole uplink from the
// captures and downloads. A token bucket of one second's bytes; a chunk waits until the
// bucket holds it, so back-pressure reaches the agents' reads and memory stays bounded.
import { Transform } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';

export class ByteRate {
  private tokens: number;
  private last = Date.now();
  /** Chunks wait their turn: one queue, so no stream starves another. */
  private turn: Promise<void> = Promise.resolve();

  constructor(readonly bytesPerSecond: number) {
    this.tokens = bytesPerSecond;
  }

  /** Resolves when `n` bytes may go (a chunk larger than a second's worth waits for the debt it makes). */
  take(n: number, signal?: AbortSignal): Promise<void> {
    const mine = this.turn.then(async () => {
      this.refill();
      this.tokens -= n;
      if (this.tokens < 0) await delay(Math.ceil((-this.tokens / this.bytesPerSecond) * 1000), undefined, { signal });
    });
    this.turn = mine.catch(() => undefined);
    return mine;
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
  }
}

/** A pass-through stage held to the rate; without one, nothing but a pass-through. */
export function rateLimited(rate: ByteRate | undefined): Transform {
  const abort = new AbortController();
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (!rate) return done(null, chunk);
      rate.take(chunk.length, abort.signal).then(() => done(null, chunk), (err: Error) => done(err));
    },
    destroy(err, cb) {
      abort.abort();
      cb(err);
    },
  });
}
