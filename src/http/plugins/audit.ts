// One audit record per request for packets (every route with `filesVerb`), whatever its
// outcome: 400, 401, 403, 429, 503, listings, downloads, streams, cut or complete
// (docs/security.md, "Audit"). A JSON line each, in a stream of its own (--audit-log), with
// who asked, from where, for what, what was decided and why, and what it cost. Never a
// credential, and never a name the request made up: namespace and name appear only once
// validated.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN } from '../params.js';
import { onResponseClose } from '../response-close.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** What ended or refused the request, for its audit record. */
    auditReason?: string;
  }
}

export interface AuditRecord {
  apiVersion: 'kube-pcap.io/v1';
  kind: 'AuditEvent';
  time: string;
  decision: 'allow' | 'deny' | 'revoked' | 'limited' | 'unavailable' | 'invalid' | 'error';
  reason?: string;
  user?: { username: string; uid?: string; groups: string[] };
  sourceIP: string;
  forwardedFor?: string[];
  verb: string;
  resource: 'packetcaptures/files';
  namespace?: string;
  name?: string;
  route: string;
  status: number;
  complete: boolean;
  bytesSent: number;
  durationMs: number;
}

export interface AuditSink {
  write(record: AuditRecord): void;
}

const NAMESPACE = new RegExp(DNS1123_LABEL);
const NAME = new RegExp(DNS1123_SUBDOMAIN);

function decisionOf(request: FastifyRequest, status: number): AuditRecord['decision'] {
  if (request.auditReason?.startsWith('access revoked')) return 'revoked';
  if (status === 401 || status === 403) return 'deny';
  if (request.caller) return status >= 500 ? 'error' : 'allow';
  if (status === 429) return 'limited';
  if (status === 503) return 'unavailable';
  if (status >= 400 && status < 500) return 'invalid';
  return 'error';
}

export const auditPlugin = fp(async (app: FastifyInstance, opts: { sink: AuditSink }) => {
  app.decorateRequest('auditReason', undefined);
  app.addHook('onError', async (request, _reply, err) => {
    request.auditReason ??= err.message.slice(0, 300);
  });
  app.addHook('onRequest', async (request, reply) => {
    const verb = request.routeOptions.config.filesVerb;
    if (!verb) return;
    const started = process.hrtime.bigint();
    const socket = request.raw.socket;
    const writtenBefore = socket?.bytesWritten ?? 0;
    // 'close' comes for every response, finished or cut (a hijacked zip, a revoked stream).
    onResponseClose(reply, () => opts.sink.write(recordOf(request, reply, verb, started, (socket?.bytesWritten ?? writtenBefore) - writtenBefore)));
  });
}, { name: 'kube-pcap-audit' });

function recordOf(request: FastifyRequest, reply: FastifyReply, verb: string, started: bigint, bytesSent: number): AuditRecord {
  const status = reply.raw.statusCode;
  const { namespace, name } = (request.params ?? {}) as { namespace?: unknown; name?: unknown };
  const user = request.caller;
  const ips = request.ips;
  return {
    apiVersion: 'kube-pcap.io/v1',
    kind: 'AuditEvent',
    time: new Date().toISOString(),
    decision: decisionOf(request, status),
    ...(request.auditReason ? { reason: request.auditReason } : {}),
    ...(user ? { user: { username: user.username, ...(user.uid ? { uid: user.uid } : {}), groups: user.groups } } : {}),
    sourceIP: request.socket.remoteAddress ?? '',
    // Only what a trusted proxy said (--trusted-proxies): otherwise request.ips is unset.
    ...(ips && ips.length > 1 ? { forwardedFor: ips.slice(1) } : {}),
    verb,
    resource: 'packetcaptures/files',
    ...(typeof namespace === 'string' && namespace.length <= 63 && NAMESPACE.test(namespace) ? { namespace } : {}),
    ...(typeof name === 'string' && name.length <= 253 && NAME.test(name) ? { name } : {}),
    route: request.routeOptions.url ?? '',
    status,
    complete: reply.raw.writableFinished,
    bytesSent,
    durationMs: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
  };
}
