// GET /stream/{namespace}/{name}[?since=<RFC 3339>] (also under /packet-capture): the
// capture's packets from every node, live, as one pcapng in timestamp order (docs/pcapng.md,
// "Live"; src/gateway/live-merge.ts). From now, or from `since` with what is already on disk;
// open until the capture finishes (and every node has delivered what it had), the capture is
// deleted, or the viewer leaves. Same authorization as the downloads: `get` on
// packetcaptures/files.
import type { FastifyInstance } from 'fastify';
import { Readable } from 'node:stream';
import { QueueFullError } from '../../src/flow/concurrency-limit.js';
import '../../src/gateway/decorators.js';
import { isNodeName } from '../../src/gateway/agent-listing.js';
import { liveMerge, type LiveNode } from '../../src/gateway/live-merge.js';
import { captureParams, parseSince, sinceQuery, type CaptureParams } from '../../src/http/params.js';
import { watchAccess } from '../../src/http/access-watch.js';
import { HttpError } from '../../src/http/status.js';
import { KUBE_PCAP_VERSION } from '../../src/version.js';
import { encodeBody, encodingHeaders, negotiateCoding } from '../../src/http/content-encoding.js';
import { onResponseClose } from '../../src/http/response-close.js';

const RETRY_AFTER_SECONDS = 5;

export default async function streamRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { since?: string } }>(
    '/stream/:namespace/:name',
    { schema: { params: captureParams, querystring: sinceQuery }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name } = request.params;
      const since = request.query.since === undefined ? undefined : parseSince(request.query.since);
      app.userLiveSlots.take(request, reply);
      let release: () => void;
      try {
        release = await app.liveSlots.acquire();
      } catch (err) {
        if (!(err instanceof QueueFullError)) throw err;
        throw new HttpError(429, 'TooManyRequests', `too many live streams open on this gateway replica (--max-live-streams): retry in ${RETRY_AFTER_SECONDS} s`, { 'retry-after': String(RETRY_AFTER_SECONDS) }, { retryAfterSeconds: RETRY_AFTER_SECONDS });
      }
      onResponseClose(reply, release);
      const files = app.captureFiles;
      let found;
      try {
        found = await files.find(namespace, name); // 404 before any byte when there is no such capture
      } catch (err) {
        release();
        throw err;
      }
      const uid = found.pc.metadata.uid;
      const abort = new AbortController();
      onResponseClose(reply, () => abort.abort());
      const node = (n: string): LiveNode => ({
        node: n,
        // The endpoint is looked up at each (re)connection: an agent that restarted may have a new address.
        open: async (sinceMicros, signal) => {
          const ep = files.directory.endpointFor(n);
          if (!ep) throw new Error('no agent endpoint for this node (its agent is not running or not ready)');
          return await files.agents.openLive(ep, namespace, name, sinceMicros, signal);
        },
      });
      // The stream ends when its caller may no longer read it, and its trailer says why.
      let ending = 'finished';
      const stopWatch = watchAccess(request, {
        intervalMs: app.accessRecheckMs,
        log: request.log,
        onRevoked: (reason) => {
          ending = `access revoked: ${reason}`;
          abort.abort();
        },
      });
      onResponseClose(reply, stopWatch);
      reply.trailer('kube-pcap-stream-end', async () => ending);
      const start = since ?? Date.now() * 1000;
      request.log.info({ user: request.caller?.username, namespace, name, since: request.query.since }, 'live stream opened');
      const stream = liveMerge({
        namespace, capture: name, application: `kube-pcap ${KUBE_PCAP_VERSION}`,
        comment: `kube-pcap live capture ${namespace}/${name}, from ${new Date(start / 1000).toISOString()}`,
        sinceMicros: start, signal: abort.signal, log: request.log,
        nodes: async () => {
          let now;
          try {
            now = await files.find(namespace, name);
          } catch (err) {
            if (err instanceof HttpError && err.code === 404) return undefined;
            throw err;
          }
          if (now.pc.metadata.uid !== uid) return undefined; // deleted and made again: not this stream's capture
          // Finished: every node says so; a capture no node ever took up, once its end time has passed.
          const end = now.pc.spec?.endTime ? Date.parse(now.pc.spec.endTime) : NaN;
          const finished = now.entries.length > 0 ? now.entries.every((e) => e.state === 'Finished' || e.state === 'Error') : end <= Date.now();
          return { nodes: now.entries.filter((e) => isNodeName(e.node)).map((e) => node(e.node)), finished };
        },
      });
      const body = Readable.from(stream, { objectMode: false, highWaterMark: 16 * 1024 });
      body.once('error', (err) => request.log.warn({ namespace, name, err: err.message }, 'live stream failed'));
      body.once('end', () => request.log.info({ namespace, name }, 'live stream ended'));
      // Compressed on request, flushed after every batch of packets: a packet is not held back
      // waiting for the compressor's window to fill.
      const coding = negotiateCoding(request.headers['accept-encoding']);
      const m = app.gatewayMetrics;
      return reply
        .header('content-type', 'application/x-pcapng')
        .header('cache-control', 'no-store')
        // An nginx in front (ingress-nginx) must pass each packet on, not gather a buffer of them.
        .header('x-accel-buffering', 'no')
        .headers(encodingHeaders(coding))
        .send(coding === undefined ? body : encodeBody(body, coding, { flushEachChunk: true, onEncodedBytes: (n) => m.encodedBytes.inc({ coding }, n) }));
    },
  );
}
