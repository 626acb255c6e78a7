// The agent's controller (docs/agent.md): level-triggered, one work item per capture.
//
// Watch events, worker events and scheduled wake-ups (a capture's start or end time, a
// debounced report write) put a capture's key on the work queue; working on a key observes
// the capture, this node's pods and the caches of filter checks and interface lookups,
// computes what should run with the pure planCapture(), converges that capture's workers to
// it and writes this node's report of the capture (a PacketCaptureNodeReport, docs/status.md)
// when it differs from the one the API server holds.
// Every pass starts from what is observed, so a missed event, a restart or a relist can only
// delay it, never leave it wrong; nothing acts before both caches are synced (so it never
// deletes files because its view is incomplete). Captures are worked on concurrently, and a
// capture whose work hangs gives its slot back: one capture never waits on another's.
// What runs for each capture, and the node's budgets, are capture-runtimes.ts's.
import type { KubeClient } from '../kube/client.js';
import { entryOf, reportName, type NodeReport } from '../kube/node-report.js';
import type { PacketCapture } from '../kube/packetcapture.js';
import type { Reflector } from '../kube/reflector.js';
import type { CaptureSpecs } from './capture-specs.js';
import { filtersToBpf } from '../filters/bpf.js';
import type { CaptureStore } from './capture-store.js';
import { nodeEntry, planCapture, type PodView } from './capture-plan.js';
import { CaptureTally } from './capture-tally.js';
import { withDeadline } from './deadline.js';
import type { CniAddresses } from './cni-addresses.js';
import { FilterChecks } from './filter-checks.js';
import { InterfaceCache, podKey } from './interface-cache.js';
import type { InterfaceResolver } from './pod-interface.js';
import { WorkQueue, type WorkResult } from '../kube/work-queue.js';
import { CaptureDirectories } from './capture-directories.js';
import { NodeReportWriter } from './node-report-writer.js';
import { CaptureRuntimes, DISK_DEADLINE_MS, sameCapture, type Runtime, type RuntimeOptions } from './capture-runtimes.js';
import { podView, type Pod } from './pod-view.js';

export { RUN_DIR } from './capture-runtimes.js';
export type { Pod } from './pod-view.js';

export interface ControllerMetrics {
  packets(namespace: string, name: string, n: number, bytes: number): void;
  rotation(namespace: string, name: string): void;
  /** One tcpdump -d run (cached by expression: resyncs add none). */
  filterCheck(): void;
  /** One interface lookup started (failures back off per pod). */
  interfaceLookup(): void;
  observe(summary: { captures: number; workers: number; kernelDrops: number; diskFreeBytes: number }): void;
}

export interface ControllerOptions extends RuntimeOptions {
  kube: KubeClient;
  store: CaptureStore;
  captures: CaptureSpecs;
  pods: Reflector<Pod>;
  /** This node's reports (fieldSelector spec.nodeName), to know what the API server holds. */
  reports: Reflector<NodeReport>;
  resolver: InterfaceResolver;
  /** Pods' addresses from the runtime's CNI result cache, ahead of the API server (cni-addresses.ts). */
  addresses?: CniAddresses;
  /** At most one report write per capture per this interval. */
  statusIntervalMs: number;
  /** Counters (packets, bytes, drops) move in reports at most once per this interval. */
  counterIntervalMs: number;
  resyncMs: number;
  metrics?: ControllerMetrics;
  /** Concurrent capture work items. */
  concurrency?: number;
  /** Pins go with the files they pin: a deleted capture's downloads are cut, its space freed. */
  dropPins?: (namespace: string, name: string) => Promise<unknown>;
  /** A finished capture's files are removed this long after its end time (0 or undefined: kept). */
  finishedRetentionMs?: number;
}

/** The work item that removes files of captures that no longer exist. */
const GC_KEY = '\u0000gc';

