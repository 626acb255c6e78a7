// What every download (files.zip, files.pcapng) does before its first byte: take a place
// among the downloads this replica streams at once, then find the capture and pin each
// node's files, so that what is listed is what is served (docs/downloads.md).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { QueueFullError } from '../flow/concurrency-limit.js';
import { watchAccess } from '../http/access-watch.js';
import { HttpError } from '../http/status.js';
import type { MissingNode, NodeFiles } from './capture-files.js';
import { DownloadPins } from './download-pins.js';
import './decorators.js';
import { onResponseClose } from '../http/response-close.js';

/** What a client turned away by a full download queue is told to wait. */
const RETRY_AFTER_SECONDS = 5;

/**
 * Runs `send` holding a download place until the response closes: many clients queue
 * instead of taking more memory than the replica has; beyond the queue, 429 + Retry-After.
 */
export async function inDownloadSlot(app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, send: () => Promise<FastifyReply>): Promise<FastifyReply> {
  app.userDownloadSlots.take(request, reply);
  let release: () => void;
  try {
    release = await app.downloadSlots.acquire();
  } catch (err) {
    if (!(err instanceof QueueFullError)) throw err;
    throw new HttpError(429, 'TooManyRequests', `too many downloads in progress on this gateway replica: retry in ${RETRY_AFTER_SECONDS} s`, { 'retry-after': String(RETRY_AFTER_SECONDS) }, { retryAfterSeconds: RETRY_AFTER_SECONDS });
  }
  if (reply.raw.destroyed || request.raw.destroyed) {
    release(); // the client left while it waited
    return reply;
  }
  onResponseClose(reply, release);
  // Access taken away mid-download ends it: the connection is cut, the only way left to
  // say "incomplete" once the head is out (a zip's length is then short, a pcapng's blocks).
  const stopWatch = watchAccess(request, {
    intervalMs: app.accessRecheckMs,
    log: request.log,
    onRevoked: () => {
      request.log.warn({ user: request.caller?.username }, 'download ended: access revoked');
      reply.raw.destroy();
    },
  });
  onResponseClose(reply, stopWatch);
  try {
    return await send();
  } catch (err) {
    release();
    throw err;
  }
}

export interface PinnedCapture {
  nodes: NodeFiles[];
  /** With ?partial=true: the nodes that hold files but were left out, and why. */
  missing: MissingNode[];
  pins: DownloadPins;
}

/**
 * The capture's files on every node, pinned for this response; whatever ends the response
 * gives the pins back. Without `partial`, a node holding files that cannot be asked is a
 * 502 naming it (capture-files.ts).
 */
export async function pinForDownload(app: FastifyInstance, namespace: string, name: string, partial: boolean, request: FastifyRequest, reply: FastifyReply): Promise<PinnedCapture> {
  const files = app.captureFiles;
  const found = await files.find(namespace, name);
  const { nodes, missing } = partial ? await files.collectReachable(found, { pin: true }) : { nodes: await files.collect(found, { pin: true }), missing: [] };
  const pins = new DownloadPins(files, namespace, name, nodes, request.log);
  onResponseClose(reply, () => void pins.releaseAll());
  return { nodes, missing, pins };
}
