// GET /v1/captures/{ns}/{name}/stream[?since=<RFC 3339>]: this node's packets of the capture,
// live, as one pcapng that stays open until the client leaves (docs/pcapng.md, "Live"). Served
// from the capture's files (src/agent/live-follow.ts), so a slow reader lags and the capture
// never waits for it. Reading packets is the `get` verb, like listing files.
import type { FastifyInstance } from 'fastify';
import '../../src/agent/decorators.js';
import { liveNodePcapng } from '../../src/agent/live-follow.js';
import { sendPcapng } from '../../src/agent/pcapng-response.js';
import { captureParams, parseSince, sinceQuery, type CaptureParams } from '../../src/http/params.js';
import { KUBE_PCAP_VERSION } from '../../src/version.js';
import { AGENT_ROUTES } from '../../src/contract/agent-api.js';

/** Chunks of the live stream: small enough that a tick's packets go out at once. */
const CHUNK_BYTES = 64 * 1024;

export default async function agentLiveRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { since?: string } }>(
    AGENT_ROUTES.stream,
    { schema: { params: captureParams, querystring: sinceQuery }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name } = request.params;
      const sinceMicros = request.query.since === undefined ? undefined : parseSince(request.query.since);
      const store = app.captureStore;
      request.log.info({ namespace, name, since: request.query.since }, 'live stream opened');
      const { error, clientLeft } = await sendPcapng(reply, CHUNK_BYTES, (encoder, signal) => liveNodePcapng({
        node: app.nodeName, namespace, capture: name, application: `kube-pcap ${KUBE_PCAP_VERSION}`,
        directory: () => store.directory(namespace, name),
        isWriting: (dir, ino) => store.writing.isWriting(dir, ino),
        committedLength: (dir, ino) => store.writing.committedLength(dir, ino),
        generationOf: (dir, ino) => store.writing.generationOf(dir, ino),
        flushedThrough: () => store.writing.flushedThrough(namespace, name),
        kernelDrops: () => app.captureActivity.kernelDrops(namespace, name),
        sinceMicros, signal, encoder,
      }));
      if (error && !clientLeft) request.log.warn({ namespace, name, err: error.message }, 'live stream failed');
      request.log.info({ namespace, name }, 'live stream closed');
    },
  );
}
