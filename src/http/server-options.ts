// Fastify/Node server settings both HTTPS servers share: limits and timeouts that keep a
// slow or hostile client from holding resources, TLS 1.2+ only.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:https';
import Fastify, { type FastifyBaseLogger, type FastifyHttpsOptions, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ConnectionLimits } from '../config/common.js';
import { addressSet } from '../config/address-set.js';
import { capConnectionsPerAddress } from './connections-per-address.js';
import type { TlsMaterial } from './tls.js';

/** Longest URL parameter: a capture name may be a 253-character DNS subdomain. */
const MAX_PARAM_LENGTH = 300;

function serverOptions(tls: TlsMaterial, limits: ConnectionLimits): FastifyHttpsOptions<Server, FastifyBaseLogger> {
  return {
    // X-Forwarded-For counts only from these (fastify/proxy-addr): the client address is what
    // failed authentications are limited by, and anyone can write the header.
    ...(limits.trustedProxies && limits.trustedProxies.length > 0 ? { trustProxy: limits.trustedProxies } : {}),
    https: {
      cert: tls.cert,
      key: tls.key,
      // A client certificate is asked for, never required: health probes and bearer-token
      // clients have none. What a verified one is worth is decided per route.
      ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
      minVersion: 'TLSv1.2',
      // A connection must finish its handshake well before the idle timeout would end it.
      handshakeTimeout: limits.handshakeTimeoutMs,
      maxHeaderSize: 32 * 1024,
      // Headers must be complete within 10 s; overdue requests are found every 5 s.
      headersTimeout: 10_000,
      connectionsCheckingInterval: 5_000,
    } as FastifyHttpsOptions<Server, FastifyBaseLogger>['https'],
    // No route takes a body; anything beyond this is refused with 413.
    bodyLimit: 16 * 1024,
    // Idle socket: a client that stops reading a download for this long is cut off.
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: 5_000,
    // Time to receive a whole request (headers and body), against slow-loris clients.
    requestTimeout: 15_000,
    maxRequestsPerSocket: 1000,
    return503OnClosing: true,
    // Unknown query parameters are an error (a mistyped option must not be silently ignored).
    ajv: { customOptions: { removeAdditional: false } },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
  };
}

/** An HTTPS fastify instance with those settings, logging through `log` with request ids. */
export function createHttpsServer(tls: TlsMaterial, log: Logger, limits: ConnectionLimits): FastifyInstance {
  const app = Fastify({ ...serverOptions(tls, limits), loggerInstance: log as FastifyBaseLogger, genReqId: () => randomUUID() });
  // Beyond this, Node closes new connections on arrival: a flood of sockets is not a flood of TLS handshakes.
  app.server.maxConnections = limits.maxConnections;
  // And one address cannot take all of them (connections-per-address.ts).
  const exempt = addressSet([...(limits.sharedAddresses ?? []), ...(limits.trustedProxies ?? [])], 'connection limits');
  capConnectionsPerAddress(app.server, { max: limits.maxConnectionsPerAddress, exempt, onRefused: limits.onRefusedPerAddress });
  // Fastify types an instance by its server class; routes and plugins here are written
  // against the default instance type, whose API is the same for an https.Server.
  return app as unknown as FastifyInstance;
}
