// Path parameters every capture route shares, validated before anything else happens:
// a namespace is a DNS-1123 label, a capture name a DNS-1123 subdomain (as Kubernetes
// requires), so neither can ever smuggle a path into a file name or a URL.
import { badRequest } from './status.js';

export const DNS1123_LABEL = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
export const DNS1123_SUBDOMAIN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';

export const captureParams = {
  type: 'object',
  required: ['namespace', 'name'],
  additionalProperties: false,
  properties: {
    namespace: { type: 'string', minLength: 1, maxLength: 63, pattern: DNS1123_LABEL },
    name: { type: 'string', minLength: 1, maxLength: 253, pattern: DNS1123_SUBDOMAIN },
  },
} as const;

export interface CaptureParams {
  namespace: string;
  name: string;
}

export const statusSchema = {
  type: 'object',
  required: ['kind', 'apiVersion', 'status', 'message', 'reason', 'code'],
  properties: {
    kind: { type: 'string' },
    apiVersion: { type: 'string' },
    metadata: { type: 'object' },
    status: { type: 'string' },
    message: { type: 'string' },
    reason: { type: 'string' },
    code: { type: 'integer' },
    details: { type: 'object', additionalProperties: true },
  },
} as const;

/** `?since=<RFC 3339>` of the live streams. */
export const sinceQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { since: { type: 'string', maxLength: 64 } },
} as const;

/** ?since=<RFC 3339> as unix microseconds (millisecond precision); anything else is a 400. */
export function parseSince(since: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(since) ? Date.parse(since) : NaN;
  if (!Number.isFinite(ms)) throw badRequest(`since must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not ${JSON.stringify(since.slice(0, 64))}`);
  return ms * 1000;
}
