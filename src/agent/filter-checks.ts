// tcpdump -d verdicts, cached by the expression they checked (docs/agent.md, "Filter
// checks"). A check costs ~50 ms of a process; a thousand captures re-checked at every resync
// would hold the agent for most of a minute. A verdict on the expression (compiles, or
// tcpdump's syntax error) is kept for as long as some capture uses that expression; a check
// that could not run (EAGAIN, ENOMEM, timeout, tcpdump missing) is never a verdict: it is
// retried with back-off and the captures waiting on it are told when it settles.
import { checkBpf, FilterCheckFailed } from './bpf-check.js';
import { FilterError } from '../filters/bpf.js';
import { RetryingLookups, type LookOutcome } from './retrying-lookups.js';

export type FilterVerdict =
  | { kind: 'valid' }
  | { kind: 'invalid'; message: string }
  /** No verdict yet: the check is running, or failed to run and will be retried. */
  | { kind: 'pending'; message?: string; missing?: boolean };

export interface FilterChecksOptions {
  tcpdump: string;
  baseRetryMs?: number;
  maxRetryMs?: number;
  timeoutMs?: number;
  /** Called when an expression's check settled (work on the captures that use it). */
  onSettled: (expression: string) => void;
  onCheck?: () => void;
  /** A check could not run (it is retried): for the log. */
  onCheckFailed?: (expression: string, message: string) => void;
  /** The check itself; checkBpf unless a test replaces it. */
  check?: (tcpdump: string, expression: string, timeoutMs: number) => Promise<void>;
}

export class FilterChecks {
  private readonly lookups: RetryingLookups<string, FilterVerdict>;
  /** How many checks ran (resyncs must not add to it; the agent counts them in a metric too). */
  checksRun = 0;

  constructor(private readonly o: FilterChecksOptions) {
    this.lookups = new RetryingLookups({
      pending: { kind: 'pending' },
      look: (expression) => this.check(expression),
      onAnswer: (expression) => o.onSettled(expression),
      baseRetryMs: o.baseRetryMs ?? 1000,
      maxRetryMs: o.maxRetryMs ?? 60_000,
    });
  }

  /** The verdict for the expression now; starts a check when there is none. Never blocks. */
  verdict(expression: string): FilterVerdict {
    if (expression === '') return { kind: 'valid' };
    return this.lookups.get(expression, expression);
  }

  /** Forgets verdicts of expressions no capture uses any more. */
  retain(inUse: ReadonlySet<string>): void {
    this.lookups.retain(inUse);
  }

  stop(): void {
    this.lookups.stop();
  }

  private async check(expression: string): Promise<LookOutcome<FilterVerdict>> {
    this.checksRun++;
    this.o.onCheck?.();
    try {
      await (this.o.check ?? checkBpf)(this.o.tcpdump, expression, this.o.timeoutMs ?? 10_000);
      return { answer: { kind: 'valid' } };
    } catch (err) {
      if (err instanceof FilterError) return { answer: { kind: 'invalid', message: err.message } };
      const missing = err instanceof FilterCheckFailed && err.missing;
      return {
        retry: (delayMs) => {
          const message = `${(err as Error).message}; checking again in ${Math.round(delayMs / 1000)} s`;
          this.o.onCheckFailed?.(expression, message);
          return { kind: 'pending', message, missing };
        },
      };
    }
  }
}
