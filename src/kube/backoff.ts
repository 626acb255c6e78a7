// Retry delays shared by the agent's and the gateway's controllers.

/** base x 2^failures, at most max: the back-off of a key's retries in a work queue. */
export function backoffDelay(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(baseMs * 2 ** failures, maxMs);
}

/**
 * "Equal jitter": half the capped exponential, plus a uniform draw over the other half. A
 * key's retries keep growing (never sooner than half the step), yet a thousand agents that
 * failed together (the API server's priority and fairness answering 429 to a burst of report
 * writes) do not come back together.
 */
export function equalJitterDelay(failures: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const d = backoffDelay(failures, baseMs, maxMs);
  return Math.floor(d / 2 + random() * (d / 2));
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
