// A bounded cache of review answers (TokenReview, SubjectAccessReview) with per-entry TTLs.
//
// - Keys are digests built by the caller; a raw token is never a key.
// - Identical concurrent lookups share one in-flight review (coalescing), so a burst of
//   downloads with the same token costs the API server one review, not a burst.
// - Only answers are cached. A failed review (API server down, timeout) is thrown to every
//   waiter and forgotten, so the next request asks again; nothing is ever allowed because a
//   review failed.
// - Least recently used entries are evicted beyond maxEntries.
import type { Counter } from 'prom-client';

export interface Cached<V> {
  value: V;
  /** 0 or less: use the value for this request only. */
  ttlMs: number;
}

export type CacheOutcome = 'hit' | 'miss' | 'coalesced';

export class ReviewCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
  private readonly inflight = new Map<string, Promise<V>>();

  constructor(
    private readonly maxEntries: number,
    private readonly onLookup?: (outcome: CacheOutcome) => void,
    private readonly now: () => number = Date.now,
  ) {}

  async get(key: string, review: () => Promise<Cached<V>>): Promise<V> {
    const entry = this.entries.get(key);
    if (entry) {
      if (entry.expiresAt > this.now()) {
        // Refresh recency: Map iteration order is insertion order.
        this.entries.delete(key);
        this.entries.set(key, entry);
        this.onLookup?.('hit');
        return entry.value;
      }
      this.entries.delete(key);
    }
    const pending = this.inflight.get(key);
    if (pending) {
      this.onLookup?.('coalesced');
      return await pending;
    }
    this.onLookup?.('miss');
    const p = review().then((answer) => {
      if (answer.ttlMs > 0) this.store(key, answer.value, answer.ttlMs);
      return answer.value;
    });
    this.inflight.set(key, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(key);
    }
  }

  private store(key: string, value: V, ttlMs: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    this.entries.clear();
  }
}

/** Adapts a labelled prom-client counter to ReviewCache's lookup hook. */
export function countLookups(counter: Counter<'review' | 'result'>, review: string): (outcome: CacheOutcome) => void {
  return (outcome) => counter.inc({ review, result: outcome });
}
