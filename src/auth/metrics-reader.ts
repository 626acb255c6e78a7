// Who may read a server's /metrics: a token the API server accepts for its own audiences
// (a Prometheus ServiceAccount's), allowed `get` on the non-resource URL /metrics, as
// kube-rbac-proxy and the kubelet ask it. rbac-examples/metrics-reader.yaml grants it.
import type { FastifyRequest } from 'fastify';
import { bearerToken, precheckToken } from './authentication/bearer.js';
import type { TokenReviewAuthenticator } from './authentication/token-review.js';
import { metricsAttributes } from './authorization/attributes.js';
import type { SubjectAccessReviewer } from './authorization/subject-access-review.js';

export function metricsReader(scrapers: TokenReviewAuthenticator, reviewer: SubjectAccessReviewer): (request: FastifyRequest) => Promise<void> {
  return async (request) => {
    const token = bearerToken(request.headers.authorization);
    const user = await scrapers.authenticate(token, precheckToken(token));
    await reviewer.authorize(user, metricsAttributes());
  };
}
