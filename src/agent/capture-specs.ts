// The PacketCaptures as the agent needs them: identity and spec, never the status
// (docs/status.md, "Watching at scale"). The status is the Calico view of every node and
// grows with the cluster; each write of it used to reach every agent in full. So the agent
// lists captures whole but watches only their metadata (PartialObjectMetadata: a constant
// size whatever the number of nodes), and fetches a capture again only when its spec
// changed — its generation or uid differs from the one held. Status-only writes, the
// aggregator's, cost each agent a metadata event and nothing else.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { fullJitterDelay } from '../kube/backoff.js';
import { KubeApiError, type KubeClient } from '../kube/client.js';
import { capturesPath, type PacketCapture } from '../kube/packetcapture.js';
import { objectKey, Reflector } from '../kube/reflector.js';

type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'RELIST';

export declare interface CaptureSpecs {
  on(event: 'change', listener: (type: ChangeType, obj?: PacketCapture) => void): this;
  on(event: 'synced', listener: () => void): this;
}

interface Fetch {
  failures: number;
  timer: NodeJS.Timeout | undefined;
  running: boolean;
}

export class CaptureSpecs extends EventEmitter {
  /** Whole captures (as last fetched), by "<namespace>/<name>". */
  readonly items = new Map<string, PacketCapture>();
  /** Captures fetched one by one after a spec change, for tests and benchmarks. */
  fetches = 0;
  private readonly reflector: Reflector<PacketCapture>;
  private readonly pending = new Map<string, Fetch>();
  private stopped = false;

  constructor(private readonly kube: KubeClient, private readonly o: { log: Logger; timeoutMs: number }) {
    super();
    this.reflector = new Reflector<PacketCapture>(kube, { path: capturesPath(), metadataOnly: 'watch', log: o.log, timeoutMs: o.timeoutMs });
    this.reflector.on('synced', () => this.emit('synced'));
    this.reflector.on('change', (type, obj) => this.observe(type, obj));
  }

  get synced(): boolean {
    return this.reflector.synced;
  }

  get lastError(): string | undefined {
    return this.reflector.lastError;
  }

  start(): void {
    this.reflector.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const f of this.pending.values()) clearTimeout(f.timer);
    await this.reflector.stop();
  }

  private observe(type: ChangeType, obj: PacketCapture | undefined): void {
    if (!obj) {
      // A list: whole objects, the truth as of its version.
      this.items.clear();
      for (const [k, v] of this.reflector.items) this.items.set(k, v);
      for (const f of this.pending.values()) clearTimeout(f.timer);
      this.pending.clear();
      this.emit('change', 'RELIST');
      return;
    }
    const key = objectKey(obj);
    if (type === 'DELETED') {
      const last = this.items.get(key) ?? obj;
      this.items.delete(key);
      clearTimeout(this.pending.get(key)?.timer);
      this.pending.delete(key);
      this.emit('change', 'DELETED', last);
      return;
    }
    const held = this.items.get(key);
    if (held && held.metadata.uid === obj.metadata.uid && held.metadata.generation === obj.metadata.generation) {
      // The spec is the one held: take the new metadata. Only a change someone acts on
      // (deletion, labels, annotations) is passed on; a status write is not.
      const before = JSON.stringify([held.metadata.deletionTimestamp, held.metadata.labels, held.metadata.annotations]);
      const metadata = { ...held.metadata, ...obj.metadata };
      const next: PacketCapture = { ...held, metadata };
      this.items.set(key, next);
      if (JSON.stringify([metadata.deletionTimestamp, metadata.labels, metadata.annotations]) !== before) this.emit('change', type, next);
      return;
    }
    this.fetch(key, obj.metadata.namespace, obj.metadata.name, obj.metadata.resourceVersion);
  }

  /**
   * GETs the capture "not older than" the version the event carried: the API server answers
   * from its watch cache, which already holds that version, instead of a quorum read of etcd
   * for every agent at once (a start or stop reaches them all in the same second).
   */
  private fetch(key: string, namespace: string, name: string, resourceVersion?: string): void {
    let f = this.pending.get(key);
    if (!f) this.pending.set(key, (f = { failures: 0, timer: undefined, running: false }));
    if (f.running) {
      f.failures = -1; // fetch again once this one is back: the spec moved on meanwhile
      return;
    }
    clearTimeout(f.timer);
    f.running = true;
    this.fetches++;
    const done = (): void => {
      f.running = false;
    };
    this.kube.request<PacketCapture>({ path: `${capturesPath(namespace)}/${encodeURIComponent(name)}`, query: { resourceVersion }, timeoutMs: this.o.timeoutMs })
      .then((pc) => {
        done();
        if (this.stopped || this.pending.get(key) !== f) return;
        const again = f.failures === -1;
        this.pending.delete(key);
        this.items.set(key, pc);
        this.emit('change', 'MODIFIED', pc);
        if (again) this.fetch(key, namespace, name);
      }, (err: unknown) => {
        done();
        if (this.stopped || this.pending.get(key) !== f) return;
        if (err instanceof KubeApiError && err.status === 404) {
          this.pending.delete(key); // deleted meanwhile: its DELETED event follows
          return;
        }
        const wait = fullJitterDelay(Math.max(0, f.failures++), 500, 5000);
        this.o.log.warn({ capture: key, err: (err as Error).message, retryInMs: wait }, 'cannot read the capture; will retry');
        f.timer = setTimeout(() => this.fetch(key, namespace, name, resourceVersion), wait);
      });
  }
}
