// Sending a review (TokenReview, SubjectAccessReview) to the API server. Whatever keeps the
// API server from answering becomes 503: the caller is not told "unauthorized" or
// "forbidden" for our failure, and nothing is allowed either.
import { unavailable } from './verdict.js';
import { KubeApiError, KubeUnavailableError, type KubeClient } from '../kube/client.js';

export async function postReview<T>(
  kube: KubeClient,
  review: { group: 'authentication.k8s.io' | 'authorization.k8s.io'; kind: 'TokenReview' | 'SubjectAccessReview'; spec: object },
  timeoutMs: number,
): Promise<T> {
  const plural = `${review.kind.toLowerCase()}s`;
  const purpose = review.kind === 'TokenReview' ? 'authenticate' : 'authorize';
  try {
    return await kube.request<T>({
      method: 'POST',
      path: `/apis/${review.group}/v1/${plural}`,
      body: { apiVersion: `${review.group}/v1`, kind: review.kind, spec: review.spec },
      timeoutMs,
    });
  } catch (err) {
    if (err instanceof KubeUnavailableError) throw unavailable(`cannot ${purpose}: the API server is unavailable (${err.message})`);
    if (err instanceof KubeApiError) throw unavailable(`cannot ${purpose}: the API server refused the ${review.kind} (${err.status} ${err.reason ?? ''}); check kube-pcap's RBAC`);
    throw err;
  }
}

/** Seconds since `started` (process.hrtime.bigint()), for review latency metrics. */
export function secondsSince(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}