export class CaptureController {
  /** What runs here for each capture, and the node's budgets. */
  private readonly runtimes: CaptureRuntimes;
  /** The BPF expression each capture uses, to wake the right captures when a check settles. */
  private readonly expressions = new Map<string, string>();
  private readonly queue: WorkQueue;
  private readonly filters: FilterChecks;
  private readonly interfaces: InterfaceCache;
  private readonly reports: NodeReportWriter;
  private readonly directories: CaptureDirectories;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(private readonly o: ControllerOptions) {
    this.reports = new NodeReportWriter({ kube: o.kube, nodeName: o.nodeName, statusIntervalMs: o.statusIntervalMs, counterIntervalMs: o.counterIntervalMs });
    this.directories = new CaptureDirectories({ captureDir: o.captureDir, store: o.store, log: o.log, dropPins: o.dropPins, deadlineMs: DISK_DEADLINE_MS * 4 });
    this.queue = new WorkQueue((key) => this.work(key), {
      concurrency: o.concurrency ?? 8,
      slotTimeoutMs: 30_000,
      baseDelayMs: 500,
      maxDelayMs: 60_000,
      onError: (key, err, retryInMs) => o.log.error({ capture: key === GC_KEY ? undefined : key, err: (err as Error).message, retryInMs }, key === GC_KEY ? 'removing files of deleted captures failed; will retry' : 'reconciling the capture failed; will retry'),
    });
    this.filters = new FilterChecks({
      tcpdump: o.tcpdump,
      onCheck: () => o.metrics?.filterCheck(),
      onCheckFailed: (filter, message) => o.log.warn({ filter, error: message }, 'filter check could not run; retrying (not a verdict on the filter)'),
      onSettled: (expression) => {
        for (const [key, e] of this.expressions) if (e === expression) this.queue.add(key);
      },
    });
    this.interfaces = new InterfaceCache({
      resolver: o.resolver,
      onLookup: () => o.metrics?.interfaceLookup(),
      onResult: (pod, verdict, ms) => o.log.debug({ pod: `${pod.namespace}/${pod.name}`, ip: pod.ip, ms, ...(verdict.kind === 'found' ? { iface: verdict.iface, via: verdict.via } : { error: verdict.kind === 'failed' ? verdict.error : undefined }) }, verdict.kind === 'found' ? 'pod interface found' : 'pod interface lookup failed; retrying with back-off'),
      onSettled: (pod) => this.enqueueNamespace(pod.namespace),
    });
    this.runtimes = new CaptureRuntimes(o, {
      changed: (key) => this.queue.add(key),
      interfaceGone: (pod, iface) => this.interfaces.invalidate(pod, iface),
      packets: (namespace, name, n, bytes) => o.metrics?.packets(namespace, name, n, bytes),
      rotation: (namespace, name) => o.metrics?.rotation(namespace, name),
    });
  }

  start(): void {
    this.o.captures.on('change', (_type, obj) => (obj ? this.queue.add(`${obj.metadata.namespace}/${obj.metadata.name}`) : this.enqueueAll()));
    this.o.pods.on('change', (type, obj) => {
      this.o.log.debug({ event: type, pod: obj?.metadata ? `${obj.metadata.namespace}/${obj.metadata.name}` : undefined, ip: obj?.status?.podIP }, 'pod changed');
      if (obj?.metadata?.namespace) this.enqueueNamespace(obj.metadata.namespace);
      else this.enqueueAll();
    });
    this.o.captures.on('synced', () => this.enqueueAll());
    this.o.pods.on('synced', () => this.enqueueAll());
    // A report changed or deleted behind this agent's back is put right.
    this.o.reports.on('change', (_type, r) => (r?.spec ? this.queue.add(`${r.metadata.namespace}/${r.spec.captureName}`) : this.enqueueAll()));
    this.o.reports.on('synced', () => this.enqueueAll());
    // A periodic full pass, as controllers resync: it re-reads everything, but re-runs no
    // filter check and no interface lookup that already has an answer.
    this.timers.push(setInterval(() => {
      this.o.log.debug({ captures: this.o.captures.items.size }, 'resync: every capture queued');
      void this.o.addresses?.rescan().catch((err: Error) => this.o.log.warn({ err: err.message }, 'cannot read the CNI result cache; pods are captured once the API server has their addresses'));
      this.enqueueAll();
    }, this.o.resyncMs));
    // A pod's network set up by the runtime: its captures start before the kubelet reports it.
    this.o.addresses?.on('change', (uids) => {
      const wanted = new Set(uids);
      const namespaces = new Set<string>();
      for (const p of this.o.pods.items.values()) if (p.metadata?.uid && wanted.has(p.metadata.uid) && p.metadata.namespace) namespaces.add(p.metadata.namespace);
      for (const ns of namespaces) this.enqueueNamespace(ns);
    });
    this.timers.push(setInterval(() => this.observe(), 5000));
    this.enqueueAll();
  }

