// The agent's file API (docs/agent.md, "Contracts"), over this node's capture directory:
//   GET    /v1/captures/{ns}/{name}/files          JSON list of {name, size, modified}
//   GET    /v1/captures/{ns}/{name}/files/{file}   the bytes (Range supported); a growing
//                                                  file up to its last complete record
//   DELETE /v1/captures/{ns}/{name}/files          remove them (409 while capturing)
import type { FastifyInstance } from 'fastify';
import { CAPTURE_FILE_NAME_PATTERN } from '../../src/pcap/file-names.js';
import '../../src/agent/decorators.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { parseRange } from '../../src/http/range.js';
import { sendFileRange } from '../../src/agent/send-file.js';
import { conflict, HttpError, notFound } from '../../src/http/status.js';

const fileParams = {
  ...captureParams,
  required: [...captureParams.required, 'file'],
  properties: { ...captureParams.properties, file: { type: 'string', maxLength: 255, pattern: CAPTURE_FILE_NAME_PATTERN } },
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
      const headers: Record<string, string> = {
        'content-type': 'application/vnd.tcpdump.pcap',
        'accept-ranges': 'bytes',
        'last-modified': modified.toUTCString(),
        'content-length': String(Math.max(0, end - start + 1)),
      };
      if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`;
      // The bytes go out through reused buffers (see send-file.ts), outside fastify's reply.
      reply.hijack();
      reply.raw.writeHead(range.kind === 'partial' ? 206 : 200, headers);
      try {
        if (end >= start) await sendFileRange(handle, reply.raw, start, end);
        else reply.raw.end();
      } catch (err) {
        request.log.warn({ namespace, name, file, err: (err as Error).message }, 'file transfer cut short');
        // Headers are out: cutting the connection is the only way to say "incomplete".
        reply.raw.destroy();
      } finally {
        await handle.close();
      }
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
