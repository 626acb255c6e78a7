// Writes a stream of chunks on an HTTP response with at most a few writes in flight, handing
// each chunk back once the response has taken it (so its producer can reuse the buffer, as
// send-file.ts does for files): memory stays flat and nothing becomes garbage per chunk.
import type { ServerResponse } from 'node:http';

export interface SendChunksOptions {
  /** Writes outstanding before the next chunk is produced (back-pressure end to end). */
  inFlight?: number;
  /** A chunk the response has taken. */
  written?: (chunk: Buffer) => void;
}

/** Sends every chunk, then ends the response; throws if the client goes away or a chunk fails. */
export async function sendChunks(res: ServerResponse, chunks: AsyncIterable<Buffer>, o: SendChunksOptions = {}): Promise<void> {
  const max = o.inFlight ?? 2;
  const pending: Promise<void>[] = [];
  let gone: Error | undefined;
  const onClose = (): void => {
    if (!res.writableFinished) gone = new Error('the client went away');
  };
  res.once('close', onClose);
  try {
    for await (const chunk of chunks) {
      if (gone) throw gone;
      const w = new Promise<void>((resolve, reject) => {
        res.write(chunk, (err) => {
          if (err) {
            reject(err);
            return;
          }
          o.written?.(chunk);
          resolve();
        });
      });
      w.catch(() => undefined); // reported when awaited
      pending.push(w);
      if (pending.length >= max) await pending.shift();
      if (gone) throw gone;
    }
    await Promise.all(pending);
    await new Promise<void>((resolve) => res.end(resolve));
  } finally {
    res.removeListener('close', onClose);
  }
}
