// A list+watch cache of one kind of object (the client-go reflector pattern; docs/status.md,
// "Watching at scale").
//
// The first list is served from the API server's watch cache (resourceVersion "0"), then a
// watch runs from the list's resourceVersion with bookmarks, so the version it would resume
// from stays current even when nothing it selects changes. When a watch ends or breaks, the
// reflector watches again from the last version seen; it lists again only when the API
// server says that version is gone (410) or the list itself failed, and then lists "not
// older than" what it had. Retries wait a full-jitter exponential back-off capped at a few
// seconds: after an API server outage every agent notices within seconds, spread over that
// window rather than all at once. Consumers are level-triggered: they read `items` when told
// something changed, so a missed or merged event can never leave them wrong, only late.
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { fullJitterDelay } from './backoff.js';
import { KubeApiError, type KubeClient } from './client.js';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The metadata of a namespaced object as read from the API server: it has a name and a namespace. */
export type NamespacedObjectMeta = ObjectMeta & { name: string; namespace: string };

export interface KubeObject {
  metadata?: ObjectMeta;
}

export interface ReflectorOptions {
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  log: Logger;
  /** Per-request timeout of the list. */
  timeoutMs?: number;
  /**
   * Ask for PartialObjectMetadata only (client-go's metadata informer): `true` for objects
   * whose existence is all that matters (Nodes); `'watch'` to list whole objects but watch
   * only their metadata (the agent's PacketCaptures, whose status it never reads:
   * src/agent/capture-specs.ts).
   */
  metadataOnly?: boolean | 'watch';
  /** Retry back-off: full jitter from baseMs doubling up to maxMs (defaults 500 ms, 5 s). */
  backoff?: { baseMs: number; maxMs: number };
}

interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T & { code?: number; message?: string };
}

export function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

const METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json';
const METADATA_WATCH = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json';

export declare interface Reflector<T extends KubeObject> {
  on(event: 'change', listener: (type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'RELIST', obj?: T) => void): this;
  on(event: 'synced', listener: () => void): this;
}

export class Reflector<T extends KubeObject> extends EventEmitter {
  readonly items = new Map<string, T>();
  /** True while the cache follows the API server; false before the first list and while a list or watch keeps failing. */
  synced = false;
  lastError: string | undefined;
  private resourceVersion = '';
  private abort = new AbortController();
  private running: Promise<void> | undefined;
  private everListed = false;

  constructor(private readonly kube: KubeClient, private readonly opts: ReflectorOptions) {
    super();
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  /** Resolves once the cache is synced, or rejects after timeoutMs. */
  async waitForSync(timeoutMs: number): Promise<void> {
    if (this.synced) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.opts.path}: not synced after ${timeoutMs} ms${this.lastError ? ` (${this.lastError})` : ''}`)), timeoutMs);
      this.once('synced', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async run(): Promise<void> {
    const { baseMs, maxMs } = this.opts.backoff ?? { baseMs: 500, maxMs: 5000 };
    let attempt = 0;
    let needList = true;
    while (!this.abort.signal.aborted) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        await this.watch(() => {
          attempt = 0;
          this.markSynced();
        });
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.lastError = (err as Error).message;
        if (err instanceof KubeApiError && err.status === 410) {
          // The version to resume from left the API server's window: list again, at once
          // (from the watch cache, not older than what we had).
          needList = true;
          this.opts.log.info({ path: this.opts.path }, 'watch expired; listing again');
          continue;
        }
        // A 4xx other than 410 (e.g. RBAC) will not heal by watching again: list, which
        // reports it. Unavailability (connection refused, 5xx, 429, timeouts) resumes the
        // watch from the last version seen: nothing is listed again after an outage unless
        // the API server has forgotten that version.
        if (err instanceof KubeApiError) needList = true;
        this.synced = false;
        const waitMs = fullJitterDelay(attempt++, baseMs, maxMs);
        this.opts.log.warn({ path: this.opts.path, err: this.lastError, retryInMs: waitMs, relist: needList }, needList ? 'list/watch failed; will list again' : 'watch failed; will resume it');
        await delay(waitMs, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }

  private markSynced(): void {
    this.lastError = undefined;
    if (this.synced) return;
    this.synced = true;
    this.emit('synced');
  }

  private async list(): Promise<void> {
    const fresh = new Map<string, T>();
    let cont: string | undefined;
    let rv = '';
    // First list: any version the watch cache has ("0"). Later lists: nothing older than what
    // this cache already had, so a relist never travels back in time.
    const from = this.everListed && this.resourceVersion ? { resourceVersion: this.resourceVersion, resourceVersionMatch: 'NotOlderThan' } : { resourceVersion: '0' };
    try {
      do {
        const page = await this.kube.request<{ items?: T[]; metadata?: { resourceVersion?: string; continue?: string } }>({
          path: this.opts.path,
          query: { labelSelector: this.opts.labelSelector, fieldSelector: this.opts.fieldSelector, limit: 500, continue: cont, ...(cont ? {} : from) },
          accept: this.opts.metadataOnly === true ? METADATA_LIST : undefined,
          timeoutMs: this.opts.timeoutMs ?? 30_000,
          signal: this.abort.signal,
        });
        for (const item of page.items ?? []) fresh.set(objectKey(item), item);
        rv = page.metadata?.resourceVersion ?? rv;
        cont = page.metadata?.continue || undefined;
      } while (cont);
    } catch (err) {
      // "Too old" for NotOlderThan cannot happen; a 410 on a continue token can: start over
      // from the watch cache.
      if (err instanceof KubeApiError && err.status === 410) this.everListed = false;
      throw err;
    }
    this.items.clear();
    for (const [k, v] of fresh) this.items.set(k, v);
    this.resourceVersion = rv;
    this.everListed = true;
    this.emit('change', 'RELIST');
    this.markSynced();
  }

  /** Watches from the last version seen until the server ends it; `opened` once it answered. */
  private async watch(opened: () => void): Promise<void> {
    // The server ends the watch after this long; a client timeout a little later catches
    // a connection that died silently.
    const timeoutSeconds = 240 + Math.floor(Math.random() * 120);
    const body = await this.kube.stream({
      path: this.opts.path,
      query: {
        watch: true,
        allowWatchBookmarks: true,
        resourceVersion: this.resourceVersion,
        timeoutSeconds,
        labelSelector: this.opts.labelSelector,
        fieldSelector: this.opts.fieldSelector,
      },
      accept: this.opts.metadataOnly ? METADATA_WATCH : undefined,
      timeoutMs: (timeoutSeconds + 30) * 1000,
      signal: this.abort.signal,
    });
    opened();
    const lines = createInterface({ input: body, crlfDelay: Infinity });
    try {
      for await (const line of lines) {
        if (line.trim() === '') continue;
        const event = JSON.parse(line) as WatchEvent<T>;
        if (event.type === 'ERROR') {
          const code = event.object.code ?? 500;
          throw new KubeApiError(code, { message: event.object.message, code }, `watch ${this.opts.path}`);
        }
        const rv = event.object.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (event.type === 'BOOKMARK') continue;
        const key = objectKey(event.object);
        if (event.type === 'DELETED') this.items.delete(key);
        else this.items.set(key, event.object);
        this.emit('change', event.type, event.object);
      }
    } finally {
      lines.close();
      body.destroy();
    }
  }
}
