// The agent's file API (docs/agent.md, "Contracts"), over this node's capture directory:
//   GET    /v1/captures/{ns}/{name}/files          JSON list of {name, size, modified, identity, source?}
//   GET    /v1/captures/{ns}/{name}/files/{file}   the bytes (Range supported); a growing
//                                                  file up to its last complete record;
//                                                  ETag is the identity, If-Match honoured
//   DELETE /v1/captures/{ns}/{name}/files          remove them (409 while capturing), and
//                                                  the pins that hold them
import type { FastifyInstance } from 'fastify';
import { AGENT_ROUTES, fileListingSchema, fileNameSchema } from '../../src/contract/agent-api.js';
import '../../src/agent/decorators.js';
import { CAPTURE_STATE_FILES } from '../../src/agent/capture-directories.js';
import { sendCaptureFile } from '../../src/agent/file-response.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { conflict, notFound } from '../../src/http/status.js';

export const fileParams = {
  ...captureParams,
  required: [...captureParams.required, 'file'],
  properties: { ...captureParams.properties, file: fileNameSchema },
} as const;

export default async function agentFileRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams }>(
    AGENT_ROUTES.files,
    { schema: { params: captureParams, response: { 200: fileListingSchema } }, config: { filesVerb: 'get' } },
    async (request) => await app.captureStore.list(request.params.namespace, request.params.name),
  );

  app.get<{ Params: CaptureParams & { file: string } }>(
    AGENT_ROUTES.file,
    { schema: { params: fileParams }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name, file } = request.params;
      const opened = await app.captureStore.openFile(namespace, name, file);
      if (!opened) throw notFound(`no file "${file}" for capture ${namespace}/${name} on this node`);
      await sendCaptureFile(request, reply, { ...opened, label: `${namespace}/${name}/${file}` });
    },
  );

  app.delete<{ Params: CaptureParams }>(
    AGENT_ROUTES.files,
    { schema: { params: captureParams }, config: { filesVerb: 'delete' } },
    async (request) => {
      const { namespace, name } = request.params;
      if (app.captureActivity.isCapturing(namespace, name)) throw conflict(`capture ${namespace}/${name} is still capturing on this node`);
      // Downloads holding these files are cut: the space is the user's to free.
      const pins = await app.filePins.dropCapture(namespace, name);
      // What the capture wrote stays counted (its maxPackets/maxBytes), and so does whose it is.
      await app.captureActivity.deletingFiles(namespace, name);
      const removed = await app.captureStore.removeAll(namespace, name, CAPTURE_STATE_FILES);
      app.captureActivity.filesDeleted(namespace, name);
      request.log.info({ caller: request.caller?.username, namespace, name, removed: removed.length, pins }, 'capture files deleted');
      return { removed };
    },
  );
}
