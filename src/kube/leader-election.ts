// Leader election on a coordination.k8s.io/v1 Lease, with client-go's leaderelection
// semantics (docs/status.md, "One writer"). No maintained JavaScript implementation fits:
// @kubernetes/client-node has none, and the npm packages that do are single-release
// wrappers pinned to older clients. The algorithm is client-go's, step for step:
//
//  - a candidate reads the Lease every retry period (jittered) and takes it when it is
//    free (no holder) or when the record it observed has not changed for a whole lease
//    duration, measured on its own clock from when it saw the record change, never from
//    the holder's timestamps (clocks differ between nodes);
//  - every write is a PUT carrying the resourceVersion read, so two candidates can never
//    both succeed: the loser gets 409 and stays a candidate;
//  - the leader renews every retry period and stops leading when it could not renew for
//    the renew deadline, which is shorter than the lease duration, so it has stopped before
//    anyone else may start;
//  - stopping while leading releases the Lease (no holder, one-second duration) so another
//    replica takes over at its next retry instead of a lease duration later.
import { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient } from './client.js';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  log: Logger;
  /** Per-request timeout. */
  timeoutMs?: number;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: LeaseSpec;
}

/** client-go's jitter factor for the candidates' retries. */
const JITTER_FACTOR = 1.2;

/** MicroTime as the API server writes it (RFC 3339 with microseconds). */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export declare interface LeaderElector {
  on(event: 'started-leading' | 'stopped-leading', listener: () => void): this;
  on(event: 'new-leader', listener: (identity: string) => void): this;
}

export class LeaderElector extends EventEmitter {
  private leading = false;
  private observedRecord = '';
  private observedTime = 0;
  private lastRenew = 0;
  private leader = '';
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;

  constructor(private readonly kube: KubeClient, private readonly o: LeaderElectionOptions) {
    super();
    if (!(o.renewDeadlineMs < o.leaseDurationMs)) throw new Error('leader election: the renew deadline must be shorter than the lease duration');
    if (!(o.retryPeriodMs * JITTER_FACTOR < o.renewDeadlineMs)) throw new Error('leader election: the retry period (x1.2) must be shorter than the renew deadline');
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The holder this replica last observed ('' when none). */
  get currentLeader(): string {
    return this.leader;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Stops electing; a leader releases the Lease first. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
    if (this.leading) {
      this.setLeading(false);
      await this.release().catch((err: Error) => this.o.log.warn({ err: err.message }, 'could not release the Lease; another replica takes over when it expires'));
    }
  }

  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.o.namespace)}/leases/${encodeURIComponent(this.o.name)}`;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (err) {
        if (signal.aborted) break;
        this.o.log.warn({ lease: `${this.o.namespace}/${this.o.name}`, err: (err as Error).message }, 'leader election: cannot read or write the Lease');
      }
      const now = Date.now();
      if (ok) {
        this.lastRenew = now;
        if (!this.leading) this.setLeading(true);
      } else if (this.leading && now - this.lastRenew >= this.o.renewDeadlineMs) {
        // Not renewed within the deadline: stop before anyone else may start.
        this.o.log.warn({ lease: `${this.o.namespace}/${this.o.name}` }, 'leader election: lease not renewed within the deadline; stopping leading');
        this.setLeading(false);
      }
      const wait = this.leading ? this.o.retryPeriodMs : this.o.retryPeriodMs * (1 + Math.random() * (JITTER_FACTOR - 1));
      await delay(wait, undefined, { signal }).catch(() => undefined);
    }
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.o.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, leading ? 'leader election: started leading' : 'leader election: stopped leading');
    this.emit(leading ? 'started-leading' : 'stopped-leading');
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = Date.now();
    const timeoutMs = Math.min(this.o.timeoutMs ?? 5000, this.o.renewDeadlineMs);
    let lease: Lease | undefined;
    try {
      lease = await this.kube.request<Lease>({ path: this.path, timeoutMs, signal: this.abort.signal });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err;
    }
    const mine: LeaseSpec = {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    if (!lease) {
      await this.kube.request({
        method: 'POST',
        path: `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.o.namespace)}/leases`,
        body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace }, spec: mine },
        timeoutMs,
        signal: this.abort.signal,
      }).catch((err: unknown) => {
        if (err instanceof KubeApiError && err.status === 409) return undefined; // another candidate created it first
        throw err;
      });
      this.observe(mine, now);
      return this.leader === this.o.identity && (await this.confirmCreated(timeoutMs));
    }
    const spec = lease.spec ?? {};
    this.observe(spec, now);
    const holder = spec.holderIdentity ?? '';
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== '' && holder !== this.o.identity && this.observedTime + durationMs > now) return false;
    const taking = holder !== this.o.identity;
    const next: LeaseSpec = {
      ...mine,
      acquireTime: taking ? mine.acquireTime : spec.acquireTime ?? mine.acquireTime,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (taking && holder !== '' ? 1 : 0),
    };
    try {
      const written = await this.kube.request<Lease>({
        method: 'PUT',
        path: this.path,
        body: { ...lease, spec: next },
        timeoutMs,
        signal: this.abort.signal,
      });
      this.observe(written.spec ?? next, Date.now());
      return true;
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 409) return false; // someone else wrote first
      throw err;
    }
  }

  /** After a create race, whoever's record is in the Lease holds it. */
  private async confirmCreated(timeoutMs: number): Promise<boolean> {
    const lease = await this.kube.request<Lease>({ path: this.path, timeoutMs, signal: this.abort.signal });
    this.observe(lease.spec ?? {}, Date.now());
    return lease.spec?.holderIdentity === this.o.identity;
  }

  private observe(spec: LeaseSpec, now: number): void {
    const record = JSON.stringify([spec.holderIdentity ?? '', spec.leaseDurationSeconds, spec.acquireTime, spec.renewTime, spec.leaseTransitions]);
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedTime = now;
    }
    const holder = spec.holderIdentity ?? '';
    if (holder !== this.leader) {
      this.leader = holder;
      if (holder !== '') this.emit('new-leader', holder);
    }
  }

  /** client-go's ReleaseOnCancel: no holder, a one-second lease. */
  private async release(): Promise<void> {
    const lease = await this.kube.request<Lease>({ path: this.path, timeoutMs: 3000 });
    if (lease.spec?.holderIdentity !== this.o.identity) return;
    const now = Date.now();
    await this.kube.request({
      method: 'PUT',
      path: this.path,
      body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(now), acquireTime: microTime(now) } },
      timeoutMs: 3000,
    });
    this.o.log.info({ lease: `${this.o.namespace}/${this.o.name}` }, 'leader election: Lease released');
  }
}
