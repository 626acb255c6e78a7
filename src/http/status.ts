// Errors as Kubernetes Status objects, the shape kubectl and client libraries understand.
import type { AuthVerdict } from '../auth/verdict.js';

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

/**
 * How a node's agent failed a request: not reached (no endpoint, a connection that failed
 * or broke), an answer off-contract, or a refusal in its own words (an error status).
 */
export type AgentProblem = 'AgentUnreachable' | 'AgentInvalidResponse' | 'AgentRefused';

/** A node whose agent failed, how, and why (the agent's own reason for a refusal). */
export interface NodeProblem {
  node: string;
  problem: AgentProblem;
  why: string;
  /** The agent's HTTP status, when it answered. */
  status?: number;
}

function causeOf(p: NodeProblem): StatusCause {
  const message = p.problem === 'AgentUnreachable' ? `the agent of node ${p.node} could not be reached`
    : p.problem === 'AgentInvalidResponse' ? `the agent of node ${p.node} answered off-contract`
    : `the agent of node ${p.node} refused to serve it: ${p.why}`;
  return { reason: p.problem, field: p.node, message };
}

/** 502 naming the nodes whose agents failed, and how (details.causes[].field = node). */
export const badGateway = (message: string, nodes: string[], problem: AgentProblem = 'AgentUnreachable'): HttpError =>
  agentsFailed(message, nodes.map((node) => ({ node, problem, why: '' })));

/** 502 naming each node whose agent failed, with its problem and reason. */
export const agentsFailed = (message: string, problems: NodeProblem[]): HttpError =>
  new HttpError(502, 'BadGateway', message, {}, { causes: problems.map(causeOf) });

/**
 * 503 when every node left out refused for a reason that passes (too many pins, the disk
 * full for now): the user is told each agent's reason and to retry, not that it is down.
 */
export const agentsBusy = (message: string, problems: NodeProblem[], retryAfterSeconds = 10): HttpError =>
  new HttpError(503, 'ServiceUnavailable', message, { 'retry-after': String(retryAfterSeconds) }, { retryAfterSeconds, causes: problems.map(causeOf) });

export const serviceUnavailable = (message: string, retryAfterSeconds = 5): HttpError =>
  new HttpError(503, 'ServiceUnavailable', message, { 'retry-after': String(retryAfterSeconds) }, { retryAfterSeconds });

/** The answer to an authentication or authorization verdict (src/auth/verdict.ts). */
export function httpErrorOf(v: AuthVerdict): HttpError {
  switch (v.kind) {
    case 'unauthenticated':
      return unauthorized(v.message);
    case 'forbidden':
      return forbidden(v.message);
    case 'unavailable':
      return serviceUnavailable(v.message, v.retryAfterSeconds);
  }
}
