// What one node gives all captures together (docs/agent.md, "Budgets"): a number of
// capture workers, disk space reserved per worker, and bytes buffered between tcpdump and
// the disk. Checking each capture alone against the same free space would let N captures
// fill the node; these are sums over every worker on the node.
import { statfs } from 'node:fs/promises';
import type { NodeBudgetView } from './capture-plan.js';
import { withDeadline } from './deadline.js';

export interface NodeBudgetOptions {
  maxWorkers: number;
  /** (captureMaxFiles + 1) x (captureMaxSizeBytes + a block for each file's source record): the most one worker's files take. */
  perWorkerBytes: number;
  captureDir: string;
  diskFree?: (dir: string) => Promise<number>;
  /** Bytes downloads hold pinned (file-pins.ts): rotation may leave the pin the only copy. */
  pinnedBytes?: () => number;
}

export class NodeBudget {
  private workers = 0;
  private diskFree = Number.NaN;

  constructor(private readonly o: NodeBudgetOptions) {}

  /** Measures free space again; on failure the last measurement stays (none yet: the disk check is off). */
  async refreshDisk(timeoutMs: number): Promise<void> {
    const measure = this.o.diskFree ?? defaultDiskFree;
    this.diskFree = await withDeadline(measure(this.o.captureDir), timeoutMs, `statfs of ${this.o.captureDir}`);
  }

  get diskFreeBytes(): number {
    return this.diskFree;
  }

  get runningWorkers(): number {
    return this.workers;
  }

  view(): NodeBudgetView {
    return {
      freeWorkerSlots: Math.max(0, this.o.maxWorkers - this.workers),
      maxWorkers: this.o.maxWorkers,
      diskFree: this.diskFree,
      diskReserved: this.workers * this.o.perWorkerBytes + (this.o.pinnedBytes?.() ?? 0),
      perWorkerBytes: this.o.perWorkerBytes,
      captureDir: this.o.captureDir,
    };
  }

  workerStarted(): void {
    this.workers++;
  }

  workerStopped(): void {
    this.workers = Math.max(0, this.workers - 1);
  }
}

/**
 * Bytes read from tcpdumps and not yet on disk, over all workers. Past the limit, workers
 * stop reading their pipes (tcpdump then waits, and the kernel counts what it drops), so the
 * agent's memory stays inside its container's limit whatever the disk does.
 */
export class BufferBudget {
  private used = 0;
  private readonly waiters = new Set<() => void>();

  constructor(readonly maxBytes: number) {}

  get bytes(): number {
    return this.used;
  }

  get exhausted(): boolean {
    return this.used >= this.maxBytes;
  }

  take(n: number): void {
    this.used += n;
  }

  give(n: number): void {
    const wasExhausted = this.exhausted;
    this.used = Math.max(0, this.used - n);
    if (wasExhausted && !this.exhausted) for (const w of [...this.waiters]) w();
  }

  /** Called whenever the budget stops being exhausted. */
  onAvailable(fn: () => void): () => void {
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }
}

/**
 * Kernel memory for the pipes of busy captures (pipe-size.ts), over all workers: each grown
 * pipe is a reservation of its full size, charged to the agent's memory cgroup and counted
 * against the node-wide fs.pipe-user-pages-soft of its user. Past the limit a busy capture
 * keeps the default pipe and costs more CPU, nothing else.
 */
export class PipeBudget {
  private used = 0;

  constructor(readonly maxBytes: number) {}

  get bytes(): number {
    return this.used;
  }

  /** Takes `n` bytes if they fit. */
  reserve(n: number): boolean {
    if (this.used + n > this.maxBytes) return false;
    this.used += n;
    return true;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
  }

  /** The kernel rounds a pipe's size up (to a power of two of pages): what it gave is what counts. */
  settle(reserved: number, actual: number): void {
    this.used = Math.max(0, this.used - reserved + actual);
  }
}

async function defaultDiskFree(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}
