// Long responses (live streams, big downloads) are authorized again while they run
// (docs/security.md, "Revocation"): a RoleBinding deleted or a token expired ends them
// within one interval plus the review caches' lifetimes, not when the client leaves.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { isRefusal } from '../auth/verdict.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Authenticates and authorizes this request again (authorize-files.ts); throws as the first time would. */
    recheckAccess?: () => Promise<void>;
  }
}

export interface AccessWatchOptions {
  intervalMs: number;
  log: FastifyBaseLogger;
  /** Called once, when the caller may no longer read what they are reading. */
  onRevoked(reason: string): void;
}

/** Checks that cannot be made in a row before the response is ended anyway (fail closed). */
const UNAVAILABLE_CHECKS = 3;

/** Re-checks `request`'s access every interval until the returned stop is called. */
export function watchAccess(request: FastifyRequest, o: AccessWatchOptions): () => void {
  const recheck = request.recheckAccess;
  if (!recheck || o.intervalMs <= 0) return () => undefined;
  let unavailable = 0;
  let stopped = false;
  let running = false;
  const timer = setInterval(() => {
    if (running || stopped) return;
    running = true;
    recheck().then(() => {
      unavailable = 0;
    }, (err: unknown) => {
      if (stopped) return;
      // A verdict of no (unauthenticated, forbidden) ends the response; not being able to ask does only if it lasts.
      const denied = isRefusal(err);
      if (!denied && ++unavailable < UNAVAILABLE_CHECKS) {
        o.log.warn({ err: (err as Error).message, attempt: unavailable }, 'access could not be checked again; the response goes on until the next check');
        return;
      }
      stop();
      const reason = denied ? (err as Error).message : `access could not be checked again ${UNAVAILABLE_CHECKS} times in a row: ${(err as Error).message}`;
      o.log.info({ user: request.caller?.username, reason }, 'access revoked while responding: ending the response');
      request.auditReason = `access revoked: ${reason}`.slice(0, 300);
      o.onRevoked(reason);
    }).finally(() => {
      running = false;
    });
  }, o.intervalMs);
  timer.unref();
  const stop = (): void => {
    stopped = true;
    clearInterval(timer);
  };
  return stop;
}
