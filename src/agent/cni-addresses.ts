// Pods' addresses as this node's container runtime assigned them, read from its CNI result
// cache (docs/agent.md, "A new pod's first packets"). The runtime writes a pod's result
// when its network is set up, before its containers start; the kubelet reports the address
// to the API server only after they have started (on the test cluster, 50 to 150 ms later,
// and then the agent's lookup and tcpdump's start come on top). A capture that waited for
// the API server missed a new pod's first packets; with the address from here, tcpdump is
// usually listening before the pod's first container runs.
//
// The cache is the runtime's, on the host, where no pod can write: the same evidence the
// agent trusts to find a pod's bridge port (pod-interface.ts). An address from here is used
// only while the Pod object has none; once the kubelet reports one, that one counts.
import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import type { CniResultCache } from './pod-interface.js';

/** Loopback attachments (libcni caches the `lo` setup too) say nothing about a pod's network. */
const LOOPBACK = /^(127\.|::1$)/;

export interface CniAddressesEvents {
  /** The addresses of these pods (by uid) appeared, changed or went. */
  change: [uids: string[]];
}

export class CniAddresses extends EventEmitter<CniAddressesEvents> {
  private byUid = new Map<string, string[]>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryWatch: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly cache: CniResultCache, private readonly o: { debounceMs?: number; retryWatchMs?: number; onError?: (err: Error) => void } = {}) {
    super();
  }

  /** The pod's addresses in the runtime's cache, if it has an attachment there. */
  ipsOf(uid: string): string[] | undefined {
    return this.byUid.get(uid);
  }

  /** Watches the cache directory (inotify) and reads it once now. */
  async start(): Promise<void> {
    this.ensureWatch();
    await this.rescan();
  }

  /**
   * Reads the directory again (the periodic resync calls it too: a watch that could not be
   * set up, because the runtime had not made the directory yet, is set up then).
   */
  async rescan(): Promise<void> {
    if (this.stopped) return;
    this.ensureWatch();
    if (this.scanning) {
      this.again = true;
      return await this.scanning;
    }
    this.scanning = (async () => {
      try {
        do {
          this.again = false;
          await this.scanOnce();
        } while (this.again && !this.stopped);
      } finally {
        this.scanning = undefined;
      }
    })();
    return await this.scanning;
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.timer);
    clearTimeout(this.retryWatch);
  }

  private ensureWatch(): void {
    if (this.watcher || this.stopped) return;
    try {
      this.watcher = watch(this.cache.dir, { persistent: false }, () => this.soon());
      this.watcher.on('error', (err) => {
        this.o.onError?.(err);
        this.watcher?.close();
        this.watcher = undefined;
        this.watchLater();
      });
    } catch {
      // No directory yet: the runtime makes it with the node's first pod network (the
      // DaemonSet's hostPath makes it at once). Until then, look for it every second.
      this.watchLater();
    }
  }

  private watchLater(): void {
    if (this.retryWatch || this.stopped) return;
    this.retryWatch = setTimeout(() => {
      this.retryWatch = undefined;
      this.ensureWatch();
      if (this.watcher) this.soon();
    }, this.o.retryWatchMs ?? 1000);
    this.retryWatch.unref();
  }

  /** A burst of events (a file created, then written) is read once, shortly after. */
  private soon(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.rescan().catch((err: unknown) => this.o.onError?.(err as Error));
    }, this.o.debounceMs ?? 5);
  }

  private async scanOnce(): Promise<void> {
    const next = new Map<string, string[]>();
    for (const a of await this.cache.attachments()) {
      if (!a.podUid) continue;
      const ips = a.ips.filter((ip) => !LOOPBACK.test(ip));
      if (ips.length === 0) continue;
      next.set(a.podUid, [...new Set([...(next.get(a.podUid) ?? []), ...ips])]);
    }
    const changed: string[] = [];
    for (const [uid, ips] of next) if (this.byUid.get(uid)?.join() !== ips.join()) changed.push(uid);
    for (const uid of this.byUid.keys()) if (!next.has(uid)) changed.push(uid);
    this.byUid = next;
    if (changed.length > 0) this.emit('change', changed);
  }
}
