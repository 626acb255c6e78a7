// Path parameters every capture route shares, validated before anything else happens:
// a namespace is a DNS-1123 label, a capture name a DNS-1123 subdomain (as Kubernetes
// requires), so neither can ever smuggle a path into a file name or a URL.
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
