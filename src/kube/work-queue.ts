// A keyed work queue in the manner of client-go's rate-limited workqueue (docs/agent.md,
// "The actuator"; docs/status.md, "The aggregator"): a key is queued at most once, never worked on by two workers at once
// (added while in work, it runs again right after), failures come back after a per-key
// exponential back-off, and `addAfter` schedules a key for a moment (a capture's start or
// end time) instead of a periodic tick. Keys are worked on concurrently up to a limit, so
// one capture's slow work never holds up another's.

import { equalJitterDelay } from './backoff.js';

export interface WorkResult {
  /** Work on the key again after this long (e.g. a debounced status write, an end time). */
  requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  concurrency: number;
  /**
   * Work still running after this long gives its slot back (the key stays locked until the
   * work ends): a hung disk or API call never takes the queue's concurrency with it.
   */
  slotTimeoutMs: number;
  /** First retry delay after a failure; doubles per consecutive failure of the key. */
  baseDelayMs: number;
  maxDelayMs: number;
  onError: (key: string, err: unknown, retryInMs: number) => void;
}

/** Timers further out than this are capped: setTimeout overflows past ~24.8 days. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  /** Keys added while being worked on: they run again once that work ends. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Slots in use: work in progress that has not yet overrun slotTimeoutMs. */
  private slots = 0;
  private shuttingDown = false;

  constructor(private readonly work: (key: string) => Promise<WorkResult | void>, private readonly o: WorkQueueOptions) {}

  add(key: string): void {
    if (this.shuttingDown) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.pump();
  }

  /** Adds the key after `ms`; an earlier pending schedule of the same key wins. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, Math.min(ms, MAX_TIMER_MS));
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Adds the key after its back-off, which doubles (with jitter) with each call until `forget`. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = equalJitterDelay(n, this.o.baseDelayMs, this.o.maxDelayMs);
    this.addAfter(key, delay);
    return delay;
  }

  /** The key's work succeeded: its back-off starts again from the base delay. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  get length(): number {
    return this.queue.length;
  }

  /** Stops taking keys and waits for the work in progress (bounded by the caller). */
  async shutDown(): Promise<void> {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.queue.length = 0;
    this.queued.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  private pump(): void {
    while (!this.shuttingDown && this.slots < this.o.concurrency && this.queue.length > 0) {
      const key = this.queue.shift()!;
      this.queued.delete(key);
      this.active.add(key);
      this.slots++;
      let slotHeld = true;
      const release = (): void => {
        if (!slotHeld) return;
        slotHeld = false;
        this.slots--;
      };
      const overrun = setTimeout(() => {
        release();
        this.o.onError(key, new Error(`still working on it after ${this.o.slotTimeoutMs} ms; other keys go on meanwhile`), 0);
        this.pump();
      }, this.o.slotTimeoutMs);
      overrun.unref();
      const p = this.run(key).finally(() => {
        clearTimeout(overrun);
        release();
        this.inFlight.delete(p);
        this.active.delete(key);
        if (this.dirty.delete(key)) this.add(key);
        this.pump();
      });
      this.inFlight.add(p);
    }
  }

  private async run(key: string): Promise<void> {
    try {
      const result = await this.work(key);
      this.forget(key);
      if (result?.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      const delay = this.addRateLimited(key);
      this.o.onError(key, err, delay);
    }
  }
}
