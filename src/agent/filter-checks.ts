// tcpdump -d verdicts, cached by the expression they checked (docs/agent.md, "Filter
// checks"). A check costs ~50 ms of a process; a thousand captures re-checked at every resync
// would hold the agent for most of a minute. A verdict on the expression (compiles, or
// tcpdump's syntax error) is kept for as long as some capture uses that expression; a check
// that could not run (EAGAIN, ENOMEM, timeout, tcpdump missing) is never a verdict: it is
// retried with back-off and the captures waiting on it are told when it settles.
import { checkBpf, FilterCheckFailed, FilterError } from './bpf.js';

export type FilterVerdict =
  | { kind: 'valid' }
  | { kind: 'invalid'; message: string }
  /** No verdict yet: the check is running, or failed to run and will be retried. */
  | { kind: 'pending'; message?: string; missing?: boolean };

interface Entry {
  verdict: FilterVerdict;
  failures: number;
  retry: NodeJS.Timeout | undefined;
}

export interface FilterChecksOptions {
  tcpdump: string;
  baseRetryMs?: number;
  maxRetryMs?: number;
  timeoutMs?: number;
  /** Called when an expression's verdict changed (work on the captures that use it). */
  onSettled: (expression: string) => void;
  onCheck?: () => void;
  /** A check could not run (it is retried): for the log. */
  onCheckFailed?: (expression: string, message: string) => void;
  /** The check itself; checkBpf unless a test replaces it. */
  check?: (tcpdump: string, expression: string, timeoutMs: number) => Promise<void>;
}

export class FilterChecks {
  private readonly entries = new Map<string, Entry>();
  /** How many checks ran (resyncs must not add to it; the agent counts them in a metric too). */
  checksRun = 0;

  constructor(private readonly o: FilterChecksOptions) {}

  /** The verdict for the expression now; starts a check when there is none. Never blocks. */
  verdict(expression: string): FilterVerdict {
    if (expression === '') return { kind: 'valid' };
    let e = this.entries.get(expression);
    if (!e) {
      e = { verdict: { kind: 'pending' }, failures: 0, retry: undefined };
      this.entries.set(expression, e);
      this.run(expression, e);
    }
    return e.verdict;
  }

  /** Forgets verdicts of expressions no capture uses any more. */
  retain(inUse: ReadonlySet<string>): void {
    for (const [expression, e] of this.entries) {
      if (inUse.has(expression)) continue;
      clearTimeout(e.retry);
      this.entries.delete(expression);
    }
  }

  stop(): void {
    for (const e of this.entries.values()) clearTimeout(e.retry);
    this.entries.clear();
  }

  private run(expression: string, e: Entry): void {
    this.checksRun++;
    this.o.onCheck?.();
    const check = this.o.check ?? checkBpf;
    check(this.o.tcpdump, expression, this.o.timeoutMs ?? 10_000).then(
      () => this.settle(expression, e, { kind: 'valid' }),
      (err: unknown) => {
        if (err instanceof FilterError) return this.settle(expression, e, { kind: 'invalid', message: err.message });
        const missing = err instanceof FilterCheckFailed && err.missing;
        const delay = Math.min((this.o.baseRetryMs ?? 1000) * 2 ** e.failures, this.o.maxRetryMs ?? 60_000);
        e.failures++;
        const message = `${(err as Error).message}; checking again in ${Math.round(delay / 1000)} s`;
        this.o.onCheckFailed?.(expression, message);
        this.settle(expression, e, { kind: 'pending', message, missing });
        e.retry = setTimeout(() => {
          e.retry = undefined;
          if (this.entries.get(expression) === e) this.run(expression, e);
        }, delay);
        e.retry.unref();
      },
    );
  }

  private settle(expression: string, e: Entry, verdict: FilterVerdict): void {
    if (verdict.kind !== 'pending') e.failures = 0;
    e.verdict = verdict;
    if (this.entries.get(expression) === e) this.o.onSettled(expression);
  }
}
