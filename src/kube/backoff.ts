// Retry delays shared by the agent's and the gateway's controllers.

/** base x 2^failures, at most max: the back-off of a key's retries in a work queue. */
export function backoffDelay(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(baseMs * 2 ** failures, maxMs);
}

/**
 * "Full jitter" exponential back-off: a uniform draw in [0, min(max, base x 2^attempt)).
 * Used where many processes retry against one server (a thousand agents' watches after an
 * API server outage): they spread over the window instead of arriving together, and the
 * cap keeps the wait short enough to notice recovery within seconds.
 */
export function fullJitterDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * backoffDelay(attempt, baseMs, maxMs));
}
