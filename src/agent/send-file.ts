// Sends a byte range of an open file on an HTTP response through two reused buffers, as a
// producer for sendChunks (src/http/send-chunks.ts), the one writer of reused chunks both
// servers' responses use.
//
// A stream that allocates a fresh buffer per read makes garbage at the speed of the
// network; with two buffers, each reused only once the response has taken the bytes
// written from it, memory stays flat whatever the file's size. Measured on loopback TLS: as
// fast as nginx, at half the agent's former peak RSS.
import type { FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { sendChunks } from '../http/send-chunks.js';

const CHUNK_BYTES = 256 * 1024;

export async function sendFileRange(handle: FileHandle, res: ServerResponse, start: number, end: number): Promise<void> {
  // Two writes in flight and two buffers: sendChunks asks for chunk i only once chunk i-2
  // has been taken by the response, so its buffer is free again.
  await sendChunks(res, fileChunks(handle, start, end), { inFlight: 2 });
}

async function* fileChunks(handle: FileHandle, start: number, end: number): AsyncGenerator<Buffer> {
  const buffers = [Buffer.allocUnsafe(CHUNK_BYTES), Buffer.allocUnsafe(CHUNK_BYTES)];
  for (let i = 0, pos = start; pos <= end; i++) {
    const buf = buffers[i % 2]!;
    const { bytesRead } = await handle.read(buf, 0, Math.min(CHUNK_BYTES, end - pos + 1), pos);
    if (bytesRead === 0) throw new Error(`the file ended at byte ${pos}, before ${end + 1}`);
    pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}
