// GET /download/{namespace}/{name}/files.zip (also under /packet-capture): every node's
// files of one capture, streamed as one zip with entries <node>/<file>. Each node's files
// are pinned when listed, so each entry is exactly the file listed at its listed size
// (docs/downloads.md); a stored zip's length is then known before its first byte.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import '../../src/gateway/decorators.js';
import { inDownloadSlot, pinForDownload } from '../../src/gateway/download-session.js';
import { storedZipLength } from '../../src/gateway/zip-length.js';
import { CLIENT_GONE, deflatedZipStream, StoredZipSender, type ZipSource } from '../../src/gateway/zip-stream.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { Readable } from 'node:stream';
import { pushBodyOf } from '../../src/gateway/push-body.js';
import { agentProblem, nodesFailed, type MissingNode } from '../../src/gateway/capture-files.js';
import { AgentError } from '../../src/gateway/agent-client.js';
import { notFound } from '../../src/http/status.js';

/** The manifest of a partial download: a name no node directory can take (entries are <node>/<file>). */
const MISSING_ENTRY = 'MISSING.txt';

const querystring = {
  type: 'object',
  additionalProperties: false,
  properties: {
    compression: { type: 'string', enum: ['store', 'deflate'], default: 'store' },
    partial: { type: 'boolean', default: false },
  },
} as const;

export default async function downloadRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { compression: 'store' | 'deflate'; partial: boolean } }>(
    '/download/:namespace/:name/files.zip',
    { schema: { params: captureParams, querystring }, config: { filesVerb: 'get' } },
    async (request, reply) => inDownloadSlot(app, request, reply, () => send(request.params, request.query, request, reply)),
  );

  /** Lists every node's files and streams them as one zip (docs: zip-stream.ts). */
  async function send({ namespace, name }: CaptureParams, { compression, partial }: { compression: 'store' | 'deflate'; partial: boolean }, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const files = app.captureFiles;
    // ?partial=true: what is reachable now, with MISSING.txt naming what is not.
    const { nodes, missing, pins } = await pinForDownload(app, namespace, name, partial, request, reply);
    const sources: ZipSource[] = [];
    for (const n of nodes) {
      if (n.files.length === 0) pins.releaseNode(n);
      n.files.forEach((f, i) => sources.push({
        name: `${n.node}/${f.name}`,
        modified: new Date(f.modified),
        size: f.size,
        open: (signal: AbortSignal) => files.agents.openPinned(n.endpoint, namespace, name, n.pin!.id, f, signal),
        done: i === n.files.length - 1 ? () => pins.releaseNode(n) : undefined,
      }));
    }
    if (missing.length > 0) sources.unshift(missingManifest(namespace, name, missing));
    if (sources.length === 0) {
      throw notFound(`packetcaptures.projectcalico.org "${name}" in namespace "${namespace}" has no files yet`, 'NoFiles');
    }
    pins.start();
    // Stored: every size is pinned, so the length is exact (zip-length.ts). Deflated: unknown, chunked.
    const length = compression === 'store' ? storedZipLength(sources.map((s) => ({ name: s.name, size: s.size ?? 0 }))) : undefined;
    const m = app.gatewayMetrics;
    request.log.info({ user: request.caller?.username, namespace, name, files: sources.length, nodes: nodes.map((n) => n.node), ...(missing.length > 0 ? { missing: missing.map((m) => m.node) } : {}) }, partial ? 'streaming a partial files.zip' : 'streaming files.zip');
    const opts = {
      length,
      onBytes: (n: number) => m.bytesStreamed.inc(n),
      onError: (err: Error) => {
        m.downloads.inc({ result: 'aborted' });
        if (err.message !== CLIENT_GONE) m.agentErrors.inc({ operation: 'stream' });
        request.log.warn({ namespace, name, err: err.message }, 'files.zip aborted');
      },
    };
    const headers = {
      'content-type': 'application/zip',
      'content-disposition': 'attachment; filename=files.zip',
      'cache-control': 'no-store',
    };
    if (compression === 'deflate') {
      const zip = deflatedZipStream(sources, opts);
      zip.once('end', () => m.downloads.inc({ result: 'complete' }));
      return reply.headers(headers).send(zip);
    }
    const zip = new StoredZipSender(sources, opts);
    // A failure on the first file comes before the response's head: it is still answered with
    // a Status naming the node (502, or 503 for a passing refusal), not a cut connection.
    try {
      await zip.openFirst();
    } catch (err) {
      zip.fail(err instanceof Error ? err : new Error(String(err)));
      if (err instanceof AgentError) throw nodesFailed(namespace, name, [agentProblem(err)]);
      throw err;
    }
    // The zip's bytes go out through reused chunks with their write callbacks (chunk-writer.ts),
    // outside fastify's reply; the request's hooks (metrics, logs) still see it end.
    reply.hijack();
    const res = reply.raw;
    try {
      for (const [header, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(header, value);
      res.writeHead(200, { ...headers, 'content-length': String(length) });
      await zip.send(res);
      m.downloads.inc({ result: 'complete' });
    } catch (err) {
      zip.fail(err instanceof Error ? err : new Error(String(err)));
      // Headers are out: cutting the connection is the only way to say "incomplete".
      res.destroy();
    }
    return reply;
  }
}

/** The entry that says which nodes a partial zip leaves out, and why; first in the zip. */
function missingManifest(namespace: string, name: string, missing: MissingNode[]): ZipSource {
  const text = [
    `This files.zip of ${namespace}/${name} is partial (?partial=true): these nodes hold files of the capture but were left out.`,
    '',
    ...missing.map((m) => `${m.node}\t${m.problem}\t${m.why}`),
    '',
  ].join('\n');
  const bytes = Buffer.from(text);
  return {
    name: MISSING_ENTRY,
    modified: new Date(),
    size: bytes.length,
    open: async () => ({ body: pushBodyOf(Readable.from([bytes])), length: bytes.length }),
  };
}
