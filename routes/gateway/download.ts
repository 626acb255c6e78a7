// GET /download/{namespace}/{name}/files.zip (also under /packet-capture): every node's
// files of one capture, streamed as one zip with entries <node>/<file>.
import type { FastifyInstance } from 'fastify';
import '../../src/gateway/decorators.js';
import { CLIENT_GONE, zipStream, type ZipSource } from '../../src/gateway/zip-stream.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { notFound } from '../../src/http/status.js';

const querystring = {
  type: 'object',
  additionalProperties: false,
  properties: {
    compression: { type: 'string', enum: ['store', 'deflate'], default: 'store' },
  },
} as const;

export default async function downloadRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams; Querystring: { compression: 'store' | 'deflate' } }>(
    '/download/:namespace/:name/files.zip',
    { schema: { params: captureParams, querystring }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name } = request.params;
      const files = app.captureFiles;
      const pc = await files.capture(namespace, name);
      const nodes = await files.collect(pc);
      const sources: ZipSource[] = nodes.flatMap((n) => n.files.map((f) => ({
        name: `${n.node}/${f.name}`,
        modified: new Date(f.modified),
        size: f.size,
        open: (signal: AbortSignal) => files.agents.open(n.endpoint, namespace, name, f.name, signal),
      })));
      if (sources.length === 0) {
        throw notFound(`packetcaptures.projectcalico.org "${name}" in namespace "${namespace}" has no files yet`, 'NoFiles');
      }
      const m = app.gatewayMetrics;
      request.log.info({ user: request.caller?.username, namespace, name, files: sources.length, nodes: nodes.map((n) => n.node) }, 'streaming files.zip');
      const zip = zipStream(sources, {
        deflate: request.query.compression === 'deflate',
        onBytes: (n) => m.bytesStreamed.inc(n),
        onError: (err) => {
          m.downloads.inc({ result: 'aborted' });
          if (err.message !== CLIENT_GONE) m.agentErrors.inc({ operation: 'stream' });
          request.log.warn({ namespace, name, err: err.message }, 'files.zip aborted');
        },
      });
      zip.once('end', () => m.downloads.inc({ result: 'complete' }));
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', 'attachment; filename=files.zip')
        .header('cache-control', 'no-store')
        .send(zip);
    },
  );
}
