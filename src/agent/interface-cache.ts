// Pod interfaces, looked up once per pod and kept (docs/agent.md, "Finding a pod's
// interface"). A lookup spawns `ip` a few times, so it never runs inside a capture's
// reconcile: `lookup` answers from the cache at once and starts a lookup in the background
// when there is no answer; a failed lookup is retried for that pod alone, with back-off
// (1 s, 2 s, ... 1 min), and the captures are told when an answer changes. A pod's answer
// is keyed by its uid and IP, so a recreated pod or a new IP is looked up afresh; it is
// forgotten when tcpdump says the interface is gone.
import type { InterfaceResolver, PodRef } from './pod-interface.js';
import { RetryingLookups, type LookOutcome } from './retrying-lookups.js';

export type InterfaceVerdict =
  | { kind: 'found'; iface: string; via: 'route' | 'cni-result' }
  | { kind: 'failed'; error: string }
  | { kind: 'pending' };

export interface InterfaceCacheOptions {
  resolver: InterfaceResolver;
  /** An answer for this pod changed: work on the captures of its namespace. */
  onSettled: (pod: PodRef) => void;
  onLookup?: () => void;
  /** Each lookup's outcome and duration, for the agent's debug log. */
  onResult?: (pod: PodRef, verdict: InterfaceVerdict, ms: number) => void;
  baseRetryMs?: number;
  maxRetryMs?: number;
}

export function podKey(pod: { uid: string; ip: string }): string {
  return `${pod.uid}/${pod.ip}`;
}

export class InterfaceCache {
  private readonly lookups: RetryingLookups<PodRef, InterfaceVerdict>;

  constructor(private readonly o: InterfaceCacheOptions) {
    this.lookups = new RetryingLookups({
      pending: { kind: 'pending' },
      look: (pod) => this.resolve(pod),
      onAnswer: (_key, pod, _answer, changed) => {
        if (changed) o.onSettled(pod);
      },
      baseRetryMs: o.baseRetryMs ?? 1000,
      maxRetryMs: o.maxRetryMs ?? 60_000,
    });
  }

  lookup(pod: PodRef): InterfaceVerdict {
    return this.lookups.get(podKey(pod), pod);
  }

  /** tcpdump found the interface gone: look the pod up again. */
  invalidate(pod: { uid: string; ip: string }, iface: string): void {
    const key = podKey(pod);
    const known = this.lookups.peek(key);
    if (known?.answer.kind !== 'found' || known.answer.iface !== iface) return;
    this.lookups.forget(key);
    this.o.onSettled(known.input);
  }

  /** Forgets pods that are no longer of interest (deleted, unselected). */
  retain(keys: ReadonlySet<string>): void {
    this.lookups.retain(keys);
  }

  stop(): void {
    this.lookups.stop();
  }

  private async resolve(pod: PodRef): Promise<LookOutcome<InterfaceVerdict>> {
    this.o.onLookup?.();
    const started = Date.now();
    let error: string;
    try {
      const r = await this.o.resolver.resolve(pod);
      if ('iface' in r) {
        const found: InterfaceVerdict = { kind: 'found', iface: r.iface, via: r.via };
        this.o.onResult?.(pod, found, Date.now() - started);
        return { answer: found };
      }
      error = r.error;
    } catch (err) {
      error = (err as Error).message;
    }
    this.o.onResult?.(pod, { kind: 'failed', error }, Date.now() - started);
    return { retry: () => ({ kind: 'failed', error }) };
  }
}
