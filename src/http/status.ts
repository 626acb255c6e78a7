// Errors as Kubernetes Status objects, the shape kubectl and client libraries understand.

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  code: number;
  details?: { name?: string; group?: string; kind?: string; causes?: StatusCause[]; retryAfterSeconds?: number };
}

export class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details?: StatusObject['details'],
  ) {
    super(message);
    this.name = 'HttpError';
  }

  toStatus(): StatusObject {
    return statusObject(this.code, this.reason, this.message, this.details);
  }
}

export function statusObject(code: number, reason: string, message: string, details?: StatusObject['details']): StatusObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) };
}

export const badRequest = (message: string, causes?: StatusCause[]): HttpError =>
  new HttpError(400, 'BadRequest', message, {}, causes ? { causes } : undefined);

export const unauthorized = (message: string): HttpError =>
  new HttpError(401, 'Unauthorized', message, { 'www-authenticate': 'Bearer realm="kube-pcap"' });

export const forbidden = (message: string): HttpError => new HttpError(403, 'Forbidden', message);

export const notFound = (message: string, reason = 'NotFound'): HttpError => new HttpError(404, reason, message);

export const conflict = (message: string): HttpError => new HttpError(409, 'Conflict', message);

export type AgentProblem = 'AgentUnreachable' | 'AgentInvalidResponse';

/** 502 naming the nodes whose agents failed, and how (details.causes[].field = node). */
export const badGateway = (message: string, nodes: string[], problem: AgentProblem = 'AgentUnreachable'): HttpError =>
  new HttpError(502, 'BadGateway', message, {}, {
    causes: nodes.map((n) => ({ reason: problem, field: n, message: problem === 'AgentUnreachable' ? `the agent of node ${n} could not be reached` : `the agent of node ${n} answered off-contract` })),
  });

export const serviceUnavailable = (message: string, retryAfterSeconds = 5): HttpError =>
  new HttpError(503, 'ServiceUnavailable', message, { 'retry-after': String(retryAfterSeconds) }, { retryAfterSeconds });
