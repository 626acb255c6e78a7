// Pod interfaces, looked up once per pod and kept (docs/agent.md, "Finding a pod's
// interface"). A lookup spawns `ip` a few times, so it never runs inside a capture's
// reconcile: `lookup` answers from the cache at once and starts a lookup in the background
// when there is no answer; a failed lookup is retried for that pod alone, with back-off
// (1 s, 2 s, ... 1 min), and the captures are told when an answer changes. A pod's answer
// is keyed by its uid and IP, so a recreated pod or a new IP is looked up afresh; it is
// forgotten when tcpdump says the interface is gone.
import type { InterfaceResolver, PodRef, Resolution } from './pod-interface.js';

export type InterfaceVerdict =
  | { kind: 'found'; iface: string; via: 'route' | 'cni-result' }
  | { kind: 'failed'; error: string }
  | { kind: 'pending' };

interface Entry {
  verdict: InterfaceVerdict;
  failures: number;
  timer: NodeJS.Timeout | undefined;
  pod: PodRef;
}

export interface InterfaceCacheOptions {
  resolver: InterfaceResolver;
  /** An answer for this pod changed: work on the captures of its namespace. */
  onSettled: (pod: PodRef) => void;
  onLookup?: () => void;
  baseRetryMs?: number;
  maxRetryMs?: number;
}

export function podKey(pod: { uid: string; ip: string }): string {
  return `${pod.uid}/${pod.ip}`;
}

export class InterfaceCache {
  private readonly entries = new Map<string, Entry>();
  constructor(private readonly o: InterfaceCacheOptions) {}

  lookup(pod: PodRef): InterfaceVerdict {
    const key = podKey(pod);
    let e = this.entries.get(key);
    if (!e) {
      e = { verdict: { kind: 'pending' }, failures: 0, timer: undefined, pod };
      this.entries.set(key, e);
      this.resolve(key, e);
    }
    return e.verdict;
  }

  /** tcpdump found the interface gone: look the pod up again. */
  invalidate(pod: { uid: string; ip: string }, iface: string): void {
    const key = podKey(pod);
    const e = this.entries.get(key);
    if (!e || e.verdict.kind !== 'found' || e.verdict.iface !== iface) return;
    this.entries.delete(key);
    this.o.onSettled(e.pod);
  }

  /** Forgets pods that are no longer of interest (deleted, unselected). */
  retain(keys: ReadonlySet<string>): void {
    for (const [key, e] of this.entries) {
      if (keys.has(key)) continue;
      clearTimeout(e.timer);
      this.entries.delete(key);
    }
  }

  stop(): void {
    for (const e of this.entries.values()) clearTimeout(e.timer);
    this.entries.clear();
  }

  private resolve(key: string, e: Entry): void {
    this.o.onLookup?.();
    this.o.resolver.resolve(e.pod).then(
      (r: Resolution) => this.settle(key, e, 'iface' in r ? { kind: 'found', iface: r.iface, via: r.via } : { kind: 'failed', error: r.error }),
      (err: unknown) => this.settle(key, e, { kind: 'failed', error: (err as Error).message }),
    );
  }

  private settle(key: string, e: Entry, verdict: InterfaceVerdict): void {
    if (this.entries.get(key) !== e) return; // forgotten meanwhile
    const before = JSON.stringify(e.verdict);
    e.verdict = verdict;
    if (verdict.kind === 'failed') {
      const delay = Math.min((this.o.baseRetryMs ?? 1000) * 2 ** e.failures, this.o.maxRetryMs ?? 60_000);
      e.failures++;
      e.timer = setTimeout(() => {
        e.timer = undefined;
        if (this.entries.get(key) === e) this.resolve(key, e);
      }, delay);
      e.timer.unref();
    } else {
      e.failures = 0;
    }
    if (JSON.stringify(verdict) !== before) this.o.onSettled(e.pod);
  }
}
