// What one node gives all captures together (docs/agent.md, "Budgets"): a number of
// capture workers and disk space reserved per worker. Checking each capture alone against the same free space would let N captures
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

async function defaultDiskFree(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}
