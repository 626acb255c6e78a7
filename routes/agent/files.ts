// The agent's file API (DESIGN.md, "Agent ⇄ gateway"), over this node's capture directory:
//   GET    /v1/captures/{ns}/{name}/files          JSON list of {name, size, modified}
//   GET    /v1/captures/{ns}/{name}/files/{file}   the bytes (Range supported); a growing
//                                                  file up to its last complete record
//   DELETE /v1/captures/{ns}/{name}/files          remove them (409 while capturing)
import type { FastifyInstance } from 'fastify';
import { FILE_NAME_PATTERN } from '../../src/agent/capture-store.js';
import '../../src/agent/decorators.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { parseRange } from '../../src/http/range.js';
import { conflict, HttpError, notFound } from '../../src/http/status.js';

const fileParams = {
  ...captureParams,
  required: [...captureParams.required, 'file'],
  properties: { ...captureParams.properties, file: { type: 'string', maxLength: 255, pattern: FILE_NAME_PATTERN } },
} as const;

const listing = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'size', 'modified'],
    properties: { name: { type: 'string' }, size: { type: 'integer' }, modified: { type: 'string' } },
  },
} as const;

export default async function agentFileRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams }>(
    '/v1/captures/:namespace/:name/files',
    { schema: { params: captureParams, response: { 200: listing } }, config: { filesVerb: 'get' } },
    async (request) => await app.captureStore.list(request.params.namespace, request.params.name),
  );

  app.get<{ Params: CaptureParams & { file: string } }>(
    '/v1/captures/:namespace/:name/files/:file',
    { schema: { params: fileParams }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name, file } = request.params;
      const opened = await app.captureStore.openFile(namespace, name, file);
      if (!opened) throw notFound(`no file "${file}" for capture ${namespace}/${name} on this node`);
      const { handle, size, modified } = opened;
      const range = parseRange(request.headers.range, size);
      if (range.kind === 'unsatisfiable') {
        await handle.close();
        throw new HttpError(416, 'RequestedRangeNotSatisfiable', `range "${request.headers.range}" is outside the file's ${size} bytes`, { 'content-range': `bytes */${size}` });
      }
      const start = range.kind === 'partial' ? range.start : 0;
      const end = range.kind === 'partial' ? range.end : size - 1;
      void reply
        .header('content-type', 'application/vnd.tcpdump.pcap')
        .header('accept-ranges', 'bytes')
        .header('last-modified', modified.toUTCString())
        .header('content-length', String(end - start + 1));
      if (range.kind === 'partial') void reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`);
      if (size === 0 || end < start) {
        await handle.close();
        return reply.send('');
      }
      return reply.send(handle.createReadStream({ start, end, highWaterMark: 1 << 20, autoClose: true }));
    },
  );

  app.delete<{ Params: CaptureParams }>(
    '/v1/captures/:namespace/:name/files',
    { schema: { params: captureParams }, config: { filesVerb: 'delete' } },
    async (request) => {
      const { namespace, name } = request.params;
      if (app.captureActivity.isCapturing(namespace, name)) throw conflict(`capture ${namespace}/${name} is still capturing on this node`);
      const removed = await app.captureStore.removeAll(namespace, name);
      app.captureActivity.filesDeleted(namespace, name);
      request.log.info({ caller: request.caller?.username, namespace, name, removed: removed.length }, 'capture files deleted');
      return { removed };
    },
  );
}
