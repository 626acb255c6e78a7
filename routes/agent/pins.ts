// Pinned files for downloads (docs/downloads.md, "Pinned files"; src/agent/file-pins.ts):
//   POST   /v1/captures/{ns}/{name}/pins                     pin every file as it is now:
//                                                            201 {id, expiresAt, ttlSeconds, files}
//   PUT    /v1/captures/{ns}/{name}/pins/{pin}               renew it while the download runs
//   GET    /v1/captures/{ns}/{name}/pins/{pin}/files/{file}  the pinned bytes, exactly the
//                                                            listed size (Range, ETag, If-Match)
//   DELETE /v1/captures/{ns}/{name}/pins/{pin}               release it
// Pinning reads files, so it is the `get` verb like listing them.
import type { FastifyInstance } from 'fastify';
import '../../src/agent/decorators.js';
import { sendCaptureFile } from '../../src/agent/file-response.js';
import { nodePcapng } from '../../src/agent/node-pcapng.js';
import { sendPcapng } from '../../src/agent/pcapng-response.js';
import { KUBE_PCAP_VERSION } from '../../src/version.js';
import { PinRefusedError, type Pin } from '../../src/agent/file-pins.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { HttpError, notFound } from '../../src/http/status.js';
import { AGENT_ROUTES, pinAnswerSchema, pinIdSchema, pinLeaseSchema, type PinAnswer, type PinLease } from '../../src/contract/agent-api.js';
import { fileParams } from './files.js';

const pinParams = {
  ...captureParams,
  required: [...captureParams.required, 'pin'],
  properties: { ...captureParams.properties, pin: pinIdSchema },
} as const;

const pinnedFileParams = {
  ...fileParams,
  required: [...fileParams.required, 'pin'],
  properties: { ...fileParams.properties, pin: pinIdSchema },
} as const;

type PinParams = CaptureParams & { pin: string };

/** The node pcapng's writes: large, as send-file.ts's, so that TLS takes few of them. */
const CHUNK_BYTES = 256 * 1024;

export default async function agentPinRoutes(app: FastifyInstance): Promise<void> {
  const lease = (pin: Pin): PinLease => ({
    id: pin.id,
    expiresAt: new Date(pin.expiresAt).toISOString(),
    ttlSeconds: app.filePins.ttlSeconds,
  });
  const gone = (p: PinParams): HttpError => notFound(`no pin ${p.pin} of ${p.namespace}/${p.name} on this node (released, expired, or its capture's files were deleted)`, 'PinNotFound');

  app.post<{ Params: CaptureParams }>(
    AGENT_ROUTES.pins,
    { schema: { params: captureParams, response: { 201: pinAnswerSchema } }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name } = request.params;
      try {
        const pin = await app.filePins.create(namespace, name);
        request.log.debug({ namespace, name, pin: pin.id, files: pin.files.length }, 'files pinned');
        const answer: PinAnswer = { ...lease(pin), files: pin.files.map(({ name, size, modified, identity, source }) => ({ name, size, modified, identity, ...(source ? { source } : {}) })) };
        return await reply.code(201).send(answer);
      } catch (err) {
        if (!(err instanceof PinRefusedError)) throw err;
        const reason = err.status === 507 ? 'InsufficientStorage' : err.status === 503 ? 'ServiceUnavailable' : 'Conflict';
        throw new HttpError(err.status, reason, err.message, err.status === 503 ? { 'retry-after': '5' } : undefined);
      }
    },
  );

  app.put<{ Params: PinParams }>(
    AGENT_ROUTES.pin,
    { schema: { params: pinParams, response: { 200: pinLeaseSchema } }, config: { filesVerb: 'get' } },
    async (request) => {
      const { namespace, name, pin } = request.params;
      const held = app.filePins.renew(pin, namespace, name);
      if (!held) throw gone(request.params);
      return lease(held);
    },
  );

  app.delete<{ Params: PinParams }>(
    AGENT_ROUTES.pin,
    { schema: { params: pinParams }, config: { filesVerb: 'get' } },
    async (request) => {
      const { namespace, name, pin } = request.params;
      if (!(await app.filePins.release(pin, namespace, name))) throw gone(request.params);
      return { released: pin };
    },
  );

  // The node's files of the pin as one time-ordered pcapng (docs/pcapng.md, "One node's
  // stream"): what the gateway merges across nodes for files.pcapng.
  app.get<{ Params: PinParams }>(
    AGENT_ROUTES.pinnedPcapng,
    { schema: { params: pinParams }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name, pin } = request.params;
      const held = app.filePins.hold(pin, namespace, name);
      if (!held) throw gone(request.params);
      try {
        const { error } = await sendPcapng(reply, CHUNK_BYTES, (encoder, signal) => nodePcapng(held.files, { node: app.nodeName, namespace, capture: name, application: `kube-pcap ${KUBE_PCAP_VERSION}`, signal, encoder }));
        if (error) request.log.warn({ namespace, name, pin, err: error.message }, 'node pcapng aborted');
      } finally {
        held.done();
      }
    },
  );

  app.get<{ Params: PinParams & { file: string } }>(
    AGENT_ROUTES.pinnedFile,
    { schema: { params: pinnedFileParams }, config: { filesVerb: 'get' } },
    async (request, reply) => {
      const { namespace, name, pin, file } = request.params;
      const opened = await app.filePins.open(pin, namespace, name, file);
      if (!opened) throw notFound(`no file "${file}" in pin ${pin} of ${namespace}/${name} on this node (the pin was released, expired, or never held it)`, 'PinNotFound');
      try {
        const { size, modified, identity } = opened.file;
        await sendCaptureFile(request, reply, { handle: opened.handle, size, modified: new Date(modified), identity, label: `${namespace}/${name}/${file} (pin ${pin})` });
      } finally {
        opened.done();
      }
    },
  );
}