  /** Stops every capture on this node, within deadlines; files stay (the agent may be restarting). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await withDeadline(this.queue.shutDown(), 15_000, 'finishing work in progress').catch((err: Error) => this.o.log.warn({ err: err.message }, 'stopping anyway'));
    await this.runtimes.stopAll();
    // Exact counts on disk, so that a restart continues them (limits) where they stood.
    await Promise.all([...this.runtimes.byKey.entries()].map(([key, r]) => withDeadline(r.tally.settle(this.o.rotationGate), DISK_DEADLINE_MS, `counting the files of ${key}`).catch((err: Error) => this.o.log.warn({ capture: key, err: err.message }, 'the capture\'s files are counted at the next start'))));
    this.filters.stop();
    this.interfaces.stop();
  }

  /** Why `bytes` more may not be pinned for a download of this capture, if so (capture-runtimes.ts). */
  async pinRefusal(namespace: string, name: string, bytes: number): Promise<string | undefined> {
    return await this.runtimes.pinRefusal(namespace, name, bytes);
  }

  isCapturing(namespace: string, name: string): boolean {
    return this.runtimes.isCapturing(namespace, name);
  }

  kernelDrops(namespace: string, name: string): Map<string, number> {
    return this.runtimes.kernelDrops(namespace, name);
  }

  /** Whether a worker is writing the file with inode `ino` in `dir`. */
  isWriting(dir: string, ino: bigint): boolean {
    return this.runtimes.isWriting(dir, ino);
  }

  /** The complete-record prefix of the file with inode `ino` in `dir`, if a worker is writing it. */
  async committedLength(dir: string, ino: bigint): Promise<number | undefined> {
    return await this.runtimes.committedLength(dir, ino);
  }

  /** The generation of the file with inode `ino` in `dir`, if a worker is writing it. */
  generationOf(dir: string, ino: bigint): number | undefined {
    return this.runtimes.generationOf(dir, ino);
  }

  /** Every packet of the capture that reached the kernel before this time (ms) is in its files, if every worker has proven it. */
  flushedThrough(namespace: string, name: string): number | undefined {
    return this.runtimes.flushedThrough(namespace, name);
  }

  /** Pinned bytes went down (a download ended): captures the disk budget refused may fit now. */
  pinsReleased(): void {
    this.runtimes.retryRefused();
  }

  /** Every file of the capture is about to be deleted through the API: what it wrote stays counted (its limits). */
  async deletingFiles(namespace: string, name: string): Promise<void> {
    await this.runtimes.byKey.get(`${namespace}/${name}`)?.tally.forgetAll();
  }

  filesDeleted(namespace: string, name: string): void {
    this.queue.add(`${namespace}/${name}`);
  }

  private enqueueAll(): void {
    if (this.stopped) return;
    for (const pc of this.o.captures.items.values()) this.queue.add(`${pc.metadata.namespace}/${pc.metadata.name}`);
    for (const key of this.runtimes.byKey.keys()) this.queue.add(key);
    this.queue.add(GC_KEY);
  }

  private podView(p: Pod): PodView {
    const addresses = this.o.addresses;
    return podView(p, addresses && ((uid) => addresses.ipsOf(uid)));
  }

