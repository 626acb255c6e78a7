// Authorization by SubjectAccessReview: the API server's authorizers (RBAC, webhooks, ...)
// decide, for the reviewed user with its uid, groups and extra. Allow and deny are cached
// separately with short TTLs; an uncertain answer (evaluation error without an allow) or a
// failed review is never cached and becomes 503: nothing is ever allowed because a review
// failed, and nobody is told "forbidden" because the API server hiccupped.
import { createHash } from 'node:crypto';
import type { KubeClient } from '../../kube/client.js';
import { postReview, secondsSince } from '../review-request.js';
import { forbidden, unavailable } from '../verdict.js';
import { ReviewCache, type CacheOutcome } from '../review-cache.js';
import type { UserInfo } from '../user.js';
import { isNonResource, type Attributes } from './attributes.js';

export interface SubjectAccessReviewOptions {
  allowTtlMs: number;
  denyTtlMs: number;
  maxEntries: number;
  timeoutMs: number;
  onLookup?: (outcome: CacheOutcome) => void;
  onReview?: (seconds: number, outcome: 'allowed' | 'denied' | 'error') => void;
}

interface SarResponse {
  status?: { allowed?: boolean; denied?: boolean; reason?: string; evaluationError?: string };
}

type Decision = { allowed: true } | { allowed: false; reason: string };

export class SubjectAccessReviewer {
  private readonly cache: ReviewCache<Decision>;

  constructor(private readonly kube: KubeClient, private readonly opts: SubjectAccessReviewOptions) {
    this.cache = new ReviewCache<Decision>(opts.maxEntries, opts.onLookup);
  }

  /** Resolves when allowed; a forbidden verdict when denied, unavailable when the review could not be made. */
  async authorize(user: UserInfo, attrs: Attributes): Promise<void> {
    const decision = await this.cache.get(reviewKey(user, attrs), async () => {
      const value = await this.review(user, attrs);
      return { value, ttlMs: value.allowed ? this.opts.allowTtlMs : this.opts.denyTtlMs };
    });
    if (!decision.allowed) throw forbidden(decision.reason);
  }

  private async review(user: UserInfo, attrs: Attributes): Promise<Decision> {
    const started = process.hrtime.bigint();
    const seconds = (): number => secondsSince(started);
    let res: SarResponse;
    try {
      res = await postReview<SarResponse>(this.kube, {
        group: 'authorization.k8s.io',
        kind: 'SubjectAccessReview',
        spec: { user: user.username, uid: user.uid, groups: user.groups, extra: user.extra, ...(isNonResource(attrs) ? { nonResourceAttributes: attrs } : { resourceAttributes: attrs }) },
      }, this.opts.timeoutMs);
    } catch (err) {
      this.opts.onReview?.(seconds(), 'error');
      throw err;
    }
    const s = res.status ?? {};
    if (s.allowed === true) {
      this.opts.onReview?.(seconds(), 'allowed');
      return { allowed: true };
    }
    if (s.evaluationError && s.denied !== true) {
      this.opts.onReview?.(seconds(), 'error');
      throw unavailable(`cannot authorize: the API server could not evaluate access (${s.evaluationError})`);
    }
    this.opts.onReview?.(seconds(), 'denied');
    const what = isNonResource(attrs)
      ? `${attrs.verb} the non-resource URL ${attrs.path}`
      : `${attrs.verb} ${attrs.resource}/${attrs.subresource} (${attrs.group}) ${attrs.name ? `"${attrs.name}" ` : ''}in namespace "${attrs.namespace}"`;
    return { allowed: false, reason: `user "${user.username}" cannot ${what}${s.reason ? `: ${s.reason}` : ''}` };
  }
}

/** A digest of everything the decision depends on. */
export function reviewKey(user: UserInfo, attrs: Attributes): string {
  const extra = Object.keys(user.extra ?? {}).sort().map((k) => [k, [...(user.extra?.[k] ?? [])].sort()]);
  const what = isNonResource(attrs) ? ['nonResource', attrs.path, attrs.verb] : [attrs.group, attrs.version, attrs.resource, attrs.subresource, attrs.verb, attrs.namespace, attrs.name];
  const material = JSON.stringify([user.username, user.uid ?? '', [...user.groups].sort(), extra, ...what]);
  return createHash('sha256').update(material).digest('base64url');
}
