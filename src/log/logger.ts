// pino, configured so that credentials never reach a log line: the Authorization header
// and anything named like a token are redacted wherever they appear, and a request is
// logged by its route template, never its concrete URL (a query string or a path segment
// is where a careless client pastes a token; handlers log the validated names they use).
import pino, { type Logger, type LoggerOptions } from 'pino';

export const REDACT_PATHS = [
  'authorization',
  'token',
  'password',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  '*.authorization',
  '*.token',
  '*.bearerToken',
  'spec.token',
  'status.token',
  // The HTTP parser's errors carry the raw request bytes, headers and all (fastify logs
  // them at trace level as "client error"); the err serializer drops them too.
  'rawPacket',
  'err.rawPacket',
];

export interface RequestLike {
  method?: string;
  ip?: string;
  routeOptions?: { url?: string };
  socket?: { remoteAddress?: string };
}

export function loggerOptions(level: string, name: string): LoggerOptions {
  return {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    serializers: {
      req: (req: RequestLike) => ({
        method: req.method,
        route: req.routeOptions?.url ?? '(no route)',
        remoteAddress: req.ip ?? req.socket?.remoteAddress,
      }),
      err: (err: Error) => {
        const out = pino.stdSerializers.err(err) as ReturnType<typeof pino.stdSerializers.err> & { rawPacket?: unknown };
        delete out.rawPacket;
        return out;
      },
    },
  };
}

export function createLogger(level: string, name: string, destination?: pino.DestinationStream): Logger {
  return destination ? pino(loggerOptions(level, name), destination) : pino(loggerOptions(level, name));
}

export type { Logger };
