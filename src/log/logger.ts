// pino, configured so that credentials never reach a log line: the Authorization header
// and anything named like a token are redacted wherever they appear, and requests are
// logged by path only (a query string is the other place a careless client puts secrets).
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
];

export interface RequestLike {
  id?: string;
  method?: string;
  url?: string;
  ip?: string;
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
        path: (req.url ?? '').split('?')[0],
        remoteAddress: req.ip ?? req.socket?.remoteAddress,
      }),
      err: pino.stdSerializers.err,
    },
  };
}

export function createLogger(level: string, name: string, destination?: pino.DestinationStream): Logger {
  return destination ? pino(loggerOptions(level, name), destination) : pino(loggerOptions(level, name));
}

export type { Logger };
