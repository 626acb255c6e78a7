// A list+watch cache of one kind of object (the client-go reflector pattern).
//
// List, then watch from the list's resourceVersion; on a clean end of the watch (server
// timeout) watch again from the last version seen; on "410 Gone" or any error, back off and
// list again. Consumers are level-triggered: they read `items` when told something changed,
// so a missed or merged event can never leave them wrong, only late.
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient } from './client.js';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
}

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
}

interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T & { code?: number; message?: string };
}

export function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

export declare interface Reflector<T extends KubeObject> {
  on(event: 'change', listener: (type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'RELIST', obj?: T) => void): this;
  on(event: 'synced', listener: () => void): this;
}

export class Reflector<T extends KubeObject> extends EventEmitter {
  readonly items = new Map<string, T>();
  /** True once a list succeeded; false again while the cache may be stale. */
  synced = false;
  lastError: string | undefined;
  private resourceVersion = '';
  private abort = new AbortController();
  private running: Promise<void> | undefined;

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

  /** Resolves once the first list succeeded, or rejects after timeoutMs. */
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
    let backoffMs = 500;
    let needList = true;
    while (!this.abort.signal.aborted) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        await this.watch();
        backoffMs = 500;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const gone = err instanceof KubeApiError && err.status === 410;
        needList = true;
        this.lastError = (err as Error).message;
        if (!gone) {
          this.synced = false;
          this.opts.log.warn({ path: this.opts.path, err: this.lastError, retryInMs: backoffMs }, 'list/watch failed; will list again');
          await delay(backoffMs, undefined, { signal: this.abort.signal }).catch(() => undefined);
          backoffMs = Math.min(backoffMs * 2, 30_000);
        }
      }
    }
  }

  private async list(): Promise<void> {
    const fresh = new Map<string, T>();
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.kube.request<{ items?: T[]; metadata?: { resourceVersion?: string; continue?: string } }>({
        path: this.opts.path,
        query: { labelSelector: this.opts.labelSelector, fieldSelector: this.opts.fieldSelector, limit: 500, continue: cont },
        timeoutMs: this.opts.timeoutMs ?? 30_000,
        signal: this.abort.signal,
      });
      for (const item of page.items ?? []) fresh.set(objectKey(item), item);
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
    } while (cont);
    this.items.clear();
    for (const [k, v] of fresh) this.items.set(k, v);
    this.resourceVersion = rv;
    this.lastError = undefined;
    const first = !this.synced;
    this.synced = true;
    this.emit('change', 'RELIST');
    if (first) this.emit('synced');
  }

  private async watch(): Promise<void> {
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
      timeoutMs: (timeoutSeconds + 30) * 1000,
      signal: this.abort.signal,
    });
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
