// An agent's pcapng answer (a pin's node pcapng, the live stream), written outside fastify's
// reply through the encoder's reused chunks (src/http/send-chunks.ts). The headers go out
// first, so an error after them can only cut the connection: a short pcapng must never look
// whole.
import type { FastifyReply } from 'fastify';
import { sendChunks } from '../http/send-chunks.js';
import { PacketEncoder } from '../pcap/pcapng.js';
import { onResponseClose } from '../http/response-close.js';

/**
 * Answers 200 with the chunks `produce` makes with the encoder; its signal is aborted when the
 * client leaves and when the answer ends. Never throws: says what ended it.
 */
export async function sendPcapng(reply: FastifyReply, chunkBytes: number, produce: (encoder: PacketEncoder, signal: AbortSignal) => AsyncIterable<Buffer>): Promise<{ error?: Error; clientLeft: boolean }> {
  const abort = new AbortController();
  const encoder = new PacketEncoder(chunkBytes);
  reply.hijack();
  reply.raw.writeHead(200, { 'content-type': 'application/x-pcapng', 'cache-control': 'no-store' });
  onResponseClose(reply, () => abort.abort());
  try {
    await sendChunks(reply.raw, produce(encoder, abort.signal), { written: (c) => encoder.recycle(c) });
    return { clientLeft: false };
  } catch (err) {
    const clientLeft = abort.signal.aborted;
    reply.raw.destroy();
    return { error: err as Error, clientLeft };
  } finally {
    abort.abort();
  }
}
