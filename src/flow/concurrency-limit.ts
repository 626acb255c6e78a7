// A bound on work in flight, with a bounded queue behind it: what keeps a flood of unknown
// credentials from becoming a flood of TokenReviews, and many downloads at once from taking
// more memory than a gateway replica has. Beyond the queue a caller is turned
// away at once (QueueFullError) rather than left waiting behind the flood.
export class QueueFullError extends Error {
  constructor(what: string) {
    super(`too many ${what} waiting`);
    this.name = 'QueueFullError';
  }
}

export interface ConcurrencyLimitOptions {
  maxInFlight: number;
  maxQueued: number;
  /** What waits, for the error message ("unverified credentials to be reviewed"). */
  what: string;
  /** Called whenever the number in flight or queued changes. */
  onInFlight?: (inFlight: number) => void;
}

export class ConcurrencyLimit {
  private inFlight = 0;
  private peakInFlight = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly opts: ConcurrencyLimitOptions) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await work();
    } finally {
      release();
    }
  }

  /**
   * A place, held until the returned function is called (once; later calls do nothing):
   * for work that outlives a function call, such as a response streaming to its client.
   */
  async acquire(): Promise<() => void> {
    if (this.inFlight >= this.opts.maxInFlight) {
      if (this.queue.length >= this.opts.maxQueued) throw new QueueFullError(this.opts.what);
      const turn = new Promise<void>((resolve) => this.queue.push(resolve));
      this.opts.onInFlight?.(this.inFlight);
      await turn;
    } else {
      this.enter();
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.leave();
    };
  }

  /** Callers waiting for a place. */
  get queued(): number {
    return this.queue.length;
  }

  /** The most ever in flight at once (a high-water mark, for metrics and benchmarks). */
  get peak(): number {
    return this.peakInFlight;
  }

  get current(): number {
    return this.inFlight;
  }

  private enter(): void {
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    this.opts.onInFlight?.(this.inFlight);
  }

  private leave(): void {
    this.inFlight--;
    this.opts.onInFlight?.(this.inFlight);
    // The slot passes straight to the next waiter, so the bound holds at every moment.
    const next = this.queue.shift();
    if (next) {
      this.enter();
      next();
    }
  }
}
