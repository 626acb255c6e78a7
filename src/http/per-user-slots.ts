// Places per identity (docs/security.md, "One user and the others"): a replica's requests,
// downloads and live streams are shared, so one user holding them all would lock everyone
// else out. Each identity holds at most `max` at once, queued ones included; beyond, 429
// with Retry-After, before the shared places are even asked for.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from './status.js';
import { onResponseClose } from './response-close.js';

export class PerUserSlots {
  private readonly held = new Map<string, number>();

  constructor(private readonly max: number, private readonly what: string, private readonly flag: string, private readonly retryAfterSeconds = 5) {}

  /**
   * Takes one of the caller's places until the response closes; a 429 when they hold all of
   * theirs. A request without an authenticated caller (never for packet routes) takes none.
   */
  take(request: FastifyRequest, reply: FastifyReply): void {
    const user = request.caller?.username;
    if (user === undefined || this.max <= 0) return;
    const n = this.held.get(user) ?? 0;
    if (n >= this.max) {
      const retry = this.retryAfterSeconds;
      throw new HttpError(429, 'TooManyRequests', `you already have ${n} ${this.what} open on this gateway replica (${this.flag}=${this.max}): close one, or retry in ${retry} s`, { 'retry-after': String(retry) }, { retryAfterSeconds: retry });
    }
    this.held.set(user, n + 1);
    onResponseClose(reply, () => {
      const left = (this.held.get(user) ?? 1) - 1;
      if (left > 0) this.held.set(user, left);
      else this.held.delete(user);
    });
  }

  /** Identities holding places now (a gauge's value; bounded by the shared places). */
  get users(): number {
    return this.held.size;
  }
}
