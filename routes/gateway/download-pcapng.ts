// GET /download/{namespace}/{name}/files.pcapng (also under /packet-capture): every packet of
// every node's files of one capture as one time-ordered pcapng whose interfaces name the
// node, namespace and pod (docs/pcapng.md). Each node's agent merges its own files (pinned,
// as for files.zip), and this route merges the nodes' streams (src/gateway/pcapng-merge.ts).
// Same authorization and status codes as files.zip; the length is not known ahead, so the
// body is chunked and a failure mid-stream cuts the connection. zstd or gzip when
// Accept-Encoding asks (src/http/content-encoding.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Readable } from 'node:stream';
import '../../src/gateway/decorators.js';
import { AgentError } from '../../src/gateway/agent-client.js';
import type { MissingNode } from '../../src/gateway/capture-files.js';
import { inDownloadSlot, pinForDownload } from '../../src/gateway/download-session.js';
import { NodeMerge, NodeStreamError } from '../../src/gateway/pcapng-merge.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { badGateway, notFound } from '../../src/http/status.js';
import { PcapngFormatError } from '../../src/pcap/pcapng-reader.js';
import { KUBE_PCAP_VERSION } from '../../src/version.js';
import { encodeBody, encodingHeaders, negotiateCoding } from '../../src/http/content-encoding.js';

const querystring = {
  type: 'object',
  additionalProperties: false,
  properties: { partial: { type: 'boolean', default: false } },
} as const;

export default async function pcapngDownloadRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { partial: boolean } }>(
    '/download/:namespace/:name/files.pcapng',
    { schema: { params: captureParams, querystring }, config: { filesVerb: 'get' } },
    async (request, reply) => inDownloadSlot(app, request, reply, () => send(request.params, request.query.partial, request, reply)),
  );

  async function send({ namespace, name }: CaptureParams, partial: boolean, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const files = app.captureFiles;
    const { nodes, missing, pins } = await pinForDownload(app, namespace, name, partial, request, reply);
    // A node whose files hold no packet header yet has nothing to merge: its pin goes back now.
    const holding = nodes.filter((n) => n.files.some((f) => f.size > 0));
    for (const n of nodes) if (!holding.includes(n)) pins.releaseNode(n);
    if (holding.length === 0 && missing.length === 0) {
      throw notFound(`packetcaptures.projectcalico.org "${name}" in namespace "${namespace}" has no files yet`, 'NoFiles');
    }
    pins.start();
    let opened: Awaited<ReturnType<typeof NodeMerge.open>>;
    try {
      opened = await NodeMerge.open(holding.map((n) => ({
        node: n.node,
        open: (signal: AbortSignal) => files.agents.openPinnedPcapng(n.endpoint, namespace, name, n.pin!.id, signal),
        done: () => pins.releaseNode(n),
      })), { namespace, capture: name, application: `kube-pcap ${KUBE_PCAP_VERSION}`, comment: sectionComment(namespace, name, holding.map((n) => n.node), missing), openConcurrency: files.fanOut });
    } catch (err) {
      if (!(err instanceof NodeStreamError)) throw err;
      app.gatewayMetrics.agentErrors.inc({ operation: 'pcapng' });
      const offContract = err.cause instanceof PcapngFormatError;
      const why = err.cause instanceof AgentError ? err.cause.message : `the agent of node ${err.node}: ${err.cause.message}`;
      throw badGateway(`cannot merge the files of ${namespace}/${name} into one pcapng: ${why}`, [err.node], offContract ? 'AgentInvalidResponse' : 'AgentUnreachable');
    }
    const m = app.gatewayMetrics;
    request.log.info({ user: request.caller?.username, namespace, name, nodes: holding.map((n) => n.node), ...(missing.length > 0 ? { missing: missing.map((x) => x.node) } : {}) }, partial ? 'streaming a partial files.pcapng' : 'streaming files.pcapng');
    const { merge, header } = opened;
    async function* body(): AsyncGenerator<Buffer> {
      m.bytesStreamed.inc(header.length);
      yield header;
      for await (const chunk of merge.packets()) {
        m.bytesStreamed.inc(chunk.length);
        yield chunk;
      }
    }
    const out = Readable.from(body(), { objectMode: false, highWaterMark: 16 * 1024 });
    const coding = negotiateCoding(request.headers['accept-encoding']);
    out.once('end', () => m.pcapngDownloads.inc({ result: 'complete' }));
    out.once('error', (err) => {
      m.pcapngDownloads.inc({ result: 'aborted' });
      m.agentErrors.inc({ operation: 'pcapng' });
      request.log.warn({ namespace, name, err: err.message }, 'files.pcapng aborted');
    });
    // The client went away: the nodes' streams are closed at once.
    out.once('close', () => {
      if (!out.readableEnded) {
        merge.close();
        if (!out.errored) m.pcapngDownloads.inc({ result: 'aborted' });
      }
    });
    return reply
      .header('content-type', 'application/x-pcapng')
      .header('content-disposition', 'attachment; filename=files.pcapng')
      .header('cache-control', 'no-store')
      .headers(encodingHeaders(coding))
      .send(coding === undefined ? out : encodeBody(out, coding, { flushEachChunk: false, onEncodedBytes: (n) => m.encodedBytes.inc({ coding }, n) }));
  }
}

/** The section's comment: which capture, which nodes, and (with ?partial=true) which were left out and why. */
function sectionComment(namespace: string, name: string, nodes: string[], missing: MissingNode[]): string {
  const lines = [`kube-pcap capture ${namespace}/${name}: every packet of ${nodes.length} node(s) (${listed(nodes)}), in time order`];
  if (missing.length > 0) {
    lines.push(`PARTIAL (?partial=true): ${missing.length} node(s) hold files of the capture but were left out:`);
    for (const x of missing.slice(0, MAX_LISTED)) lines.push(`${x.node}: ${x.problem}: ${x.why}`);
    if (missing.length > MAX_LISTED) lines.push(`... and ${missing.length - MAX_LISTED} more (the gateway's log names them all)`);
  }
  return lines.join('\n');
}

/** Nodes named in the comment: a pcapng option holds 64 KiB, and a thousand reasons would not fit. */
const MAX_LISTED = 100;

function listed(nodes: string[]): string {
  return nodes.length <= MAX_LISTED ? nodes.join(', ') : `${nodes.slice(0, MAX_LISTED).join(', ')}, ... and ${nodes.length - MAX_LISTED} more`;
}