  private enqueueNamespace(namespace: string): void {
    for (const pc of this.o.captures.items.values()) if (pc.metadata.namespace === namespace) this.queue.add(`${namespace}/${pc.metadata.name}`);
  }

  private synced(): boolean {
    return this.o.captures.synced && this.o.pods.synced && this.o.reports.synced;
  }

  private async work(key: string): Promise<WorkResult | void> {
    if (this.stopped || !this.synced()) return; // the synced event enqueues everything
    if (key === GC_KEY) return await this.collectGarbage();
    const pc = this.o.captures.items.get(key);
    let rt = this.runtimes.byKey.get(key);
    if (rt && (!pc || rt.uid !== (pc.metadata.uid ?? ''))) {
      // Deleted, or deleted and created again under the same name: the old one's files go.
      await this.forget(key, rt);
      rt = undefined;
    }
    if (!pc) return;
    return await this.reconcile(key, pc, rt);
  }

  private async reconcile(key: string, pc: PacketCapture, existing: Runtime | undefined): Promise<WorkResult> {
    const began = Date.now();
    const { namespace, name } = pc.metadata;
    const uid = pc.metadata.uid ?? '';
    const dir = this.o.store.captureDir(namespace, name);
    // The filter check starts first: it runs in the background while the rest is worked out.
    try {
      this.filters.verdict(filtersToBpf(pc.spec?.filters));
    } catch {
      // an invalid filter: planCapture says so
    }
    let rt = existing;
    if (!rt) {
      await withDeadline(this.directories.claim(key, dir, uid), DISK_DEADLINE_MS, `claiming ${dir}`);
      const tally = await withDeadline(CaptureTally.load(dir, uid), DISK_DEADLINE_MS, `reading ${dir}`);
      rt = { uid, workers: new Map(), sawTraffic: false, lastWrite: 0, counters: undefined, refused: false, tally };
      rt.sawTraffic = (await withDeadline(this.o.store.fileNames(namespace, name), DISK_DEADLINE_MS, `listing ${dir}`)).length > 0;
      this.runtimes.byKey.set(key, rt);
    }
    await this.runtimes.refreshDisk();

    const now = Date.now();
    const inputs = (): Parameters<typeof planCapture>[0] => ({
      capture: { namespace, name, uid, spec: pc.spec },
      nodeName: this.o.nodeName,
      pods: [...this.o.pods.items.values()].map((p) => this.podView(p)),
      filter: (e) => this.filters.verdict(e),
      iface: (pod) => this.interfaces.lookup(pod),
      now,
      running: new Set(rt.workers.keys()),
      budget: this.runtimes.budget.view(),
      written: rt.tally,
    });
    let plan = planCapture(inputs());
    if (plan.bpf !== undefined) this.expressions.set(key, plan.bpf);
    if (plan.limits) rt.tally.setLimits({ maxPackets: plan.limits.maxPackets, maxBytes: plan.limits.maxBytes });
    rt.refused = plan.refused !== undefined;
    // The budget is taken before anything is awaited: captures worked on concurrently
    // never admit workers against the same free slots. A worker whose filter or snap length
    // changed is started again (a pcap file has one snap length).
    const admitted = plan.workers.filter((w) => !rt.workers.has(w.key) || !sameCapture(rt.workers.get(w.key)!, w));
    this.o.log.debug({ capture: key, phase: plan.phase, pods: plan.matchedPods.length, workers: plan.workers.length, starting: admitted.length, settling: plan.settling, ms: Date.now() - began }, 'reconcile');
    for (let n = 0; n < admitted.length; n++) this.runtimes.budget.workerStarted();
    await this.runtimes.converge(key, rt, plan, dir, admitted, () => withDeadline(this.directories.claim(key, dir, uid), DISK_DEADLINE_MS, `claiming ${dir}`));
    // With no worker left, the files are counted and cut to the limits (capture-tally.ts).
    if (rt.workers.size === 0 && (await withDeadline(rt.tally.settle(this.o.rotationGate), DISK_DEADLINE_MS, `counting the files of ${key}`))) {
      // The count changed (what the tcpdumps wrote past a limit is cut): the report says the exact one.
      plan = planCapture(inputs());
    }

    const fileNames = await withDeadline(this.o.store.fileNames(namespace, name), DISK_DEADLINE_MS, `listing ${dir}`);
    const report = this.o.reports.items.get(`${namespace}/${reportName(name, this.o.nodeName)}`);
    const observed = report && report.spec?.captureUID === uid ? entryOf(report) : undefined;
    const entry = nodeEntry({
      nodeName: this.o.nodeName,
      directory: dir,
      plan,
      workers: [...rt.workers.values()].map((w) => ({ pod: w.spec.pod, iface: w.spec.iface, packets: w.stats.packets, bytes: w.stats.bytes, kernelDrops: w.stats.kernelDrops, error: w.stats.error })),
      written: rt.tally,
      sawTraffic: rt.sawTraffic || [...rt.workers.values()].some((w) => w.stats.firstPacketAt !== undefined),
      fileNames,
      observed,
    });
    if ([...rt.workers.values()].some((w) => w.stats.firstPacketAt !== undefined)) rt.sawTraffic = true;
    // Mid-lookup, the entry would soon be wrong; the lookup's answer brings the key back.
    const statusWait = plan.settling ? undefined : await this.reports.write(pc, rt, entry, report, observed);

    // Come back when the clock changes the plan, when a debounced write is due, and while
    // workers run, for their counters.
    const waits: number[] = [];
    if (plan.wakeAt !== undefined) waits.push(plan.wakeAt - now + 5);
    if (statusWait !== undefined) waits.push(statusWait);
    if (rt.workers.size > 0) waits.push(this.o.counterIntervalMs);
    return waits.length > 0 ? { requeueAfterMs: Math.max(0, Math.min(...waits)) } : {};
  }

