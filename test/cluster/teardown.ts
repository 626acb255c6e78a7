// What tap's `t.teardown` is, for programs that are not tests (cluster:up, e2e:cluster):
// undo steps run last-registered first, each awaited, every one even if another fails.
import type { Teardown } from '../harness/cluster.js';

export class TeardownList implements Teardown {
  private readonly steps: (() => unknown)[] = [];

  teardown(fn: () => unknown): void {
    this.steps.push(fn);
  }

  async run(): Promise<Error[]> {
    const errors: Error[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step();
      } catch (err) {
        errors.push(err instanceof Error ? err : new Error(String(err)));
      }
    }
    return errors;
  }
}
