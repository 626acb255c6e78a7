// GET /v1/captures/{ns}/{name}/stream[?since=<RFC 3339>]: this node's packets of the capture,
// live, as one pcapng that stays open until the client leaves (docs/pcapng.md, "Live"). Served
// from the capture's files (src/agent/live-follow.ts), so a slow reader lags and the capture
// never waits for it. Reading packets is the `get` verb, like listing files.
import type { FastifyInstance } from 'fastify';
import '../../src/agent/decorators.js';
import { liveNodePcapng } from '../../src/agent/live-follow.js';
import { sendChunks } from '../../src/http/send-chunks.js';
import { captureParams, parseSince, sinceQuery, type CaptureParams } from '../../src/http/params.js';
import { PacketEncoder } from '../../src/pcap/pcapng.js';
import { KUBE_PCAP_VERSION } from '../../src/version.js';

/** Chunks of the live stream: small enough that a tick's packets go out at once. */
const CHUNK_BYTES = 64 * 1024;

export default async function agentLiveRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { since?: string } }>(
    '/v1/captures/:namespace/:name/stream',
    { schema: { params: captureParams, querystring: sinceQuery }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name } = request.params;
      const sinceMicros = request.query.since === undefined ? undefined : parseSince(request.query.since);
      const abort = new AbortController();
      const encoder = new PacketEncoder(CHUNK_BYTES);
      const store = app.captureStore;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/x-pcapng', 'cache-control': 'no-store' });
      reply.raw.once('close', () => abort.abort());
      request.log.info({ namespace, name, since: request.query.since }, 'live stream opened');
      try {
        await sendChunks(reply.raw, liveNodePcapng({
          node: app.nodeName, namespace, capture: name, application: `kube-pcap ${KUBE_PCAP_VERSION}`,
          directory: () => store.directory(namespace, name),
          liveLength: (dir, ino) => store.liveLengthOf(dir, ino),
          kernelDrops: () => app.captureActivity.kernelDrops(namespace, name),
          sinceMicros, signal: abort.signal, encoder,
        }), { written: (c) => encoder.recycle(c) });
      } catch (err) {
        if (!abort.signal.aborted) request.log.warn({ namespace, name, err: (err as Error).message }, 'live stream failed');
        reply.raw.destroy();
      } finally {
        abort.abort();
        request.log.info({ namespace, name }, 'live stream closed');
      }
    },
  );
}