  /** A capture that no longer exists: stop it and remove its files (Calico's behaviour). */
  private async forget(key: string, rt: Runtime): Promise<void> {
    this.runtimes.byKey.delete(key);
    this.expressions.delete(key);
    await Promise.all([...rt.workers.values()].map((w) => this.runtimes.stopWorker(key, w)));
    const [namespace, name] = key.split('/') as [string, string];
    await this.o.dropPins?.(namespace, name);
    const removed = await withDeadline(this.o.store.removeAll(namespace, name), DISK_DEADLINE_MS * 4, `removing the files of ${key}`);
    this.o.log.info({ capture: key, removed: removed.length }, 'capture deleted: stopped and files removed');
  }

  /**
   * Files of captures that no longer exist (deleted while this agent was not running), of
   * finished captures past their retention, and stale cache entries (docs/agent.md,
   * "Garbage collection"; the file system's side is capture-directories.ts).
   */
  private async collectGarbage(): Promise<void> {
    const captures = new Map([...this.o.captures.items.values()].map((pc) => [`${pc.metadata.namespace}/${pc.metadata.name}`, pc]));
    this.filters.retain(new Set(this.expressions.values()));
    this.interfaces.retain(new Set([...this.o.pods.items.values()].map((p) => this.podView(p)).filter((p) => p.ip).map((p) => podKey({ uid: p.uid, ip: p.ip! }))));
    const retention = this.o.finishedRetentionMs ?? 0;
    const removed = await this.directories.sweep((key) => {
      const pc = captures.get(key);
      if (!pc && !this.runtimes.byKey.has(key)) return 'files of a capture that no longer exists removed';
      const end = pc?.spec?.endTime ? Date.parse(pc.spec.endTime) : NaN;
      const runtime = this.runtimes.byKey.get(key);
      if (!(retention > 0 && end + retention < Date.now()) || (runtime && runtime.workers.size > 0)) return undefined;
      return `files of a capture finished over ${Math.round(retention / 1000)} s ago removed (--finished-retention-seconds)`;
    });
    for (const key of removed) if (captures.has(key)) this.queue.add(key); // its report says so
  }

  private observe(): void {
    this.o.metrics?.observe(this.runtimes.summary());
  }
}
