// What authentication and authorization decide when the answer is not yes: a verdict, not
// an HTTP reply. The auth package knows nothing of HTTP; one place turns a verdict into an
// answer (src/http/plugins/errors.ts: 401 with a challenge, 403, 503 with Retry-After), and
// the audit record reads the same status.
export type VerdictKind = 'unauthenticated' | 'forbidden' | 'unavailable';

export class AuthVerdict extends Error {
  constructor(readonly kind: VerdictKind, message: string, readonly retryAfterSeconds?: number) {
    super(message);
    this.name = 'AuthVerdict';
  }
}

/** The credential proves no one: missing, malformed, expired, unknown, for another audience. */
export const unauthenticated = (message: string): AuthVerdict => new AuthVerdict('unauthenticated', message);

/** Someone, not allowed this. */
export const forbidden = (message: string): AuthVerdict => new AuthVerdict('forbidden', message);

/** No answer could be had (the API server, an issuer): never a yes, and worth a retry. */
export const unavailable = (message: string, retryAfterSeconds = 5): AuthVerdict => new AuthVerdict('unavailable', message, retryAfterSeconds);

export function isVerdict(err: unknown, kind?: VerdictKind): err is AuthVerdict {
  return err instanceof AuthVerdict && (kind === undefined || err.kind === kind);
}

/** A verdict that says no (as opposed to "could not ask"). */
export function isRefusal(err: unknown): err is AuthVerdict {
  return err instanceof AuthVerdict && err.kind !== 'unavailable';
}
