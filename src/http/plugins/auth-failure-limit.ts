// Failed authentications, limited per client with @fastify/rate-limit: a client that keeps
// sending credentials the API server rejects is answered 429 before any more of them are
// reviewed. The client is the connection's address, or the forwarded one only when the
// connection comes from a trusted proxy (fastify's trustProxy, --trusted-proxies). An
// address that stands for many clients (--shared-client-addresses: loopback, where every
// `kubectl port-forward` user arrives) is not a client: limiting it would let one user's
// typos lock every other user out, so its failures are bounded by the lane of unverified
// reviews alone (docs/security.md). A token already known valid is never limited
// (authentication/chain.ts).
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { FailureLimit } from '../../auth/authentication/chain.js';
import type { AddressSet } from '../../config/address-set.js';
import { HttpError } from '../status.js';

export interface AuthFailureLimitOptions {
  /** Addresses that are not one client's: never limited. */
  shared: AddressSet;
  /** Failures allowed per client and window; 0 turns the limit off. */
  maxFailures: number;
  windowMs: number;
  /** Clients remembered at once (least recently seen forgotten first). */
  maxClients: number;
  onLimited?: () => void;
}

declare module 'fastify' {
  interface FastifyInstance {
    authFailures: FailureLimit | undefined;
  }
}

export const authFailureLimitPlugin = fp(async (app: FastifyInstance, opts: AuthFailureLimitOptions) => {
  if (opts.maxFailures === 0) {
    app.decorate('authFailures', undefined);
    return;
  }
  // Not a hook on every route: only the authentication chain asks.
  await app.register(rateLimit, { global: false, cache: opts.maxClients });
  const limiter = app.createRateLimit({ max: opts.maxFailures, timeWindow: opts.windowMs, keyGenerator: (request) => request.ip });
  app.decorate('authFailures', {
    async check(request) {
      if (opts.shared(request.ip)) return;
      const state = await limiter(request, { increment: false });
      if (state.isAllowed || state.remaining > 0) return;
      opts.onLimited?.();
      const retry = Math.max(1, state.ttlInSeconds);
      throw new HttpError(429, 'TooManyRequests', `too many failed authentications from this client: retry in ${retry} s`, { 'retry-after': String(retry) }, { retryAfterSeconds: retry });
    },
    async record(request) {
      if (opts.shared(request.ip)) return;
      await limiter(request);
    },
  } satisfies FailureLimit);
}, { name: 'kube-pcap-auth-failure-limit' });
