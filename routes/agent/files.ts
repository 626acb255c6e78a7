// The agent's file API (docs/agent.md, "Contracts"), over this node's capture directory:
//   GET    /v1/captures/{ns}/{name}/files          JSON list of {name, size, modified, identity, source?}
//   GET    /v1/captures/{ns}/{name}/files/{file}   the bytes (Range supported); a growing
//                                                  file up to its last complete record;
//                                                  ETag is the identity, If-Match honoured
//   DELETE /v1/captures/{ns}/{name}/files          remove them (409 while capturing), and
//                                                  the pins that hold them
import type { FastifyInstance } from 'fastify';
import { CAPTURE_FILE_NAME_PATTERN } from '../../src/pcap/file-names.js';
import '../../src/agent/decorators.js';
import { CAPTURE_STATE_FILES } from '../../src/agent/capture-controller.js';
import { sendCaptureFile } from '../../src/agent/file-response.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { conflict, notFound } from '../../src/http/status.js';

export const fileParams = {
  ...captureParams,
  required: [...captureParams.required, 'file'],
  properties: { ...captureParams.properties, file: { type: 'string', maxLength: 255, pattern: CAPTURE_FILE_NAME_PATTERN } },
} as const;

/** Where a file's packets come from (src/agent/file-source.ts), for the merged pcapng. */
export const fileSource = {
  type: 'object',
  required: ['node', 'namespace', 'capture', 'pod', 'podUID', 'podIPs', 'iface', 'linkType', 'snapLen', 'tsresol'],
  properties: {
    node: { type: 'string' }, namespace: { type: 'string' }, capture: { type: 'string' }, pod: { type: 'string' }, podUID: { type: 'string' },
    podIPs: { type: 'array', items: { type: 'string' } }, iface: { type: 'string' }, linkType: { type: 'integer' }, snapLen: { type: 'integer' }, tsresol: { type: 'integer' },
  },
} as const;

export const fileListing = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'size', 'modified', 'identity'],
    properties: { name: { type: 'string' }, size: { type: 'integer' }, modified: { type: 'string' }, identity: { type: 'string' }, source: fileSource },
  },
} as const;

export default async function agentFileRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams }>(
    '/v1/captures/:namespace/:name/files',
    { schema: { params: captureParams, response: { 200: fileListing } }, config: { filesVerb: 'get' } },
    async (request) => await app.captureStore.list(request.params.namespace, request.params.name),
  );

  app.get<{ Params: CaptureParams & { file: string } }>(
    '/v1/captures/:namespace/:name/files/:file',
    { schema: { params: fileParams }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name, file } = request.params;
      const opened = await app.captureStore.openFile(namespace, name, file);
      if (!opened) throw notFound(`no file "${file}" for capture ${namespace}/${name} on this node`);
      await sendCaptureFile(request, reply, { ...opened, label: `${namespace}/${name}/${file}` });
    },
  );

  app.delete<{ Params: CaptureParams }>(
    '/v1/captures/:namespace/:name/files',
    { schema: { params: captureParams }, config: { filesVerb: 'delete' } },
    async (request) => {
      const { namespace, name } = request.params;
      if (app.captureActivity.isCapturing(namespace, name)) throw conflict(`capture ${namespace}/${name} is still capturing on this node`);
      // Downloads holding these files are cut: the space is the user's to free.
      const pins = await app.filePins.dropCapture(namespace, name);
      // What the capture wrote stays counted (its maxPackets/maxBytes), and so does whose it is.
      const removed = await app.captureStore.removeAll(namespace, name, CAPTURE_STATE_FILES);
      app.captureActivity.filesDeleted(namespace, name);
      request.log.info({ caller: request.caller?.username, namespace, name, removed: removed.length, pins }, 'capture files deleted');
      return { removed };
    },
  );
}
