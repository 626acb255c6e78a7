// Answers looked up once per key in the background and kept, shared by the filter checks
// and the pod interface lookups (docs/agent.md, "Filter checks", "Finding a pod's
// interface"). `get` never blocks: it returns what is known (the pending answer at first)
// and starts a lookup when there is none. A lookup that gave no final answer is tried again
// for that key alone after a back-off (base, 2 x base, ... max); one that did resets it.
// Every answer is reported, with whether it differs from the one before.

import { backoffDelay } from '../kube/backoff.js';

export { backoffDelay };

/** What one lookup gave: a final answer, or none yet (the answer to show until the retry in `delayMs`). */
export type LookOutcome<V> = { answer: V } | { retry: (delayMs: number) => V };

export interface RetryingLookupsOptions<I, V> {
  /** The answer while the first lookup runs. */
  pending: V;
  look: (input: I) => Promise<LookOutcome<V>>;
  onAnswer: (key: string, input: I, answer: V, changed: boolean) => void;
  baseRetryMs: number;
  maxRetryMs: number;
}

interface Entry<I, V> {
  input: I;
  answer: V;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

export class RetryingLookups<I, V> {
  private readonly entries = new Map<string, Entry<I, V>>();

  constructor(private readonly o: RetryingLookupsOptions<I, V>) {}

  get(key: string, input: I): V {
    let e = this.entries.get(key);
    if (!e) {
      e = { input, answer: this.o.pending, failures: 0, timer: undefined };
      this.entries.set(key, e);
      this.look(key, e);
    }
    return e.answer;
  }

  /** What is known for the key, without starting a lookup. */
  peek(key: string): { input: I; answer: V } | undefined {
    return this.entries.get(key);
  }

  /** Forgets the key: the next `get` looks it up afresh. */
  forget(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    clearTimeout(e.timer);
    this.entries.delete(key);
  }

  /** Forgets every key not in `keys`. */
  retain(keys: ReadonlySet<string>): void {
    for (const key of [...this.entries.keys()]) if (!keys.has(key)) this.forget(key);
  }

  stop(): void {
    for (const key of [...this.entries.keys()]) this.forget(key);
  }

  private look(key: string, e: Entry<I, V>): void {
    this.o.look(e.input).then((outcome) => {
      if (this.entries.get(key) !== e) return; // forgotten meanwhile
      const before = JSON.stringify(e.answer);
      if ('answer' in outcome) {
        e.failures = 0;
        e.answer = outcome.answer;
      } else {
        const delay = backoffDelay(e.failures, this.o.baseRetryMs, this.o.maxRetryMs);
        e.failures++;
        e.answer = outcome.retry(delay);
        e.timer = setTimeout(() => {
          e.timer = undefined;
          if (this.entries.get(key) === e) this.look(key, e);
        }, delay);
        e.timer.unref();
      }
      this.o.onAnswer(key, e.input, e.answer, JSON.stringify(e.answer) !== before);
    });
  }
}
