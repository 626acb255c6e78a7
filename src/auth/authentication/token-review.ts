// Authentication by TokenReview: the API server says whether a bearer token is valid (for
// the given audiences) and whose it is. Answers are cached by token digest, never past the
// token's own expiry; API server failures are never cached and become 503 (fail closed).
//
// Two lanes: a token some review has already accepted (KnownTokens) is re-reviewed at
// once; a token never seen valid waits for one of a few places (ConcurrencyLimit), and
// beyond a bounded queue is answered 503 without a review. A flood of unknown tokens so
// costs the API server a bounded number of reviews at a time, and known users never wait
// behind it.
import type { KubeClient } from '../../kube/client.js';
import { unauthenticated, unavailable } from '../verdict.js';
import { QueueFullError, type ConcurrencyLimit } from '../../flow/concurrency-limit.js';
import { postReview, secondsSince } from '../review-request.js';
import { ReviewCache, type CacheOutcome } from '../review-cache.js';
import type { UserInfo } from '../user.js';
import { tokenDigest, type UnverifiedJwt } from './bearer.js';
import type { KnownTokens } from './known-tokens.js';

export interface TokenReviewOptions {
  /** Audiences the token must be bound to; empty: the API server's own audiences. */
  audiences: string[];
  /**
   * Audiences of tokens minted for this server (the gateway's --token-audiences): a JWT
   * whose `aud` names one of them is reviewed for these instead of `audiences`. The
   * unverified claim only picks the question; the API server answers it.
   */
  boundAudiences?: string[];
  successTtlMs: number;
  failureTtlMs: number;
  maxEntries: number;
  timeoutMs: number;
  onLookup?: (outcome: CacheOutcome) => void;
  onReview?: (seconds: number, outcome: 'authenticated' | 'rejected' | 'error') => void;
  /** Tokens accepted before: their own lane. Without it every token takes the same one. */
  known?: KnownTokens;
  /** The lane of tokens never seen valid. Without it they are not bounded. */
  unknownLane?: ConcurrencyLimit;
  /** Called when a token is turned away because that lane's queue is full. */
  onQueueFull?: () => void;
}

interface TokenReviewResponse {
  status?: {
    authenticated?: boolean;
    user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
    audiences?: string[];
    error?: string;
  };
}

type Answer = { ok: true; user: UserInfo } | { ok: false; message: string };

export class TokenReviewAuthenticator {
  private readonly cache: ReviewCache<Answer>;

  constructor(private readonly kube: KubeClient, private readonly opts: TokenReviewOptions, private readonly now: () => number = Date.now) {
    this.cache = new ReviewCache<Answer>(opts.maxEntries, opts.onLookup, now);
  }

  /** The user, or an unauthenticated verdict (rejected) or unavailable (could not ask). `jwt`: the token decoded, if it is a JWT. */
  async authenticate(token: string, jwt: UnverifiedJwt | undefined): Promise<UserInfo> {
    const digest = tokenDigest(token);
    const expiresAt = typeof jwt?.claims.exp === 'number' ? jwt.claims.exp * 1000 : undefined;
    const answer = await this.cache.get(digest, async () => {
      const value = await this.laneFor(digest)(() => this.review(token, this.audiencesFor(jwt)));
      if (value.ok) this.opts.known?.remember(digest, expiresAt);
      else this.opts.known?.forget(digest);
      // A token that is not a JWT carries no expiry we can read: the cache TTL bounds it.
      const exp = expiresAt !== undefined ? expiresAt - this.now() : Infinity;
      return { value, ttlMs: value.ok ? Math.min(this.opts.successTtlMs, exp) : this.opts.failureTtlMs };
    });
    if (!answer.ok) throw unauthenticated(answer.message);
    return answer.user;
  }

  private laneFor(digest: string): <T>(work: () => Promise<T>) => Promise<T> {
    const lane = this.opts.unknownLane;
    if (!lane || this.opts.known?.has(digest)) return (work) => work();
    return async (work) => {
      try {
        return await lane.run(work);
      } catch (err) {
        if (!(err instanceof QueueFullError)) throw err;
        this.opts.onQueueFull?.();
        throw unavailable('too many unverified credentials are waiting for review; retry shortly', 1);
      }
    };
  }

  private audiencesFor(jwt: UnverifiedJwt | undefined): string[] {
    const bound = this.opts.boundAudiences ?? [];
    const aud = jwt?.claims.aud;
    const claimed = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    return bound.length > 0 && claimed.some((a) => bound.includes(a)) ? bound : this.opts.audiences;
  }

  private async review(token: string, audiences: string[]): Promise<Answer> {
    const started = process.hrtime.bigint();
    const seconds = (): number => secondsSince(started);
    let res: TokenReviewResponse;
    try {
      res = await postReview<TokenReviewResponse>(this.kube, { group: 'authentication.k8s.io', kind: 'TokenReview', spec: { token, audiences } }, this.opts.timeoutMs);
    } catch (err) {
      this.opts.onReview?.(seconds(), 'error');
      throw err;
    }
    const s = res.status ?? {};
    if (s.authenticated !== true || !s.user?.username) {
      this.opts.onReview?.(seconds(), 'rejected');
      // The API server's reason (e.g. "token has expired", "service account ... not found")
      // says nothing secret and tells the caller what to fix.
      return { ok: false, message: `invalid bearer token${s.error ? `: ${s.error}` : ''}` };
    }
    if (audiences.length > 0 && !(s.audiences ?? []).some((a) => audiences.includes(a))) {
      this.opts.onReview?.(seconds(), 'rejected');
      return { ok: false, message: 'invalid bearer token: not issued for this audience' };
    }
    this.opts.onReview?.(seconds(), 'authenticated');
    return {
      ok: true,
      user: {
        username: s.user.username,
        ...(s.user.uid ? { uid: s.user.uid } : {}),
        groups: s.user.groups ?? [],
        ...(s.user.extra ? { extra: s.user.extra } : {}),
        via: 'tokenreview',
      },
    };
  }
}
