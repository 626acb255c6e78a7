// At most a few capture writes at a time reach libuv's thread pool (docs/agent.md, "Nothing
// wedges it"). File I/O runs on that pool's threads; a write to a disk that hangs (a frozen
// or dead filesystem) holds its thread until the disk answers. With every worker free to
// write, a handful of hung writes would take every thread, and the file server, the status
// reads and shutdown would all wait behind them. Through this gate, hung capture writes hold
// at most `slots` threads; the rest of the pool (UV_THREADPOOL_SIZE, see src/threadpool.ts)
// stays free for everything else.
export class DiskGate {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly slots: number) {}

  get inUse(): number {
    return this.busy;
  }

  async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.busy >= this.slots) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    try {
      return await op();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.busy--;
    }
  }
}
